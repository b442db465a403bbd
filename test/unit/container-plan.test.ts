import {
  hostPathOf,
  planContainer,
  PlanError,
  type Bind,
  type StagedInput,
} from '../../src/apptainer/container-plan.js';
import { posix } from 'node:path';
import type { TaskRequest } from '../../src/tes/types.js';

const W = '/w/t1';

describe('planContainer', () => {
  it('binds inputs read-only, writable places from the task directory, outer binds first', () => {
    const task: TaskRequest = {
      inputs: [{ path: '/data/in.txt', url: 'file:///s/in.txt', type: 'FILE' }],
      outputs: [{ path: '/data/out.txt', url: 'file:///s/out.txt', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'] }],
    };
    const plan = planContainer(task, W, [
      { index: 0, hostPath: '/s/in.txt', containerPath: '/data/in.txt', kind: 'file' },
    ]);
    expect(plan.binds).toEqual([
      { src: '/w/t1/tmp', dst: '/tmp', readOnly: false, kind: 'dir' },
      { src: '/w/t1/mnt/data', dst: '/data', readOnly: false, kind: 'dir' },
      { src: '/w/t1/var-tmp', dst: '/var/tmp', readOnly: false, kind: 'dir' },
      { src: '/s/in.txt', dst: '/data/in.txt', readOnly: true, kind: 'file' },
    ]);
    // The input lands inside the writable /data bind: its mount point exists beforehand.
    expect(plan.layout.filter((e) => e.kind === 'file')).toEqual([
      { path: '/w/t1/mnt/data/in.txt', kind: 'file', base: W },
    ]);
    // The container's /tmp and /var/tmp are the job script's to make, where the job runs.
    expect(plan.layout.map((e) => e.path)).toEqual(['/w/t1/mnt/data', '/w/t1/mnt/data/in.txt']);
  });

  it('folds nested writable places into the outermost', () => {
    const task: TaskRequest = {
      volumes: ['/vol', '/vol/sub'],
      outputs: [{ path: '/vol/sub/x', url: 'file:///s/x', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'], workdir: '/vol/sub/w' }],
    };
    const dsts = planContainer(task, W, []).binds.map((b) => b.dst);
    expect(dsts).toEqual(['/tmp', '/vol', '/var/tmp']);
  });

  it('makes folded places inside their outer place: a workdir beside stdout exists for --pwd', () => {
    // Sprocket's shape: workdir /mnt/task/work, stdout and stderr at /mnt/task/stdout and stderr.
    const task: TaskRequest = {
      outputs: [{ path: '/mnt/task/work', url: 'file:///s/w', type: 'DIRECTORY' }],
      executors: [
        {
          image: 'alpine',
          command: ['true'],
          workdir: '/mnt/task/work',
          stdout: '/mnt/task/stdout',
          stderr: '/mnt/task/stderr',
        },
      ],
    };
    const plan = planContainer(task, W, []);
    expect(plan.binds.map((b) => b.dst)).toEqual(['/tmp', '/var/tmp', '/mnt/task']);
    expect(plan.layout).toContainEqual({ path: `${W}/mnt/mnt/task/work`, kind: 'dir', base: W });
  });

  it('maps stdin, stdout and stderr to host files', () => {
    const task: TaskRequest = {
      inputs: [{ path: '/in/data', url: 'file:///s/data', type: 'FILE' }],
      outputs: [{ path: '/out/stdout', url: 'file:///s/stdout', type: 'FILE' }],
      executors: [
        { image: 'alpine', command: ['cat'], stdin: '/in/data', stdout: '/out/stdout', stderr: '/tmp/err' },
      ],
    };
    const plan = planContainer(task, W, [
      { index: 0, hostPath: '/s/data', containerPath: '/in/data', kind: 'file' },
    ]);
    expect(plan.executors[0]).toMatchObject({
      stdin: { host: '/s/data' },
      stdout: { host: '/w/t1/mnt/out/stdout' },
      stderr: { host: '/w/t1/tmp/err' },
    });
  });

  it('refuses a stdin that is not inside anything bound', () => {
    const task: TaskRequest = { executors: [{ image: 'alpine', command: ['cat'], stdin: '/etc/hostname' }] };
    expect(() => planContainer(task, W, [])).toThrow(PlanError);
    expect(() => planContainer(task, W, [])).toThrow(
      'executors[0].stdin: /etc/hostname is not inside an input, output, volume or workdir',
    );
  });

  it('binds the literal directory of a wildcard output', () => {
    const task: TaskRequest = {
      outputs: [{ path: '/out/*.txt', path_prefix: '/out/', url: 'file:///s/', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'] }],
    };
    expect(planContainer(task, W, []).binds.map((b) => b.dst)).toContain('/out');
  });

  it('finds outputs on the host where the job left them', () => {
    expect(hostPathOf(W, '/data/out.txt')).toBe('/w/t1/mnt/data/out.txt');
    expect(hostPathOf(W, '/tmp/x')).toBe('/w/t1/tmp/x');
    expect(hostPathOf(W, '/var/tmp/y')).toBe('/w/t1/var-tmp/y');
  });

  it('names the writable place of stdout, stderr and a stdin the task could have written', () => {
    const task: TaskRequest = {
      inputs: [{ path: '/in/data', url: 'file:///s/data', type: 'FILE' }],
      volumes: ['/out'],
      executors: [
        { image: 'alpine', command: ['cat'], stdin: '/in/data', stdout: '/out/o', stderr: '/tmp/e' },
        { image: 'alpine', command: ['cat'], stdin: '/out/o' },
      ],
    };
    const [first, second] = planContainer(task, W, [
      { index: 0, hostPath: '/s/data', containerPath: '/in/data', kind: 'file' },
    ]).executors;
    expect(first!.stdin).toEqual({ path: '/in/data', host: '/s/data' });
    expect(first!.stdout).toEqual({
      path: '/out/o',
      host: '/w/t1/mnt/out/o',
      place: { src: '/w/t1/mnt/out', dst: '/out' },
    });
    expect(first!.stderr?.place).toEqual({ src: '/w/t1/tmp', dst: '/tmp' });
    expect(second!.stdin).toEqual({
      path: '/out/o',
      host: '/w/t1/mnt/out/o',
      place: { src: '/w/t1/mnt/out', dst: '/out' },
    });
  });

  it('refuses a stdout that is a read-only input, which the job script would otherwise overwrite', () => {
    const task: TaskRequest = {
      inputs: [{ path: '/ref/genome.fa', url: 'file:///s/genome.fa', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'], stdout: '/ref/genome.fa' }],
    };
    const staged: StagedInput[] = [
      { index: 0, hostPath: '/s/genome.fa', containerPath: '/ref/genome.fa', kind: 'file' },
    ];
    expect(() => planContainer(task, W, staged)).toThrow(
      'executors[0].stdout: /ref/genome.fa is a read-only input',
    );
  });

  it('makes a mount point inside a read-only input starting from the input, others from the task', () => {
    const task: TaskRequest = {
      inputs: [{ path: '/ref', url: 'file:///s/ref', type: 'DIRECTORY' }],
      outputs: [{ path: '/ref/sub/out.txt', url: 'file:///s/o', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'] }],
    };
    const staged: StagedInput[] = [{ index: 0, hostPath: '/s/ref', containerPath: '/ref', kind: 'dir' }];
    expect(planContainer(task, W, staged).layout).toEqual([
      { path: '/w/t1/mnt/ref/sub', kind: 'dir', base: W },
      { path: '/s/ref/sub', kind: 'dir', base: '/s/ref' },
    ]);
  });

  it('plans the same binds, layout and streams as a pairwise comparison of every path', () => {
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const path = (): string =>
      `/${Array.from({ length: 1 + random(4) }, () => ['a', 'b', 'tmp', 'var', 'c d'][random(5)]).join('/')}`;
    for (let round = 0; round < 200; round++) {
      const inputs: StagedInput[] = Array.from({ length: random(6) }, (_, index) => ({
        index,
        hostPath: `/s/in${index}`,
        containerPath: path(),
        kind: random(2) === 0 ? 'file' : 'dir',
      }));
      const task: TaskRequest = {
        volumes: Array.from({ length: random(5) }, path),
        outputs: Array.from({ length: random(5) }, () => ({
          path: random(4) === 0 ? `${path()}/*.txt` : path(),
          url: 'file:///s/o',
          type: random(2) === 0 ? 'FILE' : 'DIRECTORY',
        })),
        executors: [{ image: 'alpine', command: ['true'], workdir: path(), stdin: path(), stdout: path() }],
      };
      let plan;
      try {
        plan = planContainer(task, W, inputs);
      } catch (err) {
        if (err instanceof PlanError) continue;
        throw err;
      }
      const expected = pairwisePlan(task, inputs);
      expect(plan.binds).toEqual(expected.binds);
      expect(plan.layout.filter((e) => e.kind === 'dir').map((e) => e.path)).toEqual(expected.dirs);
      expect(plan.layout.filter((e) => e.kind === 'file').map((e) => e.path)).toEqual(expected.files);
      expect(plan.executors[0]!.stdin?.host).toBe(expected.host(task.executors[0]!.stdin!));
      expect(plan.executors[0]!.stdout?.host).toBe(expected.host(task.executors[0]!.stdout!));
    }
  });

  it('plans a task with 20,000 volumes, nested places and inputs correctly', () => {
    const n = 20_000;
    const volumes = Array.from({ length: n }, (_, i) => `/v/d${i}`);
    const task: TaskRequest = {
      // Nested places fold into their volume; every output lands inside one.
      volumes: [...volumes, ...volumes.map((v) => `${v}/nested`)],
      outputs: volumes.map((v, i) => ({ path: `${v}/nested/o${i}.txt`, url: 'file:///s/o', type: 'FILE' })),
      executors: [{ image: 'alpine', command: ['true'], stdout: `/v/d${n - 1}/nested/log` }],
    };
    const inputs: StagedInput[] = volumes.map((v, index) => ({
      index,
      hostPath: `/s/in${index}`,
      containerPath: `${v}/nested/in.txt`,
      kind: 'file',
    }));
    const plan = planContainer(task, W, inputs);
    const writable = plan.binds.filter((b) => !b.readOnly);
    expect(writable).toHaveLength(n + 2);
    expect(writable.slice(0, 3).map((b) => b.dst)).toEqual(['/tmp', '/var/tmp', '/v/d0']);
    expect(writable.at(-1)).toEqual({
      src: `${W}/mnt/v/d${n - 1}`,
      dst: `/v/d${n - 1}`,
      readOnly: false,
      kind: 'dir',
    });
    expect(plan.binds.filter((b) => b.readOnly)).toHaveLength(n);
    const files = plan.layout.filter((e) => e.kind === 'file');
    expect(files).toHaveLength(n);
    expect(files[123]).toEqual({ path: `${W}/mnt/v/d123/nested/in.txt`, kind: 'file', base: W });
    expect(plan.executors[0]!.stdout).toEqual({
      path: `/v/d${n - 1}/nested/log`,
      host: `${W}/mnt/v/d${n - 1}/nested/log`,
      place: { src: `${W}/mnt/v/d${n - 1}`, dst: `/v/d${n - 1}` },
    });
  });
});

/** The plan as first written, comparing every path with every other: the reference for the trie. */
function pairwisePlan(
  task: TaskRequest,
  inputs: readonly StagedInput[],
): { binds: Bind[]; dirs: string[]; files: string[]; host: (p: string) => string | undefined } {
  const clean = (p: string): string => {
    const n = posix.normalize(p);
    return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
  };
  const inside = (p: string, d: string): boolean => p === d || p.startsWith(d === '/' ? '/' : `${d}/`);
  const depth = (p: string): number => (p === '/' ? 0 : p.split('/').length - 1);
  const writable = new Set<string>();
  for (const v of task.volumes ?? []) writable.add(clean(v));
  for (const o of task.outputs ?? []) {
    const p = clean(o.path);
    if (/[*?[]/.test(p)) {
      const head = p.slice(0, p.search(/[*?[]/));
      writable.add(clean(head.endsWith('/') ? head : posix.dirname(head)));
    } else writable.add(o.type === 'DIRECTORY' ? p : posix.dirname(p));
  }
  for (const ex of task.executors) {
    if (ex.workdir) writable.add(clean(ex.workdir));
    for (const p of [ex.stdout, ex.stderr]) if (p) writable.add(posix.dirname(clean(p)));
  }
  writable.delete('/');
  const outermost = [...writable]
    .sort((a, b) => a.length - b.length)
    .filter((p, i, all) => !all.slice(0, i).some((q) => inside(p, q)));
  const binds: Bind[] = [
    { src: `${W}/tmp`, dst: '/tmp', readOnly: false, kind: 'dir' },
    { src: `${W}/var-tmp`, dst: '/var/tmp', readOnly: false, kind: 'dir' },
    ...outermost
      .filter((p) => p !== '/tmp' && p !== '/var/tmp')
      .map((p): Bind => ({ src: posix.join(W, 'mnt', p), dst: p, readOnly: false, kind: 'dir' })),
    ...inputs.map((i): Bind => ({
      src: i.hostPath,
      dst: clean(i.containerPath),
      readOnly: true,
      kind: i.kind,
    })),
  ];
  binds.sort((a, b) => depth(a.dst) - depth(b.dst));
  const longest = (candidates: Bind[]): Bind | undefined =>
    candidates.reduce<Bind | undefined>(
      (best, b) => (!best || b.dst.length > best.dst.length ? b : best),
      undefined,
    );
  // The job script makes the container's /tmp and /var/tmp; the gateway lays out the rest.
  const jobMade = [`${W}/tmp`, `${W}/var-tmp`];
  const dirs: string[] = [];
  const files: string[] = [];
  for (const b of binds) {
    if (!b.readOnly && !jobMade.includes(b.src)) dirs.push(b.src);
    const parent = longest(
      binds.filter((a) => a !== b && a.kind === 'dir' && a.dst !== b.dst && inside(b.dst, a.dst)),
    );
    if (!parent) continue;
    const point = posix.join(parent.src, posix.relative(parent.dst, b.dst));
    if (b.kind === 'dir') dirs.push(point);
    else {
      dirs.push(posix.dirname(point));
      files.push(point);
    }
  }
  for (const p of writable) {
    if (binds.some((b) => b.dst === p)) continue;
    const outer = longest(binds.filter((a) => a.kind === 'dir' && a.dst !== p && inside(p, a.dst)));
    if (outer && !outer.readOnly) dirs.push(posix.join(outer.src, posix.relative(outer.dst, p)));
  }
  const host = (containerPath: string): string | undefined => {
    const p = clean(containerPath);
    const bind = longest(binds.filter((b) => b.dst === p || (b.kind === 'dir' && inside(p, b.dst))));
    if (!bind) return undefined;
    return bind.dst === p ? bind.src : posix.join(bind.src, posix.relative(bind.dst, p));
  };
  return { binds, dirs: [...new Set(dirs)], files: [...new Set(files)], host };
}

describe('planContainer with inputs in a writable root', () => {
  const ROOT = '/shared/projects';
  const shared = (index: number, containerPath: string, hostPath: string, kind: 'file' | 'dir' = 'dir') =>
    ({ index, hostPath, containerPath, kind, writableRoot: ROOT }) satisfies StagedInput;

  it("binds a job store read-write at its own path, and makes nothing in the client's folder", () => {
    // Toil's shape: the file job store as a DIRECTORY input at the same path, no outputs.
    const task: TaskRequest = {
      inputs: [{ path: `${ROOT}/run/js`, url: `file://${ROOT}/run/js`, type: 'DIRECTORY' }],
      executors: [{ image: 'toil', command: ['_toil_contained_executor'] }],
    };
    const plan = planContainer(task, W, [shared(0, `${ROOT}/run/js`, `${ROOT}/run/js`)]);
    expect(plan.binds).toContainEqual({
      src: `${ROOT}/run/js`,
      dst: `${ROOT}/run/js`,
      readOnly: false,
      kind: 'dir',
      shared: { field: 'inputs[0]', root: ROOT },
    });
    expect(plan.layout).toEqual([]);
  });

  it('binds files and directories of a writable root read-write, the rest read-only', () => {
    const task: TaskRequest = {
      inputs: [
        { path: '/in/a.txt', url: `file://${ROOT}/a.txt`, type: 'FILE' },
        { path: '/in/ref', url: 'file:///data/ref', type: 'DIRECTORY' },
        { path: '/in/c', content: 'c' },
        { path: '/in/d', url: `file://${ROOT}/d`, type: 'DIRECTORY' },
      ],
      executors: [{ image: 'alpine', command: ['true'] }],
    };
    const binds = planContainer(task, W, [
      shared(0, '/in/a.txt', `${ROOT}/a.txt`, 'file'),
      { index: 1, hostPath: '/data/ref', containerPath: '/in/ref', kind: 'dir' },
      { index: 2, hostPath: `${W}/inputs/2/content`, containerPath: '/in/c', kind: 'file' },
      shared(3, '/in/d', `${ROOT}/d`),
    ]).binds;
    const mode = Object.fromEntries(binds.map((b) => [b.dst, [b.readOnly, b.shared?.field]]));
    expect(mode).toMatchObject({
      '/in/a.txt': [false, 'inputs[0]'],
      '/in/ref': [true, undefined],
      '/in/c': [true, undefined],
      '/in/d': [false, 'inputs[3]'],
    });
  });

  it("makes the mount point of a shared input inside the task's own place, below the task", () => {
    // Nextflow's shape: its work directory is the workdir, its own files inputs in place there.
    const dir = `${ROOT}/work/ab/cdef`;
    const task: TaskRequest = {
      inputs: [{ path: `${dir}/.command.sh`, url: `file://${dir}/.command.sh`, type: 'FILE' }],
      outputs: [{ path: `${dir}/.exitcode`, url: `file://${dir}/.exitcode`, type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['bash', '.command.sh'], workdir: dir }],
    };
    const plan = planContainer(task, W, [shared(0, `${dir}/.command.sh`, `${dir}/.command.sh`, 'file')]);
    expect(plan.layout.filter((e) => e.kind === 'file')).toEqual([
      { path: `${W}/mnt${dir}/.command.sh`, kind: 'file', base: W },
    ]);
    expect(plan.layout.every((e) => e.base === W && e.path.startsWith(`${W}/`))).toBe(true);
  });

  it.each([
    [
      'an output',
      { outputs: [{ path: '/js/out.txt', url: 'file:///s/o', type: 'FILE' as const }] },
      'outputs[0]',
    ],
    [
      'a directory output',
      { outputs: [{ path: '/js', url: 'file:///s/o', type: 'DIRECTORY' as const }] },
      'outputs[0]',
    ],
    ['a volume', { volumes: ['/js/v'] }, 'volumes[0]'],
  ])('refuses %s inside a shared input, naming both', (_what, fields, field) => {
    const task: TaskRequest = { ...fields, executors: [{ image: 'alpine', command: ['true'] }] };
    expect(() => planContainer(task, W, [shared(0, '/js', `${ROOT}/js`)])).toThrow(
      new RegExp(
        `^${field.replace(/[[\]]/g, '\\$&')}: \\S+ lies in /js, the writable input inputs\\[0\\] bound in place from ${ROOT}/js; ` +
          "outputs, volumes and streams are the task's own and must lie outside it$",
      ),
    );
  });

  it.each(['stdin', 'stdout', 'stderr'] as const)('refuses a %s inside a shared input', (stream) => {
    const task: TaskRequest = {
      executors: [{ image: 'alpine', command: ['true'], [stream]: '/js/log' }],
    };
    expect(() => planContainer(task, W, [shared(0, '/js', `${ROOT}/js`)])).toThrow(PlanError);
    expect(() => planContainer(task, W, [shared(0, '/js', `${ROOT}/js`)])).toThrow(
      new RegExp(`^executors\\[0\\]\\.${stream}: /js/log lies in /js, the writable input inputs\\[0\\]`),
    );
  });

  it('gives a workdir in a shared input no place of its own: executors work in the folder', () => {
    const task: TaskRequest = {
      executors: [{ image: 'alpine', command: ['true'], workdir: '/js/sub' }],
    };
    const plan = planContainer(task, W, [shared(0, '/js', `${ROOT}/js`)]);
    expect(plan.binds.map((b) => b.dst)).toEqual(['/tmp', '/js', '/var/tmp']);
    expect(plan.executors[0]!.workdir).toBe('/js/sub');
    expect(plan.layout).toEqual([]);
  });

  it('needs no mount point for an input that names the very file it lands on in a shared input', () => {
    const task: TaskRequest = { executors: [{ image: 'alpine', command: ['true'] }] };
    const plan = planContainer(task, W, [
      shared(0, '/js', `${ROOT}/js`),
      shared(1, '/js/sub/f.txt', `${ROOT}/js/sub/f.txt`, 'file'),
    ]);
    expect(plan.binds.filter((b) => b.shared).map((b) => b.dst)).toEqual(['/js', '/js/sub/f.txt']);
    expect(plan.layout).toEqual([]);
  });

  it('refuses a bind that would need a mount point in a shared input', () => {
    const task: TaskRequest = { executors: [{ image: 'alpine', command: ['true'] }] };
    const staged: StagedInput[] = [
      shared(0, '/js', `${ROOT}/js`),
      { index: 1, hostPath: `${W}/inputs/1/content`, containerPath: '/js/conf.txt', kind: 'file' },
    ];
    expect(() => planContainer(task, W, staged)).toThrow(
      `inputs[1]: /js/conf.txt lies in /js, the writable input inputs[0] bound in place from ${ROOT}/js, ` +
        'where the gateway makes no mount points (tasks change that folder while they run); give it a path outside /js',
    );
    // A shared input from elsewhere in the root is no exception: it is not already there.
    expect(() =>
      planContainer(task, W, [shared(0, '/js', `${ROOT}/js`), shared(1, '/js/x', `${ROOT}/other`)]),
    ).toThrow(/^inputs\[1\]: \/js\/x lies in \/js, the writable input inputs\[0\]/);
  });

  it('refuses a mount point in a writable root below a read-only directory input', () => {
    const task: TaskRequest = {
      outputs: [{ path: '/data/scratch/run/out.txt', url: 'file:///s/o', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'] }],
    };
    const staged: StagedInput[] = [
      {
        index: 0,
        hostPath: '/shared',
        containerPath: '/data',
        kind: 'dir',
        writableBelow: ['/shared/scratch'],
      },
    ];
    expect(() => planContainer(task, W, staged)).toThrow(
      'outputs[0]: /data/scratch/run would need a mount point at /shared/scratch/run, in the writable root ' +
        '/shared/scratch, where the gateway makes no mount points (tasks change it while they run); give it a path outside /data',
    );
    // An input of that root at its own place there needs none.
    const inPlace: StagedInput = {
      index: 1,
      hostPath: '/shared/scratch/js',
      containerPath: '/data/scratch/js',
      kind: 'dir',
      writableRoot: '/shared/scratch',
    };
    const points = planContainer({ executors: task.executors }, W, [...staged, inPlace]).layout;
    expect(points).toEqual([]);
    // Elsewhere in the same input the mount point is made from the input's directory, as for any input.
    const elsewhere = {
      ...task,
      outputs: [{ path: '/data/ref/out.txt', url: 'file:///s/o', type: 'FILE' as const }],
    };
    expect(planContainer(elsewhere, W, staged).layout).toContainEqual({
      path: '/shared/ref',
      kind: 'dir',
      base: '/shared',
    });
  });
});

import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planContainer } from '../../src/apptainer/container-plan.js';
import { REFUSED_PATH_EXIT, renderJobScript } from '../../src/apptainer/render-job-script.js';
import { loadConfig } from '../../src/config/load-config.js';
import { ConfigError } from '../../src/errors.js';
import { AllowedRoots, rootUrls } from '../../src/staging/allowed-roots.js';
import { OutputDeliverer } from '../../src/staging/deliver-outputs.js';
import { stageInputs } from '../../src/staging/stage-inputs.js';
import type { TaskRequest, TesInput } from '../../src/tes/types.js';
import { writeHostRuntime, layOut } from '../helpers/host-runtime.js';

/**
 * Writable allowed roots against real folders: how inputs are located and staged, output files
 * created in a root that another task changes at the same moment, and the job script's check that
 * a shared input still lies in its root before each executor.
 */

let dir: string;
let shared: string;
let data: string;
let secret: string;
let work: string;

beforeEach(() => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'tesgw-writable-roots-')));
  shared = join(dir, 'shared');
  data = join(dir, 'data');
  secret = join(dir, 'secret');
  work = join(dir, 'task');
  for (const d of [shared, data, secret, work, join(shared, 'js'), join(data, 'ref')]) mkdirSync(d);
  writeFileSync(join(secret, 'canary.txt'), 'canary\n');
  writeFileSync(join(shared, 'js', 'state'), 'job store\n');
  writeFileSync(join(data, 'ref', 'genome.fa'), '>chr1\n');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function config(roots: unknown[]) {
  return loadConfig({ env: {}, overrides: { storage: { allowedRoots: roots } } });
}

describe('storage.allowedRoots entries', () => {
  it('reads plain paths as read-only roots and objects as marked, read-only by default', () => {
    const roots = config(['/data', { path: '/shared/projects', writable: true }, { path: '/ref' }]).storage
      .allowedRoots;
    expect(roots).toEqual([
      { path: '/data', writable: false },
      { path: '/shared/projects', writable: true },
      { path: '/ref', writable: false },
    ]);
    // The object form is accepted back as it is read.
    expect(config(roots).storage.allowedRoots).toEqual(roots);
  });

  it('reports each mistake against the form it was written in', () => {
    let error: ConfigError | undefined;
    try {
      config(['data', { path: 'x', writeable: true }, { path: '/y', writable: 'yes' }, 42]);
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error!.problems).toEqual([
      'storage.allowedRoots.0: must be an absolute path',
      'storage.allowedRoots.1.path: must be an absolute path',
      'storage.allowedRoots.1: unknown setting writeable',
      'storage.allowedRoots.2.writable: Expected boolean, received string',
      'storage.allowedRoots.3: must be an absolute path, or { path: /abs/path, writable: true|false }',
    ]);
  });

  it('lists the roots as file:// prefixes, each ending in a slash', () => {
    expect(rootUrls(['/data', { path: '/shared/projects/', writable: true }, '/'])).toEqual([
      'file:///data/',
      'file:///shared/projects/',
      'file:///',
    ]);
  });
});

describe('inputs in writable roots', () => {
  const deps = (roots: AllowedRoots) => ({
    roots,
    fetchers: [],
    parallel: 2,
    limits: { maxDownloadBytes: 1024, maxListedObjects: 10 },
  });

  it('stages an input of a writable root to be bound in place read-write, others read-only', async () => {
    symlinkSync(join(shared, 'js'), join(data, 'to-shared'));
    const roots = new AllowedRoots([data, { path: shared, writable: true }]);
    const inputs: TesInput[] = [
      { path: `${shared}/js`, url: `file://${shared}/js`, type: 'DIRECTORY' },
      { path: '/ref/genome.fa', url: `${data}/ref/genome.fa`, type: 'FILE' },
      // Judged by where it really is: a link in a read-only root to a writable one.
      { path: '/via-link', url: `file://${data}/to-shared`, type: 'DIRECTORY' },
    ];
    const staged = await stageInputs(inputs, work, deps(roots));
    expect(staged).toEqual([
      {
        index: 0,
        containerPath: `${shared}/js`,
        kind: 'dir',
        hostPath: `${shared}/js`,
        writableRoot: shared,
      },
      { index: 1, containerPath: '/ref/genome.fa', kind: 'file', hostPath: `${data}/ref/genome.fa` },
      { index: 2, containerPath: '/via-link', kind: 'dir', hostPath: `${shared}/js`, writableRoot: shared },
    ]);
  });

  it('tells a read-only directory input which writable roots lie inside it', async () => {
    const scratch = join(data, 'scratch');
    mkdirSync(scratch);
    const roots = new AllowedRoots([data, { path: scratch, writable: true }]);
    const [input] = await stageInputs(
      [{ path: '/data', url: `file://${data}`, type: 'DIRECTORY' }],
      work,
      deps(roots),
    );
    expect(input).toMatchObject({ hostPath: data, writableBelow: [scratch] });
    expect(input!.writableRoot).toBeUndefined();
  });
});

/** Roots whose check is followed at once by another task's move: a folder becomes a link. */
class RacedRoots extends AllowedRoots {
  constructor(
    roots: ConstructorParameters<typeof AllowedRoots>[0],
    private readonly race: () => void,
  ) {
    super(roots);
  }

  override async check(url: string, path: string, field: string, mustExist: boolean): Promise<string> {
    const real = await super.check(url, path, field, mustExist);
    this.race();
    return real;
  }
}

describe('outputs delivered into a writable root', () => {
  function taskFile(containerPath: string, text: string): void {
    const host = join(work, 'mnt', containerPath);
    mkdirSync(join(host, '..'), { recursive: true });
    writeFileSync(host, text);
  }

  it('creates the file and its folders in the root, as an ordinary file', async () => {
    taskFile('/out/result.txt', 'result\n');
    const result = await new OutputDeliverer(
      new AllowedRoots([{ path: shared, writable: true }]),
      [],
    ).deliver([{ path: '/out/result.txt', url: `file://${shared}/run/1/result.txt`, type: 'FILE' }], work);
    expect(result.errors).toEqual([]);
    expect(readFileSync(join(shared, 'run/1/result.txt'), 'utf8')).toBe('result\n');
  });

  it('still writes through a link that lay inside the roots when it was checked', async () => {
    taskFile('/out/result.txt', 'result\n');
    symlinkSync(join(shared, 'js'), join(shared, 'latest'));
    const result = await new OutputDeliverer(
      new AllowedRoots([{ path: shared, writable: true }]),
      [],
    ).deliver([{ path: '/out/result.txt', url: `file://${shared}/latest/result.txt`, type: 'FILE' }], work);
    expect(result.errors).toEqual([]);
    expect(readFileSync(join(shared, 'js/result.txt'), 'utf8')).toBe('result\n');
  });

  it.each([
    ['a folder on the way', 'run', `run/result.txt`],
    ['the file itself', 'run/result.txt', 'run/result.txt'],
  ])(
    'refuses %s made a link after the check, and writes nothing outside the root',
    async (_what, swapped, rel) => {
      taskFile('/out/result.txt', 'evil\n');
      mkdirSync(join(shared, 'run'));
      writeFileSync(join(shared, 'run/result.txt'), 'old\n');
      const target = swapped === 'run' ? secret : join(secret, 'canary.txt');
      const roots = new RacedRoots([{ path: shared, writable: true }], () => {
        renameSync(join(shared, swapped), join(shared, 'moved'));
        symlinkSync(target, join(shared, swapped));
      });
      const result = await new OutputDeliverer(roots, []).deliver(
        [{ path: '/out/result.txt', url: `file://${shared}/${rel}`, type: 'FILE' }],
        work,
      );
      expect(result.errors).toHaveLength(1);
      expect(result.errors[0]).toMatch(
        /^outputs\[0\]: file:\/\/.* became a symbolic link after it was checked; the gateway does not follow links a task makes$/,
      );
      expect(readdirSync(secret)).toEqual(['canary.txt']);
      expect(readFileSync(join(secret, 'canary.txt'), 'utf8')).toBe('canary\n');
    },
  );
});

/**
 * The job script itself, run with a runtime stand-in that runs each command on the host (no
 * container), so commands name host paths.
 */
describe('a job script with an input bound in place from a writable root', () => {
  let runtime: string;

  beforeEach(() => {
    runtime = writeHostRuntime(dir);
  });

  async function script(task: TaskRequest): Promise<string> {
    const staged = await stageInputs(task.inputs ?? [], work, {
      roots: new AllowedRoots([{ path: shared, writable: true }]),
      fetchers: [],
      parallel: 1,
      limits: { maxDownloadBytes: 1, maxListedObjects: 1 },
    });
    const plan = planContainer(task, work, staged);
    layOut(plan);
    const text = renderJobScript({
      taskId: 't',
      workDir: work,
      runtime: { flavor: 'apptainer', executable: runtime, extraArgs: [] },
      plan,
      gpus: false,
    });
    writeFileSync(join(dir, 'job.sh'), text);
    return text;
  }

  function run(): { status: number | null; systemError: string | undefined } {
    const result = spawnSync('bash', [join(dir, 'job.sh')], { encoding: 'utf8' });
    const errorFile = join(work, 'system-error');
    return {
      status: result.status,
      systemError: existsSync(errorFile) ? readFileSync(errorFile, 'utf8').trim() : undefined,
    };
  }

  // Toil's shape: the job store at its own path; the stand-in runs the command on the host.
  const jobStore = (): TaskRequest => ({
    inputs: [{ path: '/js', url: `file://${shared}/js`, type: 'DIRECTORY' }],
    executors: [
      { image: 'toil', command: ['sh', '-c', 'echo written > "$0/new"', `${shared}/js`] },
      { image: 'toil', command: ['true'] },
    ],
  });

  it('binds it writable and checks it before each executor, in a script that passes shellcheck', async () => {
    const text = await script(jobStore());
    expect(text).toContain(`--mount 'type=bind,src=${shared}/js,dst=/js'`);
    const checks = text.split('\n').filter((l) => l.startsWith('in_root '));
    expect(checks).toEqual([
      `in_root 'inputs[0]' ${shared}/js ${shared} dir`,
      `in_root 'inputs[0]' ${shared}/js ${shared} dir`,
    ]);
    execFileSync('bash', ['-n', join(dir, 'job.sh')]);
    const sc = spawnSync('shellcheck', ['--shell=bash', '--severity=style', join(dir, 'job.sh')], {
      encoding: 'utf8',
    });
    expect(sc.error).toBeUndefined();
    expect(sc.stdout + sc.stderr).toBe('');
  });

  it('runs the executors while the input stays where it was staged', async () => {
    await script(jobStore());
    expect(run()).toEqual({ status: 0, systemError: undefined });
    expect(readFileSync(join(shared, 'js/new'), 'utf8')).toBe('written\n');
  });

  it('stops before an executor when the input became a link out of its root', async () => {
    await script(jobStore());
    // Another task, which has the root bound, moves the folder away and leaves a link in its place.
    renameSync(join(shared, 'js'), join(shared, 'js-moved'));
    symlinkSync(secret, join(shared, 'js'));
    const result = run();
    expect(result.status).toBe(REFUSED_PATH_EXIT);
    expect(result.systemError).toBe(
      `inputs[0]: ${shared}/js resolves to ${secret}, outside the writable root ${shared}; ` +
        'the gateway does not follow links a task makes',
    );
    expect(existsSync(join(work, 'exec-0/start'))).toBe(false);
    expect(readdirSync(secret)).toEqual(['canary.txt']);
  });

  it('stops before an executor when the input is no longer a directory', async () => {
    await script(jobStore());
    rmSync(join(shared, 'js'), { recursive: true });
    writeFileSync(join(shared, 'js'), 'a file now\n');
    expect(run()).toEqual({
      status: REFUSED_PATH_EXIT,
      systemError: `inputs[0]: ${shared}/js is not a directory any more`,
    });
  });
});

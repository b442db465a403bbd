import { loadConfig } from '../../src/config/load-config.js';
import {
  BackendParameterError,
  buildSbatchArgs,
  SLURM_BACKEND_PARAMETERS,
  type SbatchPolicy,
} from '../../src/compute/slurm/sbatch-args.js';
import { checkTaskRules, taskRulesFor, type TaskRules } from '../../src/tes/validate-task.js';

/** The rules as a gateway with these settings has them (the Slurm backend's parameters). */
function rulesWith(overrides: Record<string, unknown> = {}): TaskRules {
  return taskRulesFor(loadConfig({ env: {}, overrides }), SLURM_BACKEND_PARAMETERS);
}

const DEFAULTS = rulesWith({ container: { imageRoots: ['/srv/images'] } });
const ex = (extra: Record<string, unknown> = {}) => ({ image: 'alpine', command: ['true'], ...extra });
const task = (extra: Record<string, unknown> = {}) => ({ executors: [ex()], ...extra });
const problemsOf = (body: unknown, rules: TaskRules = DEFAULTS) =>
  checkTaskRules(body, rules).problems.map((p) => `${p.path}: ${p.message}`);

describe('limits on the shape of a task', () => {
  const small = rulesWith({
    limits: {
      maxExecutors: 2,
      maxInputs: 2,
      maxOutputs: 2,
      maxVolumes: 2,
      maxTags: 2,
      maxEnvPerExecutor: 2,
      maxCommandArgs: 2,
      maxBackendParameters: 2,
      maxZones: 2,
      maxStringBytes: 4096,
    },
  });

  it('names each field over its limit, the limit and its setting, all in one answer', () => {
    const three = <T>(item: T): T[] => [item, item, item];
    const body = {
      executors: three(ex({ command: three('x'), env: { A: '1', B: '2', C: '3' } })),
      inputs: three({ path: '/in', content: 'x' }),
      outputs: three({ path: '/out', url: 'file:///o' }),
      volumes: three('/v'),
      tags: { a: '1', b: '2', c: '3' },
      resources: { backend_parameters: { qos: 'a', account: 'b', reservation: 'c' }, zones: three('z') },
    };
    expect(problemsOf(body, small)).toEqual([
      'executors: has 3 executors; at most 2 are accepted (limits.maxExecutors)',
      'inputs: has 3 inputs; at most 2 are accepted (limits.maxInputs)',
      'outputs: has 3 outputs; at most 2 are accepted (limits.maxOutputs)',
      'volumes: has 3 volumes; at most 2 are accepted (limits.maxVolumes)',
      'tags: has 3 tags; at most 2 are accepted (limits.maxTags)',
      'resources.backend_parameters: has 3 entries; at most 2 are accepted (limits.maxBackendParameters)',
      'resources.zones: has 3 zones; at most 2 are accepted (limits.maxZones)',
    ]);
  });

  it('counts the arguments and variables of each executor', () => {
    const body = { executors: [ex(), ex({ command: ['a', 'b', 'c'], env: { A: '', B: '', C: '' } })] };
    expect(problemsOf(body, small)).toEqual([
      'executors[1].command: has 3 arguments; at most 2 are accepted (limits.maxCommandArgs)',
      'executors[1].env: has 3 variables; at most 2 are accepted (limits.maxEnvPerExecutor)',
    ]);
  });

  it('accepts a task exactly at every limit', () => {
    const two = <T>(item: T): T[] => [item, item];
    const body = {
      executors: two(ex({ command: two('x'.repeat(4096)), env: { A: '1', B: '2' } })),
      inputs: two({ path: '/in', content: 'x' }),
      outputs: two({ path: '/out', url: 'file:///o' }),
      volumes: two('/v'),
      tags: { a: '1', b: '2' },
      resources: { backend_parameters: { qos: 'a', account: 'b' }, zones: two('z') },
    };
    expect(problemsOf(body, small)).toEqual([]);
  });

  it('reports a list over its limit once, without judging its items one by one', () => {
    const body = { executors: [ex(), ex(), ex({ image: '' })], volumes: Array(20_000).fill('proc') };
    expect(problemsOf(body, small)).toEqual([
      'executors: has 3 executors; at most 2 are accepted (limits.maxExecutors)',
      'volumes: has 20000 volumes; at most 2 are accepted (limits.maxVolumes)',
    ]);
  });

  it('measures every string in UTF-8 bytes against limits.maxStringBytes', () => {
    const body = {
      name: 'n'.repeat(4097),
      description: '✓'.repeat(1366), // 4098 bytes in 1366 characters
      executors: [ex({ command: ['ok', 'c'.repeat(5000)], env: { V: 'v'.repeat(4097) }, workdir: '/w' })],
      inputs: [{ path: '/in', url: `file:///${'u'.repeat(4100)}` }],
      tags: { ['k'.repeat(5000)]: 'v', t: 'x'.repeat(4097) },
      resources: { backend_parameters: { account: 'a'.repeat(4097) } },
    };
    expect(problemsOf(body, small)).toEqual([
      'name: is 4097 bytes; at most 4096 are accepted (limits.maxStringBytes)',
      'description: is 4098 bytes; at most 4096 are accepted (limits.maxStringBytes)',
      'executors[0].command[1]: is 5000 bytes; at most 4096 are accepted (limits.maxStringBytes)',
      'executors[0].env.V: is 4097 bytes; at most 4096 are accepted (limits.maxStringBytes)',
      'inputs[0].url: is 4108 bytes; at most 4096 are accepted (limits.maxStringBytes)',
      'tags: has a key of 5000 bytes; at most 4096 are accepted (limits.maxStringBytes)',
      'tags.t: is 4097 bytes; at most 4096 are accepted (limits.maxStringBytes)',
      'resources.backend_parameters.account: is 4097 bytes; at most 4096 are accepted (limits.maxStringBytes)',
    ]);
  });

  it("leaves an input's content to its own limit, server.maxContentBytes", () => {
    const body = task({ inputs: [{ path: '/in', content: 'c'.repeat(100_000) }] });
    expect(problemsOf(body, small)).toEqual([]);
  });

  it('lists a hundred problems and counts the rest', () => {
    const body = task({ tags: Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`k${i}`, '\0'])) });
    const problems = problemsOf(body, rulesWith({ limits: { maxTags: 1000 } }));
    expect(problems).toHaveLength(101);
    expect(problems[0]).toBe('tags.k0: must not contain a NUL character');
    expect(problems[100]).toBe('body: has 50 more problems, not listed');
  });

  it('walks a deeply nested body without exhausting the stack', () => {
    let deep: unknown = 'leaf\0';
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(problemsOf(task({ extra: deep }))).toEqual([
      `extra${'[0]'.repeat(200_000)}: must not contain a NUL character`,
    ]);
  });

  it('has defaults that the tasks of real workflow engines stay far below', () => {
    // A Toil-like task: its command carries a large encoded job description.
    const body = {
      name: 'call-variants.shard-17',
      description: 'd'.repeat(10_000),
      inputs: Array.from({ length: 2_000 }, (_, i) => ({ path: `/in/${i}.bam`, url: `s3://b/${i}.bam` })),
      outputs: Array.from({ length: 500 }, (_, i) => ({ path: `/out/${i}.vcf`, url: `s3://b/o/${i}.vcf` })),
      volumes: ['/scratch'],
      tags: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`tag${i}`, 'v'])),
      executors: [
        ex({
          command: ['_toil_contained_executor', 'x'.repeat(100_000)],
          env: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`VAR_${i}`, 'value'])),
        }),
      ],
      resources: {
        backend_parameters: { partition: 'debug', time_limit: '1-00:00:00', gres: 'gpu:a100:2,mps:10' },
      },
    };
    expect(problemsOf(body)).toEqual([]);
  });
});

describe('NUL characters', () => {
  it.each([
    ['name', task({ name: 'a\0b' })],
    ['description', task({ description: '\0' })],
    ['executors[0].command[0]', { executors: [ex({ command: ['a\0'] })] }],
    ['executors[0].image', { executors: [ex({ image: 'alpine\0' })] }],
    ['executors[0].env.A', { executors: [ex({ env: { A: 'x\0y' } })] }],
    ['executors[0].stdout', { executors: [ex({ stdout: '/o\0ut' })] }],
    ['inputs[0].content', task({ inputs: [{ path: '/in', content: 'bin\0ary' }] })],
    ['inputs[0].url', task({ inputs: [{ path: '/in', url: 'file:///x\0' }] })],
    ['outputs[0].path', task({ outputs: [{ path: '/o\0', url: 'file:///o' }] })],
    ['volumes[0]', task({ volumes: ['/v\0'] })],
    ['tags.k', task({ tags: { k: '\0' } })],
    ['resources.backend_parameters.qos', task({ resources: { backend_parameters: { qos: '\0' } } })],
  ])('are refused in %s', (path, body) => {
    expect(problemsOf(body)).toContain(`${path}: must not contain a NUL character`);
  });

  it('are refused in map keys, which the path then shows quoted', () => {
    expect(problemsOf(task({ tags: { 'a\0b': 'x' } }))).toEqual([
      'tags: has a key with a NUL character ("a\\u0000b")',
    ]);
  });
});

describe('container paths', () => {
  it.each([
    '/',
    '//',
    '/.',
    '/proc',
    '/proc/1/root',
    '/dev',
    '/dev/shm/',
    '/sys',
    '/sys/fs/cgroup',
    '//proc',
    '/./dev',
  ])('refuses a writable volume at %s', (path) => {
    const problems = problemsOf(task({ volumes: [path] }));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(
      /^volumes\[0\]: must not be (\/ itself|at or under \/(proc|dev|sys): the container runtime provides it)/,
    );
  });

  it.each(['/procedures', '/device', '/system', '/data/proc', '/tmp/dev'])('accepts %s', (path) => {
    expect(problemsOf(task({ volumes: [path] }))).toEqual([]);
  });

  it('judges inputs, outputs, workdir and the standard streams alike', () => {
    const body = {
      inputs: [{ path: '/proc/self/environ', url: 'file:///x' }],
      outputs: [{ path: '/sys/x', url: 'file:///o' }],
      executors: [ex({ workdir: '/', stdin: '/dev/stdin', stdout: '/proc/1/fd/1', stderr: '/sys/err' })],
    };
    expect(problemsOf(body)).toEqual([
      'executors[0].workdir: must not be / itself: it would hide the whole container',
      'executors[0].stdin: must not be at or under /dev: the container runtime provides it',
      'executors[0].stdout: must not be at or under /proc: the container runtime provides it',
      'executors[0].stderr: must not be at or under /sys: the container runtime provides it',
      'inputs[0].path: must not be at or under /proc: the container runtime provides it',
      'outputs[0].path: must not be at or under /sys: the container runtime provides it',
    ]);
  });
});

describe('images', () => {
  it.each([
    'alpine',
    'ubuntu:24.04',
    'quay.io/biocontainers/samtools:1.19--h50ea8bc_0',
    'localhost:5000/tools/bwa@sha256:0123abcd',
    'docker://alpine:3.19',
    'oras://ghcr.io/org/image:1',
    'library://alpine:latest',
    '/srv/images/tool.sif',
    '/srv/images/sub/dir/tool.sif',
  ])('accepts %s', (image) => {
    expect(problemsOf({ executors: [ex({ image })] })).toEqual([]);
  });

  it.each([
    ['docker-archive:///tmp/x.tar', /uses docker-archive:\/\/, which this gateway does not accept/],
    ['oci-archive:///tmp/x.tar', /uses oci-archive:\/\//],
    ['docker-daemon://alpine:latest', /uses docker-daemon:\/\//],
    ['shub://org/image', /uses shub:\/\//],
    ['http://example.org/x.sif', /uses http:\/\//],
    ['https://example.org/x.sif', /uses https:\/\//],
    ['oci:///var/lib/oci', /uses oci:\/\//],
    ['/etc', /outside the image roots \(\/srv\/images\)/],
    ['/srv/imagesX/tool.sif', /outside the image roots/],
    ['/srv/images/../../etc/shadow', /must not contain '\.\.'/],
    ['docker-archive:/tmp/x.tar', /is neither an image reference/],
    ['two words', /is neither an image reference/],
    ['docker://', /nothing, or white space, after the scheme/],
  ])('refuses %s', (image, message) => {
    const problems = checkTaskRules({ executors: [ex({ image })] }, DEFAULTS).problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]!.path).toBe('executors[0].image');
    expect(problems[0]!.message).toMatch(message);
  });

  it('runs no local image file when no image root is configured', () => {
    expect(problemsOf({ executors: [ex({ image: '/srv/images/tool.sif' })] }, rulesWith())).toEqual([
      'executors[0].image: is a local image file; this gateway runs none (container.imageRoots is empty)',
    ]);
  });

  it('takes its schemes from container.allowedImageSchemes', () => {
    const rules = rulesWith({ container: { allowedImageSchemes: ['oras'] } });
    expect(problemsOf({ executors: [ex({ image: 'oras://r/x:1' })] }, rules)).toEqual([]);
    expect(problemsOf({ executors: [ex({ image: 'alpine' })] }, rules)).toEqual([
      'executors[0].image: is a docker reference, and this gateway does not accept docker:// images',
    ]);
    expect(problemsOf({ executors: [ex({ image: 'library://x' })] }, rules)).toEqual([
      'executors[0].image: uses library://, which this gateway does not accept (accepted: oras://)',
    ]);
  });
});

describe('Slurm backend parameters', () => {
  const bp = (params: Record<string, string>) => task({ resources: { backend_parameters: params } });

  it.each([
    ['partition', 'debug,gpu', /must be one partition name: with a comma Slurm may pick a partition/],
    ['account', 'a,b', /must be one account name \(no commas\)/],
    ['qos', 'normal,high', /must be one QOS name \(no commas\)/],
    ['nodelist', '/etc/hosts', /with a \/ sbatch reads it as a file on the gateway host/],
    ['exclude', 'n1,/tmp/list', /with a \/ sbatch reads it as a file/],
    ['time_limit', 'soon', /must be a Slurm time/],
    ['time_limit', '1:00:00:00', /must be a Slurm time/],
    ['constraint', 'intel gpu', /must not contain white space or control characters/],
    ['gres', 'gpu:1\n', /must not contain white space or control characters/],
  ])('refuses %s=%j', (key, value, message) => {
    const problems = checkTaskRules(bp({ [key]: value }), DEFAULTS).problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]!.path).toBe(`resources.backend_parameters.${key}`);
    expect(problems[0]!.message).toMatch(message);
  });

  it.each([
    ['partition', 'debug'],
    ['time_limit', '90'],
    ['time_limit', '10:30'],
    ['time_limit', '2-12'],
    ['time_limit', '2-12:30:00'],
    ['time_limit', 'UNLIMITED'],
    ['constraint', '[rack1*2&rack2*4]|intel'],
    ['gpus', 'volta:3,kepler:1'],
    ['gres', 'gpu:tesla:2,mps:100'],
    ['nodelist', 'n[1-4],m7'],
    ['reservation', 'r1,r2'],
  ])('accepts %s=%j', (key, value) => {
    expect(problemsOf(bp({ [key]: value }))).toEqual([]);
  });

  it('refuses a zone with a comma where the first zone names the partition', () => {
    const body = task({ resources: { zones: ['a,b', 'c,d'] } });
    expect(problemsOf(body)).toEqual([
      "resources.zones[0]: names the Slurm partition here, so it must be one partition name: with a comma Slurm may pick a partition whose limits this gateway's checks never saw",
    ]);
    expect(
      problemsOf(task({ resources: { zones: ['a,b'], backend_parameters: { partition: 'p' } } })),
    ).toEqual([]);
    expect(problemsOf(body, rulesWith({ slurm: { zonePartitions: false } }))).toEqual([]);
    expect(problemsOf(body, rulesWith({ backend: 'local' }))).toEqual([]);
  });

  it('judges values only for the keys the backend understands', () => {
    const local = taskRulesFor(loadConfig({ env: {} }), []);
    expect(checkTaskRules(bp({ partition: 'a,b' }), local)).toEqual({
      problems: [],
      ignoredBackendParameters: ['partition'],
    });
  });
});

describe('sbatch arguments of a task stored before these rules', () => {
  const policy: SbatchPolicy = {
    shortMaxMinutes: 60,
    zonePartitions: true,
    limits: { debug: { maxCpus: 1 } },
    overLimit: 'refuse',
    extraArgs: [],
  };
  const build = (resources: Record<string, unknown>) =>
    buildSbatchArgs('01jd0000000000000000000000', { executors: [ex()], resources }, '/w', policy);

  it('refuses a partition list, which would skip the partition limits, as a permanent error', () => {
    expect(() => build({ cpu_cores: 8, backend_parameters: { partition: 'debug,big' } })).toThrow(
      new BackendParameterError(
        "resources.backend_parameters.partition: must be one partition name: with a comma Slurm may pick a partition whose limits this gateway's checks never saw",
      ),
    );
    expect(() => build({ zones: ['debug,big'] })).toThrow(
      /^resources\.zones\[0\] \(the partition\): must be one/,
    );
    expect(() => build({ backend_parameters: { nodelist: '/etc/hosts' } })).toThrow(BackendParameterError);
    expect(new BackendParameterError('x').permanent).toBe(true);
  });

  it('passes the values it accepts through unchanged', () => {
    const { args } = build({ backend_parameters: { partition: 'debug', gres: 'gpu:1,mps:10' } });
    expect(args).toContain('--partition=debug');
    expect(args).toContain('--gres=gpu:1,mps:10');
  });
});

import { statSync } from 'node:fs';
import type { Canary } from '../helpers/canary.js';

/**
 * The hostile tasks of issue 7, each described once; hostile-suite.ts runs them through the HTTP API
 * on each backend (slurm.test.ts, local.test.ts).
 *
 * The executors run busybox `sh` in the test image. `ln -s <host path> ...` inside the container
 * makes a link whose target text is that host path: harmless inside the container, but exactly what
 * the job script and the gateway, working on the host with the service account's rights, would
 * follow afterwards. Every attack has a canary of its own outside every root (helpers/canary.ts).
 */

export type Backend = 'slurm' | 'local';

export interface AttackContext {
  /** The image every executor runs (busybox, from the stand-in's registry). */
  image: string;
  canary: Canary;
  /** A directory under an allowed root for this attack's `file://` outputs. */
  dest: string;
  /** An http URL on 127.0.0.1 that answers with a secret. */
  loopbackUrl: string;
  /** The job.sh of another task of the same gateway, waiting in `sleep`. */
  victimJobScript: string;
}

/** How a task that ran must end. */
export type Outcome =
  /** SYSTEM_ERROR, with some system_log naming the container path. */
  | { kind: 'refused'; names: string }
  /** Any terminal state: refusing and skipping are both safe. */
  | { kind: 'terminal' }
  | { kind: 'state'; state: string };

export interface RunAttack {
  key: string;
  /** The attack, as the start of the test's name. */
  title: string;
  task(ctx: AttackContext): Record<string, unknown>;
  outcome: Outcome;
  /**
   * Executors that must have run (an exit code in the task's logs) for the attack to count as tried:
   * a task that never ran proves nothing. 1 unless said otherwise.
   */
  mustRun?: number;
  /** Host paths, besides the canary, that must stay exactly as they were. */
  watch?(ctx: AttackContext): string[];
  /** Problems found in the task directory after the task ended (one readable line each). */
  inspect?(workDir: string): string[];
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
const sh = (ctx: AttackContext, script: string, extra: Record<string, unknown> = {}) => ({
  image: ctx.image,
  command: ['sh', '-c', script],
  ...extra,
});

export const RUN_ATTACKS: readonly RunAttack[] = [
  {
    key: 'stdoutLink',
    title: 'stdout copied through a link the task made to a host file',
    task: (ctx) => ({
      executors: [
        sh(ctx, `ln -s ${q(ctx.canary.file)} /out/o && echo written-by-the-attacker`, { stdout: '/out/o' }),
      ],
    }),
    outcome: { kind: 'refused', names: '/out/o' },
  },
  {
    key: 'stderrLink',
    title: 'stderr copied through a link the task made to a host file',
    task: (ctx) => ({
      executors: [
        sh(ctx, `ln -s ${q(ctx.canary.file)} /out/e && echo written-by-the-attacker >&2`, {
          stderr: '/out/e',
        }),
      ],
    }),
    outcome: { kind: 'refused', names: '/out/e' },
  },
  {
    key: 'stdoutMiddle',
    title: 'stdout copied through a linked middle directory (/out/d -> a host directory)',
    task: (ctx) => ({
      volumes: ['/out'],
      executors: [
        sh(ctx, `rm -rf /out/d; ln -s ${q(ctx.canary.tree)} /out/d && echo written-by-the-attacker`, {
          stdout: '/out/d/o',
        }),
      ],
    }),
    outcome: { kind: 'refused', names: '/out/d/o' },
  },
  {
    key: 'stdoutDangling',
    title: 'stdout copied through a dangling link to a host path',
    task: (ctx) => ({
      executors: [
        sh(ctx, `ln -s ${q(ctx.canary.absent)} /out/o && echo written-by-the-attacker`, { stdout: '/out/o' }),
      ],
    }),
    outcome: { kind: 'refused', names: '/out/o' },
  },
  {
    key: 'otherJobScript',
    title: 'stdout copied through a link to the job.sh of another task, still running',
    task: (ctx) => ({
      executors: [
        sh(ctx, `ln -s ${q(ctx.victimJobScript)} /out/o && echo 'touch /tmp/owned-by-the-attacker'`, {
          stdout: '/out/o',
        }),
      ],
    }),
    outcome: { kind: 'refused', names: '/out/o' },
    watch: (ctx) => [ctx.victimJobScript],
  },
  {
    key: 'stdinLink',
    title: 'stdin read through a link that an earlier executor planted',
    task: (ctx) => ({
      volumes: ['/out'],
      executors: [
        sh(ctx, `ln -s ${q(ctx.canary.file)} /out/in`),
        { image: ctx.image, command: ['cat'], stdin: '/out/in' },
      ],
    }),
    outcome: { kind: 'refused', names: '/out/in' },
  },
  {
    key: 'outputMiddle',
    title: 'output file /w/x/secret.txt behind a linked middle directory (/w/x -> a host directory)',
    task: (ctx) => ({
      volumes: ['/w'],
      outputs: [{ path: '/w/x/secret.txt', url: `file://${ctx.dest}/secret.txt` }],
      executors: [sh(ctx, `rm -rf /w/x; ln -s ${q(ctx.canary.tree)} /w/x`)],
    }),
    outcome: { kind: 'refused', names: '/w/x/secret.txt' },
  },
  {
    key: 'outputLast',
    title: 'output file whose last component is a link to a host file',
    task: (ctx) => ({
      outputs: [{ path: '/w/out.txt', url: `file://${ctx.dest}/out.txt` }],
      executors: [sh(ctx, `ln -s ${q(ctx.canary.file)} /w/out.txt`)],
    }),
    outcome: { kind: 'refused', names: '/w/out.txt' },
  },
  {
    key: 'outputWildcardBase',
    title: 'wildcard output /w/g/*.txt whose base directory is a link to a host directory',
    task: (ctx) => ({
      volumes: ['/w'],
      outputs: [{ path: '/w/g/*.txt', path_prefix: '/w/g/', url: `file://${ctx.dest}/g` }],
      executors: [sh(ctx, `rm -rf /w/g; ln -s ${q(ctx.canary.tree)} /w/g`)],
    }),
    outcome: { kind: 'refused', names: '/w/g' },
  },
  {
    key: 'outputDirectoryLinks',
    title: 'DIRECTORY output holding links to a host file and a host directory',
    task: (ctx) => ({
      outputs: [{ path: '/w/d', url: `file://${ctx.dest}/d`, type: 'DIRECTORY' }],
      executors: [
        sh(
          ctx,
          `mkdir -p /w/d/real && echo fine > /w/d/real/f.txt && ln -s ${q(ctx.canary.file)} /w/d/file.txt && ` +
            `ln -s ${q(ctx.canary.tree)} /w/d/tree`,
        ),
      ],
    }),
    outcome: { kind: 'terminal' },
  },
  {
    key: 'outputDangling',
    title: 'output file that is a dangling link to a host path',
    task: (ctx) => ({
      outputs: [{ path: '/w/dangling.txt', url: `file://${ctx.dest}/dangling.txt` }],
      executors: [sh(ctx, `ln -s ${q(ctx.canary.absent)} /w/dangling.txt`)],
    }),
    outcome: { kind: 'refused', names: '/w/dangling.txt' },
  },
  {
    key: 'nestedMountPoint',
    title: 'mount point of an input nested in a volume, replaced by a link to a host directory',
    task: (ctx) => ({
      volumes: ['/v'],
      inputs: [{ path: '/v/in/data.txt', content: 'input bound inside the volume\n' }],
      executors: [
        sh(ctx, `mv /v/in /v/old 2>/dev/null || rm -rf /v/in; ln -s ${q(ctx.canary.tree)} /v/in; ls -la /v`),
        sh(ctx, 'cat /v/in/data.txt'),
      ],
    }),
    outcome: { kind: 'terminal' },
  },
  {
    key: 'loopbackInput',
    title: 'http input from a loopback address (127.0.0.1)',
    task: (ctx) => ({
      inputs: [{ path: '/in/x', url: ctx.loopbackUrl }],
      executors: [sh(ctx, 'cat /in/x')],
    }),
    outcome: { kind: 'refused', names: 'inputs[0]' },
    // refused while staging, before any executor
    mustRun: 0,
  },
  {
    key: 'taskDirModes',
    title: 'a plain task',
    task: (ctx) => ({ executors: [sh(ctx, 'echo done')] }),
    outcome: { kind: 'state', state: 'COMPLETE' },
    inspect: inspectModes,
  },
];

/** The task directory is its user's alone: mode 0700, and job.sh without group or other bits. */
function inspectModes(workDir: string): string[] {
  const problems: string[] = [];
  const modeOf = (path: string): number | undefined => statSync(path, { throwIfNoEntry: false })?.mode;
  const dir = modeOf(workDir);
  if (dir === undefined) problems.push(`${workDir} is missing`);
  else if ((dir & 0o777) !== 0o700) problems.push(`${workDir} has mode ${octal(dir)}, not 0700`);
  const script = modeOf(`${workDir}/job.sh`);
  if (script === undefined) problems.push(`${workDir}/job.sh is missing`);
  else if ((script & 0o077) !== 0) {
    problems.push(`${workDir}/job.sh has mode ${octal(script)}: open to group or others`);
  }
  return problems;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

// ---------------------------------------------------------------------------------------------
// The wildcard bomb: run on a gateway in a process of its own (see hostile-suite.ts).
// ---------------------------------------------------------------------------------------------

const LONG = 'a'.repeat(200);
/** Five nested directories of 200 `a`s and a file of 249 `a`s and a `b`: no `...a` pattern matches. */
export const BOMB_FILE = `/w/${LONG}/${LONG}/${LONG}/${LONG}/${LONG}/${'a'.repeat(249)}b`;
/** Fourteen `**a`: a backtracking matcher tries on the order of n^14 ways before it says no. */
export const BOMB_PATTERN = `/w/${'**a'.repeat(14)}`;

export function wildcardBomb(ctx: Pick<AttackContext, 'image' | 'dest'>): Record<string, unknown> {
  const dir = BOMB_FILE.slice(0, BOMB_FILE.lastIndexOf('/'));
  return {
    name: 'wildcard bomb',
    outputs: [{ path: BOMB_PATTERN, url: `file://${ctx.dest}/bomb` }],
    executors: [{ image: ctx.image, command: ['sh', '-c', `mkdir -p ${q(dir)} && touch ${q(BOMB_FILE)}`] }],
  };
}

// ---------------------------------------------------------------------------------------------
// Refused at create: a 400 whose errors[] names the field.
// ---------------------------------------------------------------------------------------------

/** Counts above the configured limits (or, while a limit is not configurable, clearly excessive). */
export interface Excess {
  executors: number;
  tags: number;
  envEntries: number;
}

/**
 * Reads config.limits when the gateway has it: the first numeric key whose name (without a leading
 * `max`, case ignored) starts with the given word, plus one. Otherwise a count no real client sends.
 */
export function excessOf(config: unknown): Excess {
  const limits = (config as { limits?: unknown }).limits;
  const find = (word: RegExp, fallback: number): number => {
    if (limits && typeof limits === 'object') {
      for (const [key, value] of Object.entries(limits)) {
        if (typeof value === 'number' && word.test(key.replace(/^max/i, ''))) return value + 1;
      }
    }
    return fallback;
  };
  return {
    executors: find(/^executors?/i, 10_000),
    tags: find(/^tags?/i, 100_000),
    envEntries: find(/^env/i, 100_000),
  };
}

export interface CreateRefusal {
  title: string;
  /** The field the 400 must name: an errors[] path equal to it or below it. */
  field: string;
  backends?: readonly Backend[];
  task(image: string, excess: Excess): Record<string, unknown>;
}

const one = (image: string, extra: Record<string, unknown> = {}) => ({
  executors: [{ image, command: ['true'], ...extra }],
});

export const CREATE_REFUSALS: readonly CreateRefusal[] = [
  ...['/', '/proc', '/dev', '/sys', '/dev/shm', '/proc/self'].map((path): CreateRefusal => ({
    title: `a writable volume at ${path}`,
    field: 'volumes[0]',
    task: (image) => ({ ...one(image), volumes: [path] }),
  })),
  {
    title: 'a workdir at /sys',
    field: 'executors[0].workdir',
    task: (image) => one(image, { workdir: '/sys' }),
  },
  {
    title: 'a workdir at /',
    field: 'executors[0].workdir',
    task: (image) => one(image, { workdir: '/' }),
  },
  {
    title: 'an input under /dev',
    field: 'inputs[0].path',
    task: (image) => ({ ...one(image), inputs: [{ path: '/dev/x', content: 'x' }] }),
  },
  {
    title: 'an output under /proc',
    field: 'outputs[0].path',
    task: (image) => ({ ...one(image), outputs: [{ path: '/proc/x', url: 'file:///var/tmp/x' }] }),
  },
  {
    title: 'an output at /',
    field: 'outputs[0].path',
    task: (image) => ({
      ...one(image),
      outputs: [{ path: '/', url: 'file:///var/tmp/x', type: 'DIRECTORY' }],
    }),
  },
  {
    title: 'image /etc (a host directory outside the image roots)',
    field: 'executors[0].image',
    task: () => one('/etc'),
  },
  {
    title: 'image docker-archive:///var/tmp/x.tar (a scheme outside the allowed set)',
    field: 'executors[0].image',
    task: () => one('docker-archive:///var/tmp/x.tar'),
  },
  {
    title: 'a NUL byte in the task name',
    field: 'name',
    task: (image) => ({ ...one(image), name: 'a\u0000b' }),
  },
  {
    title: 'a NUL byte in a command argument',
    field: 'executors[0].command',
    task: (image) => ({ executors: [{ image, command: ['echo', 'a\u0000b'] }] }),
  },
  {
    title: 'a NUL byte in an env value',
    field: 'executors[0].env',
    task: (image) => one(image, { env: { X: 'a\u0000b' } }),
  },
  {
    title: 'a partition with a comma',
    field: 'resources.backend_parameters',
    backends: ['slurm'],
    task: (image) => ({ ...one(image), resources: { backend_parameters: { partition: 'debug,other' } } }),
  },
  {
    title: 'more executors than the limit',
    field: 'executors',
    task: (image, excess) => ({
      executors: Array.from({ length: excess.executors }, () => ({ image, command: ['true'] })),
    }),
  },
  {
    title: 'more tags than the limit',
    field: 'tags',
    task: (image, excess) => ({
      ...one(image),
      tags: Object.fromEntries(Array.from({ length: excess.tags }, (_, i) => [`t${i}`, ''])),
    }),
  },
  {
    title: 'more env entries in one executor than the limit',
    field: 'executors[0].env',
    task: (image, excess) =>
      one(image, {
        env: Object.fromEntries(Array.from({ length: excess.envEntries }, (_, i) => [`V${i}`, ''])),
      }),
  },
];

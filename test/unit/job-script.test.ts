import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planContainer, type StagedInput } from '../../src/apptainer/container-plan.js';
import { renderJobScript, type ContainerRuntime } from '../../src/apptainer/render-job-script.js';
import type { TaskRequest } from '../../src/tes/types.js';
import { expectGolden } from '../helpers/golden.js';
import { HOSTILE_TASK, TYPICAL_TASK } from '../fixtures/tasks.js';
import { writeHostRuntime, layOut } from '../helpers/host-runtime.js';

const WORK_ROOT = '/var/lib/tes-gateway/tasks';
const WORK = `${WORK_ROOT}/01jd0000000000000000000000`;
const APPTAINER: ContainerRuntime = { flavor: 'apptainer', executable: 'apptainer', extraArgs: [] };

/** `ownerRoot`: the task runs as its owner, whose job checks its `file://` inputs (Bind.owned). */
function staged(task: TaskRequest, ownerRoot?: string): StagedInput[] {
  return (task.inputs ?? []).map((input, index) => ({
    index,
    containerPath: input.path,
    hostPath: input.content !== undefined ? `${WORK}/inputs/${index}/content` : `/shared/input ${index}`,
    kind: input.type === 'DIRECTORY' ? 'dir' : 'file',
    ...(ownerRoot !== undefined && input.content === undefined ? { ownerRoot } : {}),
  }));
}

function render(task: TaskRequest, runtime = APPTAINER, gpus = false, ownerRoot?: string): string {
  const plan = planContainer(task, WORK, staged(task, ownerRoot), (i) =>
    i.includes('://') || i.startsWith('/') ? i : `docker://${i}`,
  );
  // Jobs run by the service account leave an end marker; those run as their owners cannot.
  const endMarker = ownerRoot === undefined ? `${WORK_ROOT}/.ends/01jd0000000000000000000000` : undefined;
  return renderJobScript({
    taskId: '01jd0000000000000000000000',
    workDir: WORK,
    runtime,
    plan,
    gpus,
    endMarker,
  });
}

function checkShell(script: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'job-script-'));
  const file = join(dir, 'job.sh');
  writeFileSync(file, script);
  let sc;
  try {
    execFileSync('bash', ['-n', file]);
    sc = spawnSync('shellcheck', ['--shell=bash', '--severity=style', file], { encoding: 'utf8' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (sc.error)
    throw new Error(`shellcheck is needed for this test (apt-get install shellcheck): ${sc.error.message}`);
  expect(sc.stdout + sc.stderr).toBe('');
  expect(sc.status).toBe(0);
}

const CASES: Array<[string, () => string]> = [
  ['typical.sh', () => render(TYPICAL_TASK)],
  ['hostile.sh', () => render(HOSTILE_TASK)],
  [
    'singularity-gpu.sh',
    () =>
      render(
        TYPICAL_TASK,
        { flavor: 'singularity', executable: '/opt/singularity/bin/singularity', extraArgs: ['--no-home'] },
        true,
      ),
  ],
  ['minimal.sh', () => render({ executors: [{ image: '/images/busybox.sif', command: ['echo', 'hello'] }] })],
  ['run-as-owner.sh', () => render(TYPICAL_TASK, APPTAINER, false, '/shared')],
  [
    'streams.sh',
    () =>
      render({
        volumes: ['/out'],
        executors: [
          { image: 'alpine', command: ['sh', '-c', 'echo hi'], stdout: '/out/o', stderr: '/tmp/e' },
          { image: 'alpine', command: ['cat'], stdin: '/out/o', stdout: '/out/copy' },
        ],
      }),
  ],
];

describe('renderJobScript', () => {
  it.each(CASES)('renders %s as its golden file', (name, make) => {
    expectGolden(`job-script/${name}`, make());
  });

  it.each(CASES)('renders %s as a script that passes bash -n and shellcheck', (_name, make) => {
    checkShell(make());
  });

  it("sets the system's PATH, unless the job has its user's login environment", () => {
    const plan = planContainer(TYPICAL_TASK, WORK, staged(TYPICAL_TASK), (i) => `docker://${i}`);
    const input = {
      taskId: '01jd0000000000000000000000',
      workDir: WORK,
      runtime: APPTAINER,
      plan,
      gpus: false,
    };
    expect(renderJobScript(input)).toMatch(/^export PATH=\/usr\/local\/sbin:.*:\/bin$/m);
    expect(renderJobScript({ ...input, loginEnvironment: true })).not.toMatch(/^export PATH=/m);
  });

  it('passes environment values through the runtime prefix of its flavor', () => {
    expect(render(TYPICAL_TASK)).toContain('APPTAINERENV_SAMPLE=NA12878 ');
    expect(
      render(TYPICAL_TASK, { flavor: 'singularity', executable: 'singularity', extraArgs: [] }),
    ).toContain('SINGULARITYENV_SAMPLE=NA12878 ');
  });

  it('refuses an env name that would be shell code, whatever validation ran before', () => {
    const task = (name: string) => ({
      executors: [{ image: 'alpine', command: ['true'], env: { [name]: 'x' } }],
    });
    expect(() => render(task('A;touch /tmp/owned'))).toThrow(
      'executors[0].env.A;touch /tmp/owned: must be a variable name',
    );
    expect(() => render(task('HOME'))).toThrow('executors[0].env.HOME: cannot be set');
    expect(render(task('OK_1'))).toContain('APPTAINERENV_OK_1=x ');
  });

  it('stops at a failing executor unless it ignores errors', () => {
    const script = render(TYPICAL_TASK);
    const [first, second] = script.split('# executor 1');
    expect(first).toContain('[ "$rc" -eq 0 ] || exit "$rc"');
    expect(second).not.toContain('|| exit "$rc"');
  });

  it('checks only paths in writable places: a read-only input as stdin is read as it is', () => {
    const script = render(HOSTILE_TASK);
    expect(script).toContain(`< '/shared/input 0' > exec-0/stdout`);
    expect(script).not.toContain("inside 'executors[0].stdin'");
    expect(script).toContain("inside 'executors[0].stderr'");
  });
});

/**
 * The script itself, run against a real task directory. The runtime stand-in runs each command on
 * the host with no container at all, so commands name host paths: `link` plays a task that plants a
 * symbolic link in its writable place.
 */
describe('a job script facing links the task made', () => {
  let root: string;
  let work: string;
  let canary: string;
  let canaryDir: string;
  let runtime: string;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'job-script-run-'));
    work = join(root, 'task');
    canary = join(root, 'canary.txt');
    canaryDir = join(root, 'canary-dir');
    writeFileSync(canary, 'canary\n');
    mkdirSync(canaryDir);
    writeFileSync(join(canaryDir, 'log'), 'canary log\n');
    runtime = writeHostRuntime(root);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  function run(task: TaskRequest): { status: number | null; systemError: string | undefined } {
    const plan = planContainer(task, work, []);
    layOut(plan);
    const script = renderJobScript({
      taskId: 't',
      workDir: work,
      runtime: { flavor: 'apptainer', executable: runtime, extraArgs: [] },
      plan,
      gpus: false,
    });
    writeFileSync(join(root, 'job.sh'), script);
    const result = spawnSync('bash', [join(root, 'job.sh')], { encoding: 'utf8' });
    const errorFile = join(work, 'system-error');
    return {
      status: result.status,
      systemError: existsSync(errorFile) ? readFileSync(errorFile, 'utf8').trim() : undefined,
    };
  }

  const link = (target: string, at: string) => ({ image: 'alpine', command: ['ln', '-s', target, at] });

  it('copies stdout and stderr into the writable place and keeps task files private', () => {
    const result = run({
      volumes: ['/out'],
      executors: [
        {
          image: 'alpine',
          command: ['sh', '-c', 'echo out; echo err >&2'],
          stdout: '/out/o',
          stderr: '/out/e',
        },
      ],
    });
    expect(result).toEqual({ status: 0, systemError: undefined });
    expect(readFileSync(join(work, 'mnt/out/o'), 'utf8')).toBe('out\n');
    expect(readFileSync(join(work, 'mnt/out/e'), 'utf8')).toBe('err\n');
    expect(statSync(join(work, 'exec-0/stdout')).mode & 0o777).toBe(0o600);
  });

  it('refuses to copy stdout through a link the executor left at its path', () => {
    const result = run({
      volumes: ['/out'],
      executors: [{ ...link(canary, join(work, 'mnt/out/o')), stdout: '/out/o' }],
    });
    expect(result.status).toBe(121);
    expect(result.systemError).toBe(
      `executors[0].stdout: /out/o resolves to ${canary}, outside the task's writable place /out; ` +
        'the gateway does not follow links a task makes',
    );
    expect(readFileSync(canary, 'utf8')).toBe('canary\n');
    expect(existsSync(join(work, 'job-end'))).toBe(true);
  });

  it('refuses a stdout below a directory link the executor made', () => {
    const result = run({
      volumes: ['/out'],
      // The gateway made /out/d for the stdout file; the task replaces it with a link.
      executors: [
        {
          image: 'alpine',
          command: ['sh', '-c', `rmdir ${work}/mnt/out/d && ln -s ${canaryDir} ${work}/mnt/out/d`],
          stdout: '/out/d/log',
        },
      ],
    });
    expect(result.status).toBe(121);
    expect(result.systemError).toContain(
      `executors[0].stdout: /out/d/log resolves to ${canaryDir}/log, outside`,
    );
    expect(readFileSync(join(canaryDir, 'log'), 'utf8')).toBe('canary log\n');
  });

  it('refuses a dangling link, which cp would follow to create a file outside', () => {
    const result = run({
      volumes: ['/out'],
      executors: [{ ...link(join(root, 'new.txt'), join(work, 'mnt/out/o')), stderr: '/out/o' }],
    });
    expect(result.status).toBe(121);
    expect(result.systemError).toContain(`executors[0].stderr: /out/o resolves to ${root}/new.txt, outside`);
    expect(existsSync(join(root, 'new.txt'))).toBe(false);
  });

  it('refuses to feed a later executor a host file through a link an earlier one planted', () => {
    const result = run({
      volumes: ['/out'],
      executors: [
        link(canary, join(work, 'mnt/out/in')),
        { image: 'alpine', command: ['cat'], stdin: '/out/in' },
      ],
    });
    expect(result.status).toBe(121);
    expect(result.systemError).toBe(
      `executors[1].stdin: /out/in resolves to ${canary}, outside the task's writable place /out; ` +
        'the gateway does not follow links a task makes',
    );
    expect(existsSync(join(work, 'exec-1/start'))).toBe(false);
  });

  it('reads a stdin that an earlier executor wrote, and follows a link that stays inside the place', () => {
    const result = run({
      volumes: ['/out'],
      executors: [
        {
          image: 'alpine',
          command: ['sh', '-c', `echo data > ${work}/mnt/out/real; ln -s real ${work}/mnt/out/in`],
        },
        { image: 'alpine', command: ['cat'], stdin: '/out/in', stdout: '/out/copy' },
      ],
    });
    expect(result).toEqual({ status: 0, systemError: undefined });
    expect(readFileSync(join(work, 'mnt/out/copy'), 'utf8')).toBe('data\n');
  });

  it('refuses a stdout path that is not a regular file', () => {
    const result = run({
      volumes: ['/out'],
      executors: [{ image: 'alpine', command: ['mkfifo', join(work, 'mnt/out/o')], stdout: '/out/o' }],
    });
    expect(result.status).toBe(121);
    expect(result.systemError).toBe('executors[0].stdout: /out/o is not a regular file');
  });
});

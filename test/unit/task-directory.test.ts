import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { planContainer, type LayoutEntry } from '../../src/apptainer/container-plan.js';
import { renderJobScript } from '../../src/apptainer/render-job-script.js';
import {
  firstExecutorStarted,
  readExecutorResults,
  readSystemError,
  readTail,
} from '../../src/compute/executor-results.js';
import { makeLayout, makeTaskDir } from '../../src/compute/task-dir.js';
import {
  arraysDirOf,
  endMarkerOf,
  endsDirOf,
  EXECUTOR_FILE,
  executorDir,
  executorFile,
  inputFile,
  TASK_FILE,
  taskDirOf,
  taskFile,
  WRITABLE_DIR,
} from '../../src/tes/task-directory.js';
import type { TaskRequest } from '../../src/tes/types.js';
import { writeHostRuntime } from '../helpers/host-runtime.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe('the task directory', () => {
  it('puts every task in its own folder of the work root, and arrays beside them', () => {
    const dir = taskDirOf('/work/root', '01jd');
    expect(dir).toBe('/work/root/01jd');
    expect(taskFile(dir, TASK_FILE.jobScript)).toBe('/work/root/01jd/job.sh');
    expect(executorFile(dir, 2, EXECUTOR_FILE.exitCode)).toBe('/work/root/01jd/exec-2/exit_code');
    expect(inputFile(dir, 1, 'content')).toBe('/work/root/01jd/inputs/1/content');
    expect(inputFile(dir, 1, 'data')).toBe('/work/root/01jd/inputs/1/data');
    expect(arraysDirOf(dir)).toBe('/work/root/.arrays');
    expect(endMarkerOf('/work/root', '01jd')).toBe('/work/root/.ends/01jd');
  });
});

/**
 * A rendered job script run for real against a task directory laid out as prepare-job lays it out.
 * The runtime stand-in runs each command on the host, without a container. What the script leaves
 * in the task directory (outside the executors' own writable places) must be exactly the files the
 * gateway's readers look for.
 */
describe('what the job script writes is what the gateway reads', () => {
  let root: string;
  let work: string;
  let runtime: string;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'task-directory-'));
    work = taskDirOf(root, 'task');
    runtime = writeHostRuntime(root);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  async function prepare(task: TaskRequest, executable = runtime): Promise<void> {
    await makeTaskDir(work);
    const plan = planContainer(task, work, []);
    const execDirs = plan.executors.map((ex): LayoutEntry => ({
      path: executorDir(work, ex.index),
      kind: 'dir',
      base: work,
    }));
    await makeLayout([...plan.layout, ...execDirs]);
    mkdirSync(endsDirOf(root), { recursive: true });
    const script = renderJobScript({
      taskId: 'task',
      workDir: work,
      runtime: { flavor: 'apptainer', executable, extraArgs: [] },
      plan,
      gpus: false,
      endMarker: endMarkerOf(root, 'task'),
    });
    writeFileSync(taskFile(work, TASK_FILE.jobScript), script, { mode: 0o700 });
  }

  function runScript(): number | null {
    return spawnSync('bash', [taskFile(work, TASK_FILE.jobScript)], { cwd: work, encoding: 'utf8' }).status;
  }

  /** Every file below the task directory but outside the executors' writable places. */
  function filesWritten(): string[] {
    const places = new Set<string>(Object.values(WRITABLE_DIR));
    const out: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, e.name);
        if (dir === work && places.has(e.name)) continue;
        if (e.isDirectory()) walk(path);
        else out.push(relative(work, path));
      }
    };
    walk(work);
    return out.sort();
  }

  const TASK: TaskRequest = {
    executors: [
      { image: 'alpine', command: ['sh', '-c', 'echo out; echo err >&2'] },
      { image: 'alpine', command: ['sh', '-c', 'exit 3'], ignore_error: true },
      { image: 'alpine', command: ['true'] },
    ],
  };

  it('records each executor and the end of the job where the readers look', async () => {
    await prepare(TASK);
    expect(existsSync(endMarkerOf(root, 'task'))).toBe(false);
    expect(await firstExecutorStarted(work)).toBe(false);

    expect(runScript()).toBe(0);

    const results = await readExecutorResults(work, [false, true, false]);
    expect(
      results.map(({ startTime, endTime, ...r }) => [r, ISO.test(startTime!), ISO.test(endTime!)]),
    ).toEqual([
      [{ index: 0, started: true, exitCode: 0, ignored: false }, true, true],
      [{ index: 1, started: true, exitCode: 3, ignored: true }, true, true],
      [{ index: 2, started: true, exitCode: 0, ignored: false }, true, true],
    ]);
    expect(await firstExecutorStarted(work)).toBe(true);
    expect(existsSync(endMarkerOf(root, 'task'))).toBe(true);
    expect(await readSystemError(work)).toBeUndefined();
    expect(await readTail(executorFile(work, 0, EXECUTOR_FILE.stdout), 100)).toBe('out\n');
    expect(await readTail(executorFile(work, 0, EXECUTOR_FILE.stderr), 100)).toBe('err\n');

    const read = [
      ...[0, 1, 2].flatMap((i) => Object.values(EXECUTOR_FILE).map((f) => executorFile(work, i, f))),
      taskFile(work, TASK_FILE.jobEnd),
    ];
    const written = [...filesWritten()].filter((f) => f !== TASK_FILE.jobScript);
    expect(written).toEqual(read.map((p) => relative(work, p)).sort());
  });

  it('leaves a system error the reader returns, and no executor started, when the runtime is missing', async () => {
    await prepare(TASK, join(root, 'no-such-runtime'));

    expect(runScript()).toBe(127);

    expect(await readSystemError(work)).toBe(
      `the container runtime ${join(root, 'no-such-runtime')} was not found on ${spawnSync('hostname', { encoding: 'utf8' }).stdout.trim()}; install it or set container.executable`,
    );
    expect(existsSync(endMarkerOf(root, 'task'))).toBe(true);
    expect((await readExecutorResults(work, [false, false, false])).map((r) => r.started)).toEqual([
      false,
      false,
      false,
    ]);
    expect(filesWritten().filter((f) => f !== TASK_FILE.jobScript)).toEqual(
      [TASK_FILE.jobEnd, TASK_FILE.systemError].sort(),
    );
  });

  it('clears what an earlier run of the same job left, so a requeued job does not pass it for its own', async () => {
    await prepare(TASK);
    writeFileSync(taskFile(work, TASK_FILE.systemError), 'an earlier run failed\n');
    writeFileSync(executorFile(work, 2, EXECUTOR_FILE.exitCode), '9\n');

    expect(runScript()).toBe(0);

    expect(await readSystemError(work)).toBeUndefined();
    expect((await readExecutorResults(work, [false, true, false]))[2]!.exitCode).toBe(0);
  });
});

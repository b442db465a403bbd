import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { HOSTILE_STRINGS } from '../fixtures/hostile.js';
import { submittedCommand } from '../helpers/sbatch-command.js';
import {
  createTask,
  FAKE_APPTAINER,
  getTask,
  requireSlurm,
  startTestGateway,
  testImages,
  waitFor,
  type TestGateway,
} from '../helpers/gateway.js';

/**
 * End to end on the real single-node Slurm: tasks go in through the HTTP API, run as Slurm jobs whose
 * executors run in the test Apptainer stand-in, and come back through the API. All scenarios are
 * started together, so the suite takes about as long as its slowest case (the time limit, ~90 s).
 */
jest.setTimeout(300_000);

let gw: TestGateway;
let image: string;
const ids: Record<string, string> = {};
const ENV_VALUE = HOSTILE_STRINGS.filter((s) => s !== '').join(' | ');

const exec = (command: string[], extra: Record<string, unknown> = {}) => ({ image, command, ...extra });
const sh = (script: string, extra: Record<string, unknown> = {}) => exec(['sh', '-c', script], extra);

beforeAll(async () => {
  requireSlurm();
  image = testImages().busybox;
  gw = await startTestGateway('slurm', {
    backend: 'slurm',
    container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
    slurm: { defaultPartition: 'debug', missingGraceMs: 60_000 },
  });
  const scenarios: Record<string, unknown> = {
    ok: {
      name: 'ok task (1)',
      executors: [
        sh('echo hello; echo oops >&2; printf %s "$GREETING" > /tmp/g; cat /tmp/g', {
          env: { GREETING: ENV_VALUE },
        }),
      ],
    },
    exit3: { executors: [sh('exit 3')] },
    stopAfterFail: { executors: [sh('exit 2'), sh('echo second')] },
    ignoreError: { executors: [sh('exit 2', { ignore_error: true }), sh('echo second')] },
    streams: {
      inputs: [{ path: '/in/data.txt', content: 'line from content input\n' }],
      volumes: ['/shared'],
      executors: [
        exec(['cat'], { stdin: '/in/data.txt', stdout: '/shared/copy.txt', stderr: '/shared/err.txt' }),
        exec(['cat', '/shared/copy.txt'], { workdir: '/work' }),
        sh('pwd; touch /in/data.txt 2>/dev/null && echo writable || echo read-only', { workdir: '/work' }),
      ],
    },
    oom: {
      resources: { ram_gb: 0.1 },
      executors: [exec(['bash', '-c', 'x=$(head -c 400000000 /dev/zero | tr "\\0" a); echo ${#x}'])],
    },
    timeout: { resources: { backend_parameters: { time_limit: '1' } }, executors: [exec(['sleep', '600'])] },
    cancelRunning: { executors: [exec(['sleep', '600'])] },
    behindBack: { executors: [exec(['sleep', '600'])] },
    rejected: {
      resources: { backend_parameters: { partition: 'nonexistent' } },
      executors: [exec(['true'])],
    },
    impossible: {
      resources: { cpu_cores: 64, backend_parameters: { partition: 'small' } },
      executors: [exec(['true'])],
    },
  };
  for (const [name, body] of Object.entries(scenarios)) ids[name] = await createTask(gw.base, body);
});

afterAll(async () => {
  const running = Object.values(ids);
  await Promise.all(running.map((id) => fetch(`${gw.base}/tasks/${id}:cancel`, { method: 'POST' })));
  await gw?.close();
});

const execLogs = (task: any) =>
  task.logs[0].logs as Array<{ exit_code: number; stdout: string; stderr: string }>;
const systemLogs = (task: any) => (task.logs[0].system_logs ?? []).join('\n');

describe('tasks on the real Slurm cluster', () => {
  it('runs a task to COMPLETE with stdout, stderr, env and job metadata', async () => {
    const task = await waitFor(gw.base, ids.ok!);
    expect(task.state).toBe('COMPLETE');
    const [log] = execLogs(task);
    expect(log).toMatchObject({ exit_code: 0, stderr: 'oops\n' });
    expect(log!.stdout).toBe(`hello\n${ENV_VALUE}`);
    expect(task.logs[0].metadata).toMatchObject({
      backend: 'slurm',
      job_id: expect.stringMatching(/^\d+(_\d+)?$/),
      node: expect.any(String),
    });
    expect(task.logs[0].start_time).toEqual(expect.any(String));
    expect(task.logs[0].end_time).toEqual(expect.any(String));
    const dir = join(gw.workRoot, ids.ok!);
    // Alone, the task's own name and comment; in an array, the array's (tasks' comments stay out).
    const { command, alone } = submittedCommand(gw.workRoot, ids.ok!);
    expect(command).toMatch(
      alone
        ? /^sbatch --parsable --job-name=tes_\w+ --comment=ok_task_1 --export=ALL /
        : /^sbatch --parsable --export=ALL .* --job-name=tes_array_[0-9a-f]{12} --comment=tes-array --array=0-\d+ /,
    );
    expect(task.logs[0].metadata.job_id.includes('_')).toBe(!alone);
    expect(existsSync(join(dir, 'job.sh'))).toBe(true);
  });

  it('adds the job’s peak memory from accounting after the task has ended', async () => {
    await waitFor(gw.base, ids.ok!);
    let metadata: Record<string, string> = {};
    for (let i = 0; i < 100 && metadata.max_rss_bytes === undefined; i++) {
      metadata = (await getTask(gw.base, ids.ok!)).logs[0].metadata;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(metadata.max_rss_bytes).toMatch(/^[1-9]\d*$/);
  });

  it('ends EXECUTOR_ERROR with the exit code when an executor exits 3', async () => {
    const task = await waitFor(gw.base, ids.exit3!);
    expect(task.state).toBe('EXECUTOR_ERROR');
    expect(execLogs(task)[0]!.exit_code).toBe(3);
    expect(systemLogs(task)).toContain('executor 0 exited 3');
  });

  it('does not run the executors after a failure', async () => {
    const task = await waitFor(gw.base, ids.stopAfterFail!);
    expect(task.state).toBe('EXECUTOR_ERROR');
    expect(execLogs(task)).toHaveLength(1);
  });

  it('runs on after a failure the executor ignores', async () => {
    const task = await waitFor(gw.base, ids.ignoreError!);
    expect(task.state).toBe('COMPLETE');
    expect(execLogs(task).map((l) => l.exit_code)).toEqual([2, 0]);
    expect(execLogs(task)[1]!.stdout).toBe('second\n');
    expect(systemLogs(task)).toContain('executor 0 exited 2; ignored because ignore_error is set');
  });

  it('honours stdin, stdout and workdir inside the container, with read-only inputs', async () => {
    const task = await waitFor(gw.base, ids.streams!);
    expect(task.state).toBe('COMPLETE');
    const logs = execLogs(task);
    expect(logs[0]!.stdout).toBe('line from content input\n');
    expect(logs[1]!.stdout).toBe('line from content input\n');
    expect(logs[2]!.stdout).toBe('/work\nread-only\n');
  });

  it('ends EXECUTOR_ERROR when the task runs out of memory', async () => {
    const task = await waitFor(gw.base, ids.oom!);
    expect(task.state).toBe('EXECUTOR_ERROR');
    expect(systemLogs(task)).toMatch(/OUT_OF_MEMORY.*ran out of memory/);
  });

  it('ends EXECUTOR_ERROR when the task reaches its time limit', async () => {
    const task = await waitFor(gw.base, ids.timeout!, undefined, 240_000);
    expect(task.state).toBe('EXECUTOR_ERROR');
    expect(systemLogs(task)).toMatch(/TIMEOUT.*time limit/);
  });

  it('cancels a running task', async () => {
    await waitFor(gw.base, ids.cancelRunning!, ['RUNNING']);
    const res = await fetch(`${gw.base}/tasks/${ids.cancelRunning}:cancel`, { method: 'POST' });
    expect(res.status).toBe(200);
    const task = await waitFor(gw.base, ids.cancelRunning!, undefined, 60_000);
    expect(task.state).toBe('CANCELED');
    const jobId = task.logs[0].metadata.job_id;
    const state = execFileSync('sacct', ['-n', '-X', '-P', '-o', 'State', '-j', jobId], { encoding: 'utf8' });
    expect(state).toMatch(/^CANCELLED/);
  });

  it('ends SYSTEM_ERROR when the job is cancelled behind the gateway’s back', async () => {
    const running = await waitFor(gw.base, ids.behindBack!, ['RUNNING']);
    // Until the job ends, its id is in the system log line its submission wrote.
    const submitted = /submitted as slurm job (\S+)/.exec(systemLogs(running));
    execFileSync('scancel', [submitted![1]!]);
    const task = await waitFor(gw.base, ids.behindBack!, undefined, 60_000);
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(systemLogs(task)).toMatch(/cancelled outside the gateway \(by uid 0\)/);
  });

  it('ends SYSTEM_ERROR with sbatch’s message when Slurm rejects the job', async () => {
    const task = await waitFor(gw.base, ids.rejected!);
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(systemLogs(task)).toMatch(
      /Slurm refused the job of task \w+: sbatch: error: .*invalid partition/i,
    );
    const impossible = await waitFor(gw.base, ids.impossible!);
    expect(impossible.state).toBe('SYSTEM_ERROR');
    expect(systemLogs(impossible)).toMatch(/More processors requested than permitted/);
  });

  it('answers reads while tasks run', async () => {
    const res = await getTask(gw.base, ids.ok!, 'MINIMAL');
    expect(Object.keys(res).sort()).toEqual(['id', 'state']);
  });
});

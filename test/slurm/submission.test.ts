import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { CommandError } from '../../src/errors.js';
import { prepareJob } from '../../src/queue/processors/prepare-job.js';
import { launch } from '../../src/queue/processors/submit.js';
import type { ProcessorContext } from '../../src/queue/processors/context.js';
import { containerRuntime } from '../../src/gateway.js';
import { DirectImages } from '../../src/apptainer/images.js';
import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { jobNameFor } from '../../src/compute/slurm/sbatch-args.js';
import type { SlurmDriver } from '../../src/compute/slurm/slurm-driver.js';
import { submittedCommand } from '../helpers/sbatch-command.js';
import {
  createTask,
  FAKE_APPTAINER,
  requireSlurm,
  startTestGateway,
  testImages,
  waitFor,
  type TestGateway,
} from '../helpers/gateway.js';

/** Submission on the real cluster: exactly one job per task, cancels of pending jobs, a missing runtime. */
jest.setTimeout(180_000);

let image: string;
const slurmConfig = (extra: Record<string, unknown> = {}) => ({
  backend: 'slurm',
  container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
  slurm: { defaultPartition: 'debug', ...extra },
});

function jobsNamed(taskId: string): string[] {
  const out = execFileSync('squeue', ['-h', '-t', 'all', `--name=${jobNameFor(taskId)}`, '-o', '%i'], {
    encoding: 'utf8',
  });
  return out.split('\n').filter(Boolean);
}

beforeAll(() => {
  requireSlurm();
  image = testImages().busybox;
});

describe('submission', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });

  it('never makes a second job when sbatch times out after submitting', async () => {
    gw = await startTestGateway('sbatch-timeout', slurmConfig());
    const driver = gw.gateway.driver;
    const realSubmit = driver.submit.bind(driver);
    let calls = 0;
    driver.submit = async (request) => {
      calls++;
      await realSubmit(request);
      throw new CommandError(
        'sbatch',
        request.args,
        undefined,
        'sbatch: error: Socket timed out on send/recv operation',
        true,
        'failed to submit',
      );
    };
    const id = await createTask(gw.base, { executors: [{ image, command: ['echo', 'once'] }] });
    const task = await waitFor(gw.base, id);
    expect(task.state).toBe('COMPLETE');
    expect(calls).toBe(1);
    expect(jobsNamed(id)).toHaveLength(1);
  });

  it('submits a burst of like tasks as one job array', async () => {
    gw = await startTestGateway('array', slurmConfig());
    const body = { executors: [{ image, command: ['sh', '-c', 'echo $((6 * 7))'] }] };
    const ids = await Promise.all(Array.from({ length: 8 }, () => createTask(gw!.base, body)));
    const tasks = await Promise.all(ids.map((id) => waitFor(gw!.base, id)));
    expect(tasks.map((t) => t.state)).toEqual(Array(8).fill('COMPLETE'));
    expect(tasks.map((t) => t.logs[0].logs[0].stdout)).toEqual(Array(8).fill('42\n'));
    const jobIds: string[] = tasks.map((t) => t.logs[0].metadata.job_id);
    const bases = new Set(jobIds.map((j) => j.split('_')[0]));
    expect(bases.size).toBeLessThan(8);
    expect(jobIds.some((j) => j.includes('_'))).toBe(true);
  });

  it('never makes a second array when the sbatch of an array times out after submitting', async () => {
    gw = await startTestGateway('array-timeout', slurmConfig());
    const cli = (gw.gateway.driver as SlurmDriver).cli;
    const realRun = cli.run.bind(cli);
    let arrays = 0;
    cli.run = async (tool, args, what) => {
      const out = await realRun(tool, args, what);
      if (tool === 'sbatch' && args.some((a) => a.startsWith('--array=')) && arrays++ === 0) {
        throw new CommandError(
          'sbatch',
          args,
          undefined,
          'sbatch: error: Socket timed out on send/recv operation',
          true,
          what,
        );
      }
      return out;
    };
    const body = { executors: [{ image, command: ['true'] }] };
    const ids = await Promise.all(Array.from({ length: 5 }, () => createTask(gw!.base, body)));
    const tasks = await Promise.all(ids.map((id) => waitFor(gw!.base, id)));
    expect(tasks.map((t) => t.state)).toEqual(Array(5).fill('COMPLETE'));
    expect(arrays).toBe(1);
    const jobIds = new Set(tasks.map((t) => t.logs[0].metadata.job_id));
    expect(jobIds.size).toBe(5);
  });

  it('never makes a second job when a worker dies between sbatch and the Redis write', async () => {
    // An API without workers stores and enqueues; a "worker" submits and dies before recording.
    const api = await startTestGateway('crash', slurmConfig(), { roles: { api: true, worker: false } });
    const id = await createTask(api.base, { executors: [{ image, command: ['echo', 'survived'] }] });
    const record = (await api.gateway.store.get(id))!;
    const prepared = await prepareJob(record, {
      workRoot: api.workRoot,
      runtime: containerRuntime(api.gateway.config),
      policy: api.gateway.config.slurm,
      staging: {
        roots: new AllowedRoots([]),
        fetchers: [],
        parallel: 1,
        limits: { maxDownloadBytes: 1024, maxListedObjects: 10 },
      },
      images: new DirectImages(),
    });
    const { jobId: orphan } = await launch(
      { driver: api.gateway.driver } as ProcessorContext,
      record,
      prepared,
      false,
    );
    // A new worker on the same Redis and work root picks the queued submission up.
    gw = await startTestGateway('crash', slurmConfig(), { prefix: api.prefix, workRoot: api.workRoot });
    const task = await waitFor(gw.base, id);
    expect(task.state).toBe('COMPLETE');
    expect(task.logs[0].metadata.job_id).toBe(orphan);
    expect(jobsNamed(id)).toEqual([orphan]);
    expect(execLogsOf(task)[0]!.stdout).toBe('survived\n');
    await api.gateway.close();
  });

  it('cancels a task whose job is pending in Slurm, with the pending reason in the logs', async () => {
    gw = await startTestGateway('pending', slurmConfig({ extraArgs: ['--hold'] }));
    const id = await createTask(gw.base, { executors: [{ image, command: ['true'] }] });
    // Held, the task says so, and who can release it how.
    const pending = await waitForLog(
      gw,
      id,
      /JobHeldUser; held by the job's user: it starts once released \(scontrol release \d+\), or cancel the task/,
    );
    expect(pending.state).toBe('QUEUED');
    const res = await fetch(`${gw.base}/tasks/${id}:cancel`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: 'null',
    });
    expect(res.status).toBe(200);
    const task = await waitFor(gw.base, id, undefined, 60_000);
    expect(task.state).toBe('CANCELED');
  });

  it('runs tasks asking for disk on nodes without TmpDisk, noting the request it dropped (auto)', async () => {
    // This cluster's nodes advertise TmpDisk 0, like many: with --tmp, Slurm would refuse every job.
    gw = await startTestGateway('disk-auto', slurmConfig());
    const body = { resources: { disk_gb: 2 }, executors: [{ image, command: ['echo', 'disk'] }] };
    const ids = await Promise.all(Array.from({ length: 3 }, () => createTask(gw!.base, body)));
    const tasks = await Promise.all(ids.map((id) => waitFor(gw!.base, id)));
    expect(tasks.map((t) => t.state)).toEqual(Array(3).fill('COMPLETE'));
    for (const task of tasks) {
      expect(task.logs[0].system_logs).toContain(
        'resources.disk_gb: 2 GiB not requested from Slurm: nodes of partition debug advertise 0 MB of TmpDisk',
      );
      expect(submittedCommand(gw.workRoot, task.id).command).not.toContain('--tmp');
    }
  });

  it("ends a task asking for disk SYSTEM_ERROR with Slurm's refusal when --tmp is always passed (tmp)", async () => {
    gw = await startTestGateway('disk-tmp', slurmConfig({ diskRequests: 'tmp' }));
    const id = await createTask(gw.base, {
      resources: { disk_gb: 2 },
      executors: [{ image, command: ['true'] }],
    });
    const task = await waitFor(gw.base, id);
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(task.logs[0].system_logs.join('\n')).toMatch(/Temporary disk specification can not be satisfied/);
  });

  it('refuses a disk request no node can satisfy when the site says so, without submitting', async () => {
    gw = await startTestGateway('disk-refuse', slurmConfig({ unsatisfiableDisk: 'refuse' }));
    const id = await createTask(gw.base, {
      resources: { disk_gb: 2 },
      executors: [{ image, command: ['true'] }],
    });
    const task = await waitFor(gw.base, id);
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(task.logs[0].system_logs).toContain(
      'the task could not be submitted: resources.disk_gb: 2 GiB cannot be requested from Slurm: nodes of partition debug advertise 0 MB of TmpDisk',
    );
    expect(jobsNamed(id)).toEqual([]);
  });

  it('takes the task of a job Slurm requeues back to QUEUED, then runs it to the end', async () => {
    gw = await startTestGateway('requeue', slurmConfig());
    // The first run waits to be requeued; the second, which finds the mark the first left in the
    // task's volume, ends at once.
    const id = await createTask(gw.base, {
      volumes: ['/vol'],
      executors: [
        {
          image,
          command: ['sh', '-c', 'if [ -e /vol/ran ]; then echo done; else touch /vol/ran; sleep 120; fi'],
        },
      ],
    });
    await waitFor(gw.base, id, ['RUNNING'], 60_000);
    const [jobId] = jobsNamed(id);
    execFileSync('scontrol', ['requeue', jobId!]);
    const queued = await waitFor(gw.base, id, ['QUEUED'], 30_000);
    expect(queued.logs[0].system_logs.at(-1)).toMatch(
      new RegExp(`^Slurm requeued job ${jobId}: now (REQUEUED|PENDING)`),
    );
    // Slurm holds a requeued job back for about two minutes (BeginTime); the test lets it go at once.
    await waitForLog(gw, id, /BeginTime/);
    execFileSync('scontrol', ['update', `JobId=${jobId}`, 'StartTime=now']);
    const task = await waitFor(gw.base, id);
    expect(task.state).toBe('COMPLETE');
    expect(execLogsOf(task)[0]!.stdout).toBe('done\n');
    expect(task.logs[0].metadata.job_id).toBe(jobId);
  });

  it('fails the task with a clear SYSTEM_ERROR when the container runtime is missing', async () => {
    gw = await startTestGateway('no-runtime', {
      ...slurmConfig(),
      container: { runtime: 'apptainer', executable: '/nonexistent/apptainer' },
    });
    const id = await createTask(gw.base, { executors: [{ image, command: ['true'] }] });
    const task = await waitFor(gw.base, id);
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(task.logs[0].system_logs.join('\n')).toMatch(
      /the container runtime \/nonexistent\/apptainer was not found on \S+/,
    );
  });
});

function execLogsOf(task: any): Array<{ stdout: string }> {
  return task.logs[0].logs;
}

async function waitForLog(gw: TestGateway, id: string, pattern: RegExp): Promise<any> {
  for (let i = 0; i < 150; i++) {
    const res = await fetch(`${gw.base}/tasks/${id}?view=FULL`);
    const task = (await res.json()) as any;
    if ((task.logs?.[0]?.system_logs ?? []).some((l: string) => pattern.test(l))) return task;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`task ${id} never logged ${pattern}`);
}

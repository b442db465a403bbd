import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { DirectImages } from '../../src/apptainer/images.js';
import { jobNameFor } from '../../src/compute/slurm/sbatch-args.js';
import { SlurmDriver } from '../../src/compute/slurm/slurm-driver.js';
import { parseSubmitMarker, renderSubmitMarker } from '../../src/compute/submit-marker.js';
import { containerRuntime } from '../../src/gateway.js';
import { createLogger } from '../../src/logger.js';
import type { ProcessorContext } from '../../src/queue/processors/context.js';
import { prepareJob, type PrepareDeps } from '../../src/queue/processors/prepare-job.js';
import { launch, processSubmit } from '../../src/queue/processors/submit.js';
import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { TaskLease } from '../../src/store/task-lease.js';
import { TASK_FILE, taskFile } from '../../src/tes/task-directory.js';
import {
  createTask,
  FAKE_APPTAINER,
  requireSlurm,
  startTestGateway,
  testImages,
  waitFor,
  type TestGateway,
} from '../helpers/gateway.js';
import { connect } from '../helpers/redis.js';
import { submittedCommand } from '../helpers/sbatch-command.js';

/**
 * The windows of submission on the real cluster: a retry that adopts a job, two workers on one
 * task, a stale array marker, another user's job with the task's name, a cancel during submission
 * whose scancel fails. Jobs are submitted held (`--hold`) so that none runs; every one is cancelled.
 */
jest.setTimeout(120_000);

let image: string;
const slurmConfig = (extra: Record<string, unknown> = {}) => ({
  backend: 'slurm',
  container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
  slurm: { defaultPartition: 'debug', extraArgs: ['--hold'], ...extra },
});

/** Every job carrying the task's name, of any user, with its state: `<id> <state> <user>`. */
function jobsNamed(taskId: string): string[] {
  const out = execFileSync('squeue', ['-h', '-t', 'all', `--name=${jobNameFor(taskId)}`, '-o', '%i %T %u'], {
    encoding: 'utf8',
  });
  return out.split('\n').filter(Boolean);
}

function cancelNamed(taskId: string): void {
  execFileSync('scancel', [`--name=${jobNameFor(taskId)}`]);
}

function prepareDeps(gw: TestGateway): PrepareDeps {
  return {
    workRoot: gw.workRoot,
    runtime: containerRuntime(gw.gateway.config),
    policy: gw.gateway.config.slurm,
    staging: {
      roots: new AllowedRoots([]),
      fetchers: [],
      parallel: 1,
      limits: { maxDownloadBytes: 1024, maxListedObjects: 10 },
    },
    images: new DirectImages(),
  };
}

/** What a worker of `gw` would use, with a submission lease on the gateway's Redis. */
function workerContext(gw: TestGateway, redis: ReturnType<typeof connect>): ProcessorContext {
  return {
    store: gw.gateway.store,
    driver: gw.gateway.driver,
    queues: gw.gateway.queues,
    prepare: prepareDeps(gw),
    logger: createLogger('silent'),
    taskLease: (work: string, taskId: string) =>
      new TaskLease(redis, gw.gateway.store.keys.lock(`${work}:${taskId}`), 30_000),
  } as unknown as ProcessorContext;
}

beforeAll(() => {
  requireSlurm();
  image = testImages().busybox;
});

/** A driver of its own that gathers tasks submitted within 20 ms into one array. */
function arrayDriver(): SlurmDriver {
  return new SlurmDriver({
    timeoutMs: 10_000,
    maxConcurrentCalls: 2,
    sacctChunkSize: 100,
    arrayWindowMs: 20,
    maxArraySize: 10,
  });
}

describe('submission windows', () => {
  const redis = connect();
  let gw: TestGateway | undefined;
  const tasks: string[] = [];
  afterEach(async () => {
    for (const id of tasks.splice(0)) cancelNamed(id);
    await gw?.close();
    gw = undefined;
  });
  afterAll(() => redis.disconnect());

  /** A gateway without workers: the test drives submission itself. */
  async function apiOnly(name: string, extra: Record<string, unknown> = {}): Promise<TestGateway> {
    gw = await startTestGateway(name, slurmConfig(extra), { roles: { api: true, worker: false } });
    return gw;
  }

  async function newTask(g: TestGateway): Promise<string> {
    const id = await createTask(g.base, { executors: [{ image, command: ['true'] }] });
    tasks.push(id);
    return id;
  }

  it('adopts the job an earlier attempt made without preparing the task again', async () => {
    const g = await apiOnly('adopt');
    const id = await newTask(g);
    const record = (await g.gateway.store.get(id))!;
    const prepared = await prepareJob(record, prepareDeps(g));
    // A note of the first preparation (a clamped request, say) reaches the logs through the adoption.
    prepared.warnings.push('resources.cpu_cores asks for 64 CPUs: clamped to 4');
    const { jobId: orphan } = await launch(
      { driver: g.gateway.driver } as ProcessorContext,
      record,
      prepared,
      false,
    );
    const script = taskFile(join(g.workRoot, id), TASK_FILE.jobScript);
    const before = statSync(script).mtimeMs;
    await new Promise((r) => setTimeout(r, 50));
    await processSubmit(id, { number: 2, of: 8 }, workerContext(g, redis));
    const adopted = (await g.gateway.store.get(id))!;
    expect(adopted.run).toMatchObject({ jobId: orphan, jobName: jobNameFor(id) });
    expect(adopted.logs?.[0]?.system_logs).toEqual(
      expect.arrayContaining([
        'resources.cpu_cores asks for 64 CPUs: clamped to 4',
        `submitted as slurm job ${orphan}`,
      ]),
    );
    expect(statSync(script).mtimeMs).toBe(before);
    expect(jobsNamed(id)).toHaveLength(1);
  });

  it('records no job over another worker once its lease went between its check and the write', async () => {
    const g = await apiOnly('fenced', { arrayWindowMs: 0 });
    const id = await newTask(g);
    const store = g.gateway.store;
    const leaseKey = store.keys.lock(`submit:${id}`);
    // Just before this worker records its job, its lease has gone to another worker (this one was
    // paused past the lease), which recorded a job of its own.
    let overtaken = false;
    const slowStore = Object.create(store) as typeof store;
    slowStore.transition = async (taskId, to, options) => {
      if (!overtaken && options?.job) {
        overtaken = true;
        await redis.set(leaseKey, 'another worker', 'PX', 1500);
        await store.transition(id, 'QUEUED', {
          from: ['QUEUED'],
          run: { jobId: 'job-of-another-worker' },
          job: 'job-of-another-worker',
        });
      }
      return store.transition(taskId, to, options);
    };
    await processSubmit(id, { number: 1, of: 8 }, { ...workerContext(g, redis), store: slowStore });
    expect(overtaken).toBe(true);
    expect((await store.get(id))!.run?.jobId).toBe('job-of-another-worker');
    // Its own job is not the task's: it goes through the cancel queue.
    const ownJob = jobsNamed(id)[0]!.split(' ')[0]!;
    const cancel = await g.gateway.queues.queue('cancel').getJob(`cancel-${id}`);
    expect(cancel?.data).toEqual({ taskId: id, jobId: ownJob });
  });

  it('makes exactly one job when two workers submit the same task at once', async () => {
    const g = await apiOnly('race', { arrayWindowMs: 0 });
    const id = await newTask(g);
    const releases = jest.spyOn(TaskLease.prototype, 'release');
    try {
      await Promise.all([
        processSubmit(id, { number: 1, of: 8 }, workerContext(g, redis)),
        processSubmit(id, { number: 1, of: 8 }, workerContext(g, redis)),
      ]);
      // The worker that recorded the job freed its lease with that write; the other frees its own.
      expect(releases).toHaveBeenCalledTimes(1);
    } finally {
      releases.mockRestore();
    }
    const jobs = jobsNamed(id);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.split(' ')[0]).toBe((await g.gateway.store.get(id))!.run?.jobId);
    expect(await redis.exists(g.gateway.store.keys.lock(`submit:${id}`))).toBe(0);
  });

  it("looks a task up by its own name when an older gateway's array marker is older than its last attempt", async () => {
    const g = await apiOnly('stale-array', { arrayWindowMs: 0 });
    const id = await newTask(g);
    const record = (await g.gateway.store.get(id))!;
    const prepared = await prepareJob(record, prepareDeps(g));
    // An array submission that failed left its marker; the next attempt went alone.
    writeFileSync(join(prepared.workDir, TASK_FILE.arrayElement), 'tes_array_0badc0ffee00 3\n');
    await new Promise((r) => setTimeout(r, 50));
    const job = await launch({ driver: g.gateway.driver } as ProcessorContext, record, prepared, true);
    expect(job.jobName).toBe(jobNameFor(id));
    const found = await g.gateway.driver.findJob(id, new Date(record.creationTime), prepared.workDir);
    expect(found).toEqual(job);
  });

  it("finds an array element again by the array line in its task's submit marker", async () => {
    const driver = arrayDriver();
    const root = mkdtempSync('/var/tmp/tesgw-array-marker-');
    const since = new Date();
    try {
      const dirs = [join(root, 'a'), join(root, 'b')];
      const jobs = await Promise.all(
        dirs.map((dir, i) => {
          mkdirSync(dir);
          // An earlier attempt of task a went alone: its command is not what runs now.
          if (i === 0) writeFileSync(taskFile(dir, TASK_FILE.sbatchCommand), 'sbatch --parsable /bin/true\n');
          return driver.submit({
            taskId: `t${i}`,
            workDir: dir,
            ledgerDir: dir,
            args: ['--parsable', '--hold', `--chdir=${dir}`, '--output=/dev/null', '/bin/true'],
            since,
            retried: i === 0,
            marker: renderSubmitMarker(since, []),
          });
        }),
      );
      expect(jobs[1]!.jobId).toBe(`${jobs[0]!.jobId.split('_')[0]}_1`);
      for (const [i, dir] of dirs.entries()) {
        const marker = parseSubmitMarker(readFileSync(taskFile(dir, TASK_FILE.submitAttempted), 'utf8'));
        expect(marker.array?.index).toBe(i);
        expect(jobs[i]!.jobName).toBe(marker.array?.name);
        expect(await driver.findJob(`t${i}`, since, dir)).toEqual(jobs[i]);
        expect(submittedCommand(root, basename(dir))).toEqual({
          command: expect.stringMatching(/^sbatch --parsable --hold --job-name=tes_array_\w+ .*--array=0-1 /),
          alone: false,
        });
      }
    } finally {
      const array = parseSubmitMarker(
        readFileSync(taskFile(join(root, 'a'), TASK_FILE.submitAttempted), 'utf8'),
      ).array;
      if (array) execFileSync('scancel', [`--name=${array.name}`]);
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("drops the array line from the tasks' submit markers when Slurm refuses their array", async () => {
    const driver = arrayDriver();
    const root = mkdtempSync('/var/tmp/tesgw-refused-array-');
    try {
      const dirs = [join(root, 'a'), join(root, 'b')];
      const submits = dirs.map((dir, i) => {
        mkdirSync(dir);
        return driver.submit({
          taskId: `t${i}`,
          workDir: dir,
          ledgerDir: dir,
          args: ['--partition=no_such_partition', '--hold', `--chdir=${dir}`, '/bin/true'],
          since: new Date(),
          marker: renderSubmitMarker(new Date(), ['a note']),
        });
      });
      const outcomes = await Promise.allSettled(submits);
      expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected']);
      for (const dir of dirs) {
        expect(parseSubmitMarker(readFileSync(taskFile(dir, TASK_FILE.submitAttempted), 'utf8'))).toEqual({
          notes: ['a note'],
        });
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("never takes another user's job that carries the task's name for the task's", async () => {
    const g = await apiOnly('other-user');
    const id = await newTask(g);
    const record = (await g.gateway.store.get(id))!;
    const workDir = join(g.workRoot, id);
    mkdirSync(workDir, { recursive: true });
    writeFileSync(taskFile(workDir, TASK_FILE.submitAttempted), 'earlier\n');
    const theirs = execFileSync(
      'sbatch',
      [
        '--uid=nobody',
        '--gid=nogroup',
        '--hold',
        '--parsable',
        `--job-name=${jobNameFor(id)}`,
        '-o',
        '/dev/null',
        '-D',
        '/tmp',
        '--wrap=true',
      ],
      { encoding: 'utf8' },
    ).trim();
    expect(jobsNamed(id)).toEqual([`${theirs} PENDING nobody`]);
    expect(await g.gateway.driver.findJob(id, new Date(record.creationTime), workDir)).toBeUndefined();
    // Submission goes on to make the task's own job.
    await processSubmit(id, { number: 1, of: 8 }, workerContext(g, redis));
    const ours = (await g.gateway.store.get(id))!.run?.jobId;
    expect(ours).toMatch(/^\d+$/);
    expect(ours).not.toBe(theirs);
  });

  it('cancels a job made during a cancel even when scancel fails at first', async () => {
    // sbatch takes a second (time to cancel the task meanwhile); scancel fails twice, then works.
    const bin = mkdtempSync('/tmp/tesgw-slow-slurm-');
    const real = (tool: string) =>
      execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim();
    for (const tool of ['sacct', 'squeue', 'sinfo']) {
      writeFileSync(join(bin, tool), `#!/bin/sh\nexec '${real(tool)}' "$@"\n`);
    }
    writeFileSync(join(bin, 'sbatch'), `#!/bin/sh\nsleep 1\nexec '${real('sbatch')}' "$@"\n`);
    writeFileSync(
      join(bin, 'scancel'),
      `#!/bin/sh\necho "$*" >> '${bin}/scancel.calls'\n` +
        `if [ "$(wc -l < '${bin}/scancel.calls')" -le 2 ]; then\n` +
        `  echo 'scancel: error: Unable to contact slurm controller (connect failure)' >&2\n  exit 1\nfi\n` +
        `exec '${real('scancel')}' "$@"\n`,
    );
    for (const tool of ['sacct', 'squeue', 'sinfo', 'sbatch', 'scancel']) chmodSync(join(bin, tool), 0o755);
    try {
      gw = await startTestGateway('cancel-in-submit', slurmConfig({ binDir: bin, arrayWindowMs: 0 }));
      const id = await newTask(gw);
      const marker = taskFile(join(gw.workRoot, id), TASK_FILE.submitAttempted);
      for (let i = 0; i < 100 && !existsSync(marker); i++) await new Promise((r) => setTimeout(r, 50));
      expect(existsSync(marker)).toBe(true);
      const res = await fetch(`${gw.base}/tasks/${id}:cancel`, { method: 'POST' });
      expect(res.status).toBe(200);
      expect((await waitFor(gw.base, id, undefined, 10_000)).state).toBe('CANCELED');
      let jobs: string[] = [];
      for (let i = 0; i < 100; i++) {
        jobs = jobsNamed(id);
        if (jobs.length > 0 && jobs.every((j) => j.includes(' CANCELLED '))) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(jobs).toHaveLength(1);
      expect(jobs[0]).toContain(' CANCELLED ');
      expect(
        readFileSync(join(bin, 'scancel.calls'), 'utf8').trim().split('\n').length,
      ).toBeGreaterThanOrEqual(3);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});

import { jest } from '@jest/globals';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { Worker } from 'bullmq';
import type { ComputeDriver } from '../../src/compute/driver.js';
import { decideEndState, phaseOf, type JobStatus, type SlurmState } from '../../src/compute/job-end.js';
import { createLogger } from '../../src/logger.js';
import { LeaderLock, LeaseLostError } from '../../src/store/leader-lock.js';
import { Reconciler } from '../../src/reconciler/reconciler.js';
import { TaskQueues } from '../../src/queue/producer.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import type { TesState } from '../../src/tes/state.js';
import { endMarkerOf, endsDirOf } from '../../src/tes/task-directory.js';
import { until } from '../helpers/until.js';
import { createTask, startTestGateway, waitFor } from '../helpers/gateway.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

jest.setTimeout(60_000);

/**
 * A cluster whose jobs are in whatever state the test says. Accounting knows only the jobs in
 * `states`; the controller knows every job but those in `gone`.
 */
function fakeDriver(
  states: Map<string, { state: SlurmState; reason?: string }>,
  gone: ReadonlySet<string> = new Set(),
): ComputeDriver {
  return {
    kind: 'slurm',
    supportedBackendParameters: [],
    findJob: async () => undefined,
    submit: async () => ({ jobId: 'never' }),
    poll: async (jobIds) => {
      const jobs = new Map<string, JobStatus>();
      for (const jobId of jobIds) {
        const s = states.get(jobId);
        if (s) jobs.set(jobId, { jobId, rawState: s.state, exitCode: { code: 0, signal: 0 }, ...s });
      }
      return { jobs, errors: [] };
    },
    usage: async () => new Map(),
    known: async (jobIds) => new Set(jobIds.filter((id) => !gone.has(id))),
    cancel: async () => undefined,
    close: async () => undefined,
  };
}

describe('the reconciler', () => {
  const prefix = testPrefix('reconciler');
  const jobs = new Map<string, { state: SlurmState; reason?: string }>();
  const gone = new Set<string>();
  const enqueued: string[] = [];
  const finalizing = new Map<string, JobStatus>();
  /** Called as each queue job is added. */
  let onEnqueue: ((taskId: string) => Promise<void>) | undefined;
  let redis: Redis;
  let store: RedisTaskStore;
  let reconciler: Reconciler;
  let options: ConstructorParameters<typeof Reconciler>[0];
  const workRoot = mkdtempSync(join('/var/tmp', 'tesgw-reconciler-'));

  beforeAll(() => {
    redis = connect();
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000 });
    options = {
      store,
      driver: fakeDriver(jobs, gone),
      queues: {
        enqueue: async (kind, payload) => {
          await onEnqueue?.(payload.taskId);
          enqueued.push(`${kind}:${payload.taskId}`);
          if ('status' in payload) finalizing.set(payload.taskId, payload.status);
          return false;
        },
      },
      lock: new LeaderLock(redis, store.keys.lock('reconciler'), 15_000),
      logger: createLogger('silent'),
      workRoot,
      pollIntervalMs: 1000,
      missingGraceMs: 60_000,
    };
    reconciler = new Reconciler(options);
  });
  afterAll(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(workRoot, { recursive: true, force: true });
  });

  /** A task whose job `jobId` is known, moved to `state`; submitted `ago` ms before now. */
  async function taskIn(state: TesState, jobId: string, ago = 0): Promise<string> {
    const t = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
    const submittedAt = new Date(Date.now() - ago).toISOString();
    await store.transition(t.id, 'QUEUED', { from: ['QUEUED'], run: { jobId, submittedAt }, job: jobId });
    if (state !== 'QUEUED') await store.transition(t.id, state);
    return t.id;
  }

  const systemLogs = async (id: string) => (await store.get(id))!.logs?.[0]?.system_logs ?? [];

  it.each([
    ['INITIALIZING', 'PENDING', 'BeginTime', 'now PENDING (BeginTime)'],
    ['RUNNING', 'PENDING', 'BeginTime', 'now PENDING (BeginTime)'],
    ['RUNNING', 'REQUEUED', undefined, 'now REQUEUED'],
    [
      'RUNNING',
      'REQUEUE_HOLD',
      'JobHeldAdmin',
      'now REQUEUE_HOLD (JobHeldAdmin); held by an administrator: it starts once released ' +
        '(scontrol release job-rq-RUNNING-REQUEUE_HOLD), or cancel the task',
    ],
    ['RUNNING', 'REQUEUE_FED', 'None', 'now REQUEUE_FED'],
    ['INITIALIZING', 'SPECIAL_EXIT', undefined, 'now SPECIAL_EXIT'],
  ] as const)(
    'moves a %s task back to QUEUED when Slurm requeues its job (%s), saying why',
    async (state, slurmState, reason, why) => {
      const jobId = `job-rq-${state}-${slurmState}`;
      const id = await taskIn(state, jobId);
      jobs.set(jobId, reason ? { state: slurmState, reason } : { state: slurmState });
      expect((await reconciler.cycle()).changed).toBe(1);
      expect(await store.getState(id)).toBe('QUEUED');
      expect(await systemLogs(id)).toEqual([`Slurm requeued job ${jobId}: ${why}`]);
      jobs.delete(jobId);
    },
  );

  it('moves a requeued task forward again when its job restarts, and writes the reason once', async () => {
    const id = await taskIn('RUNNING', 'job-back');
    jobs.set('job-back', { state: 'PENDING', reason: 'BeginTime' });
    await reconciler.cycle();
    await reconciler.cycle();
    expect(await store.getState(id)).toBe('QUEUED');
    jobs.set('job-back', { state: 'RUNNING' });
    expect((await reconciler.cycle()).changed).toBe(1);
    expect(await store.getState(id)).toBe('INITIALIZING');
    expect(await systemLogs(id)).toEqual(['Slurm requeued job job-back: now PENDING (BeginTime)']);
    jobs.delete('job-back');
  });

  it('leaves a task being cancelled alone when its job is requeued', async () => {
    const id = await taskIn('RUNNING', 'job-cq');
    await store.transition(id, 'CANCELING');
    jobs.set('job-cq', { state: 'REQUEUED' });
    expect((await reconciler.cycle()).changed).toBe(0);
    expect(await store.getState(id)).toBe('CANCELING');
    expect(await systemLogs(id)).toEqual([]);
    jobs.delete('job-cq');
  });

  it('moves no task back except by the requeue path, and none that has finished', async () => {
    const running = await taskIn('RUNNING', 'job-nb');
    expect((await store.transition(running, 'QUEUED')).outcome).toBe('illegal');
    expect((await store.transition(running, 'INITIALIZING', { path: 'requeue' })).outcome).toBe('illegal');
    expect(await store.getState(running)).toBe('RUNNING');
    const done = await taskIn('RUNNING', 'job-done');
    await store.transition(done, 'COMPLETE');
    expect((await store.transition(done, 'QUEUED', { path: 'requeue' })).outcome).toBe('illegal');
    expect(await store.getState(done)).toBe('COMPLETE');
  });

  it('writes no line for a job waiting without a reason', async () => {
    const id = await taskIn('QUEUED', 'job-none');
    for (const reason of [undefined, 'None', '']) {
      jobs.set('job-none', reason === undefined ? { state: 'PENDING' } : { state: 'PENDING', reason });
      await reconciler.cycle();
    }
    expect(await store.getState(id)).toBe('QUEUED');
    expect(await systemLogs(id)).toEqual([]);
    jobs.delete('job-none');
  });

  it('writes the pending reason of a queued task once, when it changes', async () => {
    const id = await taskIn('QUEUED', 'job-q');
    jobs.set('job-q', { state: 'PENDING', reason: 'Priority' });
    await reconciler.cycle();
    await reconciler.cycle();
    jobs.set('job-q', { state: 'PENDING', reason: 'Resources' });
    await reconciler.cycle();
    jobs.set('job-q', { state: 'PENDING' });
    await reconciler.cycle();
    jobs.set('job-q', { state: 'REQUEUE_HOLD', reason: 'JobHeldUser' });
    await reconciler.cycle();
    expect(await store.getState(id)).toBe('QUEUED');
    expect(await systemLogs(id)).toEqual([
      'Slurm job job-q is PENDING: Priority',
      'Slurm job job-q is PENDING: Resources',
      "Slurm job job-q is REQUEUE_HOLD: JobHeldUser; held by the job's user: it starts once released " +
        '(scontrol release job-q), or cancel the task',
    ]);
    jobs.delete('job-q');
  });

  it('moves a task forward when its job starts, without reading its request', async () => {
    const id = await taskIn('QUEUED', 'job-s');
    // A request that cannot be parsed: the cycle must not need it.
    await redis.hset(store.keys.task(id), 'req', '{not json');
    jobs.set('job-s', { state: 'RUNNING' });
    expect((await reconciler.cycle()).changed).toBe(1);
    expect(await store.getState(id)).toBe('INITIALIZING');
    jobs.set('job-s', { state: 'COMPLETED' });
    await reconciler.cycle();
    expect(enqueued).toContain(`finalize:${id}`);
    jobs.delete('job-s');
  });

  it('sends ended jobs to finalization before it writes the news of waiting ones', async () => {
    const waiting: string[] = [];
    for (let i = 0; i < 60; i++) {
      waiting.push(await taskIn('QUEUED', `job-w${i}`));
      jobs.set(`job-w${i}`, { state: 'PENDING', reason: 'Priority' });
    }
    const ended = [await taskIn('RUNNING', 'job-e0'), await taskIn('RUNNING', 'job-e1')];
    for (const jobId of ['job-e0', 'job-e1']) jobs.set(jobId, { state: 'COMPLETED' });
    const written: number[] = [];
    onEnqueue = async () => {
      const logs = await Promise.all(waiting.map(systemLogs));
      written.push(logs.filter((l) => l.length > 0).length);
    };
    try {
      const report = await reconciler.cycle();
      expect(report.ended).toBe(2);
    } finally {
      onEnqueue = undefined;
      for (let i = 0; i < 60; i++) jobs.delete(`job-w${i}`);
      for (const jobId of ['job-e0', 'job-e1']) jobs.delete(jobId);
    }
    expect(enqueued).toEqual(expect.arrayContaining(ended.map((id) => `finalize:${id}`)));
    // At most the first few waiting tasks' writes (those running beside the ended ones) are in.
    expect(written).toHaveLength(2);
    for (const n of written) expect(n).toBeLessThan(40);
    for (const id of waiting)
      expect(await systemLogs(id)).toEqual([
        'Slurm job job-w' + waiting.indexOf(id) + ' is PENDING: Priority',
      ]);
    for (const id of waiting) await store.transition(id, 'SYSTEM_ERROR');
    for (const id of ended) await store.transition(id, 'COMPLETE');
  });

  it("waits out accounting's delay before it asks about a job missing from accounting", async () => {
    const id = await taskIn('RUNNING', 'job-young', 1000);
    gone.add('job-young');
    await reconciler.cycle();
    expect(enqueued).not.toContain(`finalize:${id}`);
    expect(await store.getState(id)).toBe('RUNNING');
  });

  it('leaves a job missing from accounting alone while the controller still knows it', async () => {
    const id = await taskIn('RUNNING', 'job-known', 120_000);
    await reconciler.cycle();
    expect(enqueued).not.toContain(`finalize:${id}`);
  });

  it('finalizes a job nobody knows any more as gone, saying so rather than naming a cause', async () => {
    const id = await taskIn('RUNNING', 'job-gone', 120_000);
    gone.add('job-gone');
    await reconciler.cycle();
    expect(enqueued).toContain(`finalize:${id}`);
    const status = finalizing.get(id)!;
    expect(status.jobId).toBe('job-gone');
    expect(phaseOf(status.state)).toBe('ended');
    const decision = decideEndState(status, [], false);
    expect(decision.state).toBe('SYSTEM_ERROR');
    expect(decision.systemLogs).toEqual([
      "Slurm job job-gone is gone: neither accounting nor the controller knows it any more (purged, or lost with the controller's state); the task's outcome is unknown",
    ]);
    // A cancel asked for before it vanished still wins.
    expect(decideEndState(status, [], true).state).toBe('CANCELED');
  });

  it('finalizes again a task whose finalization finished but whose terminal write was lost', async () => {
    // A real queue and a worker that finishes each finalization without writing anything, as when
    // a Redis failover kept the finished queue job but lost the task's terminal write.
    const queues = new TaskQueues(redis, store.keys.bullPrefix, { submitAttempts: 1, submitBackoffMs: 100 });
    const runs: string[] = [];
    // Other tests' tasks are in the same store; only this one's finalizations count.
    let id = '';
    const ofTask = (): string[] => runs.filter((r) => r === id);
    const connection = redis.duplicate({ maxRetriesPerRequest: null });
    const worker = new Worker<{ taskId: string }>(
      'finalize',
      async (job) => void runs.push(job.data.taskId),
      {
        connection,
        prefix: store.keys.bullPrefix,
      },
    );
    // One leader's lease, taken in turn by the two reconcilers below.
    const lock = new LeaderLock(redis, store.keys.lock('reconciler-again'), 15_000);
    const reconcilerAfter = (finalizeAgainMs: number): Reconciler =>
      new Reconciler({
        store,
        driver: fakeDriver(jobs, gone),
        queues,
        lock,
        logger: createLogger('silent'),
        workRoot,
        pollIntervalMs: 1000,
        missingGraceMs: 60_000,
        finalizeAgainMs,
      });
    const finished = async (n: number): Promise<void> => {
      for (let i = 0; i < 100 && ofTask().length < n; i++) await new Promise((r) => setTimeout(r, 50));
      // The queue records the job as completed just after the processor returns.
      await new Promise((r) => setTimeout(r, 200));
    };
    try {
      id = await taskIn('RUNNING', 'job-lost-end');
      jobs.set('job-lost-end', { state: 'COMPLETED' });
      // Within the grace, a finished finalization stands: the cycle's enqueue is a no-op.
      const patient = reconcilerAfter(60_000);
      await patient.cycle();
      await finished(1);
      await patient.cycle();
      await new Promise((r) => setTimeout(r, 300));
      expect(ofTask()).toEqual([id]);
      expect(await queues.queue('finalize').getJobState(`finalize-${id}`)).toBe('completed');

      // Past it, the task still active after its job ended is finalized again.
      const prompt = reconcilerAfter(0);
      await prompt.cycle();
      await new Promise((r) => setTimeout(r, 5));
      await prompt.cycle();
      await finished(2);
      expect(ofTask()).toEqual([id, id]);
      jobs.delete('job-lost-end');
    } finally {
      await worker.close();
      connection.disconnect();
      await queues.close();
    }
  });

  it('stops a cycle, writing nothing, when another leader took the lease during it', async () => {
    const id = await taskIn('QUEUED', 'job-fenced');
    const lockKey = store.keys.lock('reconciler-fenced');
    const lock = new LeaderLock(redis, lockKey, 15_000);
    expect(await lock.acquire()).toBe(true);
    // The lease goes to another gateway while sacct runs (this leader paused past it, say): this
    // leader still counts it as its own, so only the fence can stop its write.
    const driver = fakeDriver(jobs, gone);
    const poll = driver.poll.bind(driver);
    driver.poll = async (ids) => {
      await redis.set(lockKey, 'another leader', 'PX', 15_000);
      return poll(ids);
    };
    jobs.set('job-fenced', { state: 'RUNNING' });
    const paused = new Reconciler({
      store,
      driver,
      queues: { enqueue: async () => false },
      lock,
      logger: createLogger('silent'),
      workRoot,
      pollIntervalMs: 1000,
      missingGraceMs: 60_000,
    });
    await expect(paused.cycle()).rejects.toThrow(LeaseLostError);
    expect(await store.getState(id)).toBe('QUEUED');
    jobs.delete('job-fenced');
    await redis.del(lockKey);
  });

  it.each(['before', 'after'] as const)(
    'moves no task whose job a Redis failover took back while the cycle ran, %s it read the task',
    async (when) => {
      const jobId = `job-taken-back-${when}`;
      const id = await taskIn('QUEUED', jobId);
      jobs.set(jobId, { state: 'RUNNING' });
      // The cycle listed the jobs on the old master; the new one, promoted before the cycle reads the
      // task (or after, before it writes), never got the submission: the task waits there with no job
      // (it is submitted again, adopting the job).
      const takeBack = async (): Promise<void> => {
        await redis.hdel(store.keys.task(id), 'run');
        await redis.hdel(store.keys.jobs, id);
      };
      const read = store.getBriefs.bind(store);
      const briefs = jest.spyOn(store, 'getBriefs').mockImplementationOnce(async (ids) => {
        if (when === 'before') await takeBack();
        const records = await read(ids);
        if (when === 'after') await takeBack();
        return records;
      });
      try {
        expect((await reconciler.cycle()).changed).toBe(0);
      } finally {
        briefs.mockRestore();
        jobs.delete(jobId);
      }
      expect(await store.getState(id)).toBe('QUEUED');
      expect((await store.get(id))!.logs).toBeUndefined();
    },
  );

  /** How many of the next `cycles` cycles read task `id`. */
  async function readsIn(id: string, cycles: number): Promise<number> {
    const reads = jest.spyOn(store, 'getBriefs');
    try {
      for (let i = 0; i < cycles; i++) await reconciler.cycle();
      return reads.mock.calls.filter(([ids]) => ids.includes(id)).length;
    } finally {
      reads.mockRestore();
    }
  }

  it('skips reading a quiet task while its job stays as it was, but for one cycle in ten', async () => {
    const id = await taskIn('QUEUED', 'job-quiet');
    jobs.set('job-quiet', { state: 'PENDING', reason: 'Priority' });
    // The first cycle writes the reason; the second finds nothing to do.
    expect(await readsIn(id, 2)).toBe(2);
    expect(await readsIn(id, 10)).toBe(1);
    // A new line in accounting is read at once, and a job that ends as well.
    jobs.set('job-quiet', { state: 'PENDING', reason: 'Resources' });
    expect(await readsIn(id, 1)).toBe(1);
    expect((await systemLogs(id)).at(-1)).toBe('Slurm job job-quiet is PENDING: Resources');
    await reconciler.cycle();
    jobs.set('job-quiet', { state: 'COMPLETED' });
    expect(await readsIn(id, 1)).toBe(1);
    expect(finalizing.get(id)?.state).toBe('COMPLETED');
    jobs.delete('job-quiet');
  });

  it('keeps reading a task whose job started while its executors have not, until it is RUNNING', async () => {
    const id = await taskIn('QUEUED', 'job-init');
    jobs.set('job-init', { state: 'RUNNING' });
    expect(await readsIn(id, 4)).toBe(4);
    expect(await store.getState(id)).toBe('INITIALIZING');
    jobs.delete('job-init');
  });

  it('reads every task again after the lease was taken afresh: another leader may have written', async () => {
    const id = await taskIn('QUEUED', 'job-lease');
    jobs.set('job-lease', { state: 'PENDING' });
    await readsIn(id, 2);
    // Up to a cycle that would not read it anyway (the one in ten).
    const rereads = (): boolean => (reconciler.stats.cycles + 1 + id.charCodeAt(id.length - 1)) % 10 === 0;
    while (rereads()) await reconciler.cycle();
    await redis.del(store.keys.lock('reconciler'));
    // As another leader would have: the task moved on while its job waits again.
    await store.transition(id, 'RUNNING', { from: ['QUEUED'] });
    expect(await readsIn(id, 1)).toBe(1);
    expect(await store.getState(id)).toBe('QUEUED');
    jobs.delete('job-lease');
  });

  it('looks at accounting as soon as a job script leaves its end marker, not at the next poll', async () => {
    const id = await taskIn('RUNNING', 'job-marked');
    jobs.set('job-marked', { state: 'RUNNING' });
    // Its own lease: the shared reconciler's cycles hold the other one.
    const lock = new LeaderLock(redis, store.keys.lock('reconciler-marked'), 15_000);
    const woken = new Reconciler({ ...options, lock, pollIntervalMs: 600_000 });
    woken.start();
    try {
      await until('the first cycle', 10_000, async () => (woken.stats.cycles > 0 ? true : undefined));
      await new Promise((r) => setTimeout(r, 200));
      expect(enqueued).not.toContain(`finalize:${id}`);
      jobs.set('job-marked', { state: 'COMPLETED' });
      writeFileSync(endMarkerOf(workRoot, id), '');
      // Ten minutes before the next poll.
      await until('finalization after the end marker', 5_000, async () =>
        enqueued.includes(`finalize:${id}`) ? true : undefined,
      );
    } finally {
      await woken.stop();
      jobs.delete('job-marked');
    }
  });

  it('removes the end markers of tasks no longer active, but for those made since the cycle began', async () => {
    const id = await taskIn('RUNNING', 'job-kept');
    jobs.set('job-kept', { state: 'RUNNING' });
    mkdirSync(endsDirOf(workRoot), { recursive: true });
    const done = await taskIn('RUNNING', 'job-done');
    await store.transition(done, 'COMPLETE');
    const minuteAgo = new Date(Date.now() - 60_000);
    for (const t of [id, done, '01jdnotatask00000000000000']) {
      writeFileSync(endMarkerOf(workRoot, t), '');
      utimesSync(endMarkerOf(workRoot, t), minuteAgo, minuteAgo);
    }
    // As if a task submitted during the cycle had ended during it too.
    const late = endMarkerOf(workRoot, '01jdlatetask00000000000000');
    writeFileSync(late, '');
    utimesSync(late, new Date(Date.now() + 60_000), new Date(Date.now() + 60_000));
    await reconciler.cycle();
    expect(existsSync(endMarkerOf(workRoot, id))).toBe(true);
    expect(existsSync(endMarkerOf(workRoot, done))).toBe(false);
    expect(existsSync(endMarkerOf(workRoot, '01jdnotatask00000000000000'))).toBe(false);
    expect(existsSync(late)).toBe(true);
    jobs.delete('job-kept');
  });

  it('queues again a task stored a while ago but never handed to the queue', async () => {
    const lost = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
    await redis.hset(store.keys.task(lost.id), 'created', new Date(Date.now() - 120_000).toISOString());
    const fresh = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
    const submitted = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
    await redis.hset(store.keys.task(submitted.id), 'created', new Date(Date.now() - 120_000).toISOString());
    await store.transition(submitted.id, 'QUEUED', { from: ['QUEUED'], run: { jobId: 'job-sub' } });
    await reconciler.requeueLostSubmissions();
    expect(enqueued).toContain(`submit:${lost.id}`);
    expect(enqueued).not.toContain(`submit:${fresh.id}`);
    expect(enqueued).not.toContain(`submit:${submitted.id}`);
  });
});

describe('a task on the local backend', () => {
  it('only ever moves forward through its states', async () => {
    const gw = await startTestGateway('forward', {
      backend: 'local',
      container: { runtime: 'bwrap-host' },
      reconciler: { pollIntervalMs: 100 },
    });
    try {
      const id = await createTask(gw.base, {
        inputs: [{ path: '/in/a', content: 'a' }],
        executors: [{ image: 'alpine', command: ['sh', '-c', 'sleep 0.5'] }],
      });
      // Every state the task is seen in, as often as the store can be asked.
      const seen: string[] = [];
      let watching = true;
      const watcher = (async () => {
        while (watching) {
          const state = await gw.gateway.store.getState(id);
          if (state && seen.at(-1) !== state) seen.push(state);
        }
      })();
      const task = await waitFor(gw.base, id, undefined, 30_000);
      watching = false;
      await watcher;
      expect(task.state).toBe('COMPLETE');
      const order = ['QUEUED', 'INITIALIZING', 'RUNNING', 'COMPLETE'];
      expect(seen).toEqual([...seen].sort((a, b) => order.indexOf(a) - order.indexOf(b)));
      expect(seen).toContain('RUNNING');
      expect(task.logs[0].system_logs).toEqual(
        expect.arrayContaining([expect.stringMatching(/^submitted as local job/)]),
      );
    } finally {
      await gw.close();
    }
  });
});

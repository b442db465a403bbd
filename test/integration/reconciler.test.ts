import { jest } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { ComputeDriver } from '../../src/compute/driver.js';
import type { JobStatus, SlurmState } from '../../src/compute/job-status.js';
import { createLogger } from '../../src/logger.js';
import { LeaderLock } from '../../src/reconciler/leader-lock.js';
import { Reconciler } from '../../src/reconciler/reconciler.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import type { TesState } from '../../src/tes/state.js';
import { createTask, startTestGateway, waitFor } from '../helpers/gateway.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

jest.setTimeout(60_000);

/** A cluster whose jobs are in whatever state the test says. */
function fakeDriver(states: Map<string, { state: SlurmState; reason?: string }>): ComputeDriver {
  return {
    kind: 'slurm',
    supportedBackendParameters: [],
    findJob: async () => undefined,
    submit: async () => 'never',
    poll: async (jobIds) => {
      const jobs = new Map<string, JobStatus>();
      for (const jobId of jobIds) {
        const s = states.get(jobId);
        if (s) jobs.set(jobId, { jobId, rawState: s.state, exitCode: { code: 0, signal: 0 }, ...s });
      }
      return { jobs, errors: [] };
    },
    usage: async () => new Map(),
    known: async (jobIds) => new Set(jobIds),
    cancel: async () => undefined,
    close: async () => undefined,
  };
}

describe('the reconciler', () => {
  const prefix = testPrefix('reconciler');
  const jobs = new Map<string, { state: SlurmState; reason?: string }>();
  const enqueued: string[] = [];
  let redis: Redis;
  let store: RedisTaskStore;
  let reconciler: Reconciler;
  const workRoot = mkdtempSync(join('/var/tmp', 'tesgw-reconciler-'));

  beforeAll(() => {
    redis = connect();
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000 });
    reconciler = new Reconciler({
      store,
      driver: fakeDriver(jobs),
      queues: {
        enqueue: async (kind, payload) => {
          enqueued.push(`${kind}:${payload.taskId}`);
        },
      },
      lock: new LeaderLock(redis, store.keys.lock('reconciler'), 15_000),
      logger: createLogger('silent'),
      workRoot,
      pollIntervalMs: 1000,
      missingGraceMs: 60_000,
    });
  });
  afterAll(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(workRoot, { recursive: true, force: true });
  });

  /** A task whose job `jobId` is known, moved to `state`. */
  async function taskIn(state: TesState, jobId: string): Promise<string> {
    const t = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
    await store.transition(t.id, 'QUEUED', { from: ['QUEUED'], run: { jobId }, job: jobId });
    if (state !== 'QUEUED') await store.transition(t.id, state);
    return t.id;
  }

  const systemLogs = async (id: string) => (await store.get(id))!.logs?.[0]?.system_logs ?? [];

  it.each([
    ['INITIALIZING', 'PENDING', 'BeginTime', 'now PENDING (BeginTime)'],
    ['RUNNING', 'PENDING', 'BeginTime', 'now PENDING (BeginTime)'],
    ['RUNNING', 'REQUEUED', undefined, 'now REQUEUED'],
    ['RUNNING', 'REQUEUE_HOLD', 'JobHeldAdmin', 'now REQUEUE_HOLD (JobHeldAdmin)'],
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
      'Slurm job job-q is REQUEUE_HOLD: JobHeldUser',
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

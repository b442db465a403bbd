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

  const lastSystemLog = async (id: string) => (await store.get(id))!.logs?.[0]?.system_logs?.at(-1);

  it.each(['INITIALIZING', 'RUNNING'] as const)(
    'leaves a %s task where it is when its job is seen waiting again, with the reason in its logs',
    async (state) => {
      const jobId = `job-${state}`;
      const id = await taskIn(state, jobId);
      jobs.set(jobId, { state: 'PENDING', reason: 'BeginTime' });
      expect((await reconciler.cycle()).changed).toBe(0);
      expect(await store.getState(id)).toBe(state);
      expect(await lastSystemLog(id)).toBe(`Slurm job ${jobId} is PENDING: BeginTime`);
      jobs.delete(jobId);
    },
  );

  it('writes the pending reason of a queued task once, when it changes', async () => {
    const id = await taskIn('QUEUED', 'job-q');
    jobs.set('job-q', { state: 'PENDING', reason: 'Priority' });
    await reconciler.cycle();
    await reconciler.cycle();
    jobs.set('job-q', { state: 'PENDING', reason: 'Resources' });
    await reconciler.cycle();
    expect(await store.getState(id)).toBe('QUEUED');
    expect((await store.get(id))!.logs?.[0]?.system_logs).toEqual([
      'Slurm job job-q is PENDING: Priority',
      'Slurm job job-q is PENDING: Resources',
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

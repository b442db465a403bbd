import { jest } from '@jest/globals';
import { UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { createLogger } from '../../src/logger.js';
import { jobIdFor, type Enqueuer } from '../../src/queue/jobs.js';
import { TaskQueues } from '../../src/queue/producer.js';
import { Reconciler } from '../../src/reconciler/reconciler.js';
import { LeaderLock } from '../../src/store/leader-lock.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';
import { idleDriver } from '../helpers/idle-driver.js';

jest.setTimeout(60_000);

/** The lost-submission sweep on a real Redis: every waiting task without a job is driven again. */

const noCluster = idleDriver('slurm');

describe('the lost-submission sweep', () => {
  const prefix = testPrefix('lost-sweep');
  let redis: Redis;
  let store: RedisTaskStore;
  beforeAll(() => {
    redis = connect();
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 10_000 });
  });
  afterAll(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
  });

  const reconcilerWith = (queues: Enqueuer): Reconciler =>
    new Reconciler({
      store,
      driver: noCluster,
      queues,
      lock: new LeaderLock(redis, store.keys.lock('reconciler'), 15_000),
      logger: createLogger('silent'),
      workRoot: '/nonexistent',
      pollIntervalMs: 1000,
      missingGraceMs: 60_000,
    });

  /** `n` tasks created two minutes ago, in `state`, without a job. */
  async function oldTasks(n: number, state: 'QUEUED' | 'INITIALIZING' = 'QUEUED'): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const t = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
      ids.push(t.id);
    }
    const aged = redis.pipeline();
    for (const id of ids)
      aged.hset(store.keys.task(id), 'created', new Date(Date.now() - 120_000).toISOString());
    await aged.exec();
    if (state === 'INITIALIZING') for (const id of ids) await store.transition(id, 'INITIALIZING');
    return ids;
  }

  it('queues again every QUEUED task without a job, past the first thousand, and INITIALIZING ones', async () => {
    const queued = await oldTasks(1234);
    const initializing = await oldTasks(3, 'INITIALIZING');
    const enqueued = new Set<string>();
    await reconcilerWith({
      enqueue: async (kind, payload) => {
        enqueued.add(`${kind}:${payload.taskId}`);
        return false;
      },
    }).requeueLostSubmissions();
    for (const id of [...queued, ...initializing]) expect(enqueued).toContain(`submit:${id}`);
    expect(enqueued.size).toBe(queued.length + initializing.length);
  });

  it('replaces a submission whose queue job failed (a worker died mid-staging) with a new one', async () => {
    const [id] = await oldTasks(1);
    const queues = new TaskQueues(redis, store.keys.bullPrefix, { submitAttempts: 1, submitBackoffMs: 10 });
    const failing = new Worker(
      'submit',
      async () => {
        throw new UnrecoverableError('job stalled more than allowable limit');
      },
      { connection: redis.duplicate({ maxRetriesPerRequest: null }), prefix: store.keys.bullPrefix },
    );
    try {
      await queues.enqueue('submit', { taskId: id! });
      const queue = queues.queue('submit');
      for (let i = 0; i < 100 && (await queue.getJobState(jobIdFor('submit', id!))) !== 'failed'; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await queue.getJobState(jobIdFor('submit', id!))).toBe('failed');
      await failing.close();
      await reconcilerWith(queues).requeueLostSubmissions();
      expect(await queue.getJobState(jobIdFor('submit', id!))).toBe('waiting');
    } finally {
      await failing.close();
      await queues.close();
    }
  });
});

import { jest } from '@jest/globals';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { JobStatus } from '../../src/compute/job-end.js';
import { SlurmDriver } from '../../src/compute/slurm/slurm-driver.js';
import { createLogger } from '../../src/logger.js';
import type { Enqueuer } from '../../src/queue/jobs.js';
import { Reconciler } from '../../src/reconciler/reconciler.js';
import { LeaderLock } from '../../src/store/leader-lock.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import type { TaskBrief, TaskStore } from '../../src/store/task-store.js';
import type { TesState } from '../../src/tes/state.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

jest.setTimeout(30_000);

/**
 * The reconciler against real Redis and a Slurm driver whose sacct and squeue are scripts in a
 * binDir that answer what the test wrote (a slow sacct, rows of jobs named for other tasks): what a
 * cycle longer than the leader lease, a write from a stale read and a job id given out twice do.
 */
describe('the reconciler as one leader', () => {
  const prefix = testPrefix('reconciler-leader');
  const bin = mkdtempSync('/tmp/tesgw-leader-bin-');
  const workRoot = mkdtempSync(join('/var/tmp', 'tesgw-leader-'));
  let redis: Redis;
  let store: RedisTaskStore;
  const enqueued: Array<{ taskId: string; status: JobStatus }> = [];
  const queues: Enqueuer = {
    enqueue: async (kind, payload) => {
      if (kind === 'finalize' && 'status' in payload) enqueued.push(payload);
      return false;
    },
  };

  /** sacct sleeps `delayS` seconds (after touching `sacct.started`), then prints `rows`. */
  function sacct(rows: readonly string[], delayS = 0): void {
    writeFileSync(join(bin, 'sacct.out'), rows.map((r) => `${r}\n`).join(''));
    writeFileSync(
      join(bin, 'sacct'),
      `#!/bin/sh\ntouch '${bin}/sacct.started'\nsleep ${delayS}\ncat '${bin}/sacct.out'\n`,
    );
    chmodSync(join(bin, 'sacct'), 0o755);
    rmSync(join(bin, 'sacct.started'), { force: true });
  }
  const row = (jobId: string, name: string, state: string) =>
    `${jobId}|${name}|${state}|0:0|None|vm|1|1700000000|1700000001|00:00:01`;

  const driver = () =>
    new SlurmDriver({
      binDir: bin,
      timeoutMs: 10_000,
      maxConcurrentCalls: 4,
      sacctChunkSize: 100,
      arrayWindowMs: 0,
      maxArraySize: 10,
    });
  const lockKey = () => store.keys.lock('reconciler');

  function reconciler(lock: LeaderLock, taskStore: TaskStore = store): Reconciler {
    return new Reconciler({
      store: taskStore,
      driver: driver(),
      queues,
      lock,
      logger: createLogger('silent'),
      workRoot,
      pollIntervalMs: 60_000,
      missingGraceMs: 60_000,
    });
  }

  /** A task in `state` whose job is `jobId`, its first executor started (so RUNNING is next). */
  async function taskIn(state: TesState, jobId: string, jobName?: string): Promise<string> {
    const t = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
    const run = {
      jobId,
      submittedAt: new Date().toISOString(),
      workDir: join(workRoot, t.id),
      ...(jobName ? { jobName } : {}),
    };
    await store.transition(t.id, 'QUEUED', { from: ['QUEUED'], run, job: jobId });
    if (state !== 'QUEUED') await store.transition(t.id, state);
    mkdirSync(join(workRoot, t.id, 'exec-0'), { recursive: true });
    writeFileSync(join(workRoot, t.id, 'exec-0', 'start'), '2024-01-01T00:00:00.000Z\n');
    return t.id;
  }

  async function until(what: () => boolean, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (!what()) {
      if (Date.now() > end) throw new Error('timed out waiting');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  beforeAll(() => {
    redis = connect();
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000 });
    writeFileSync(join(bin, 'squeue'), '#!/bin/sh\nexit 0\n');
    chmodSync(join(bin, 'squeue'), 0o755);
  });
  beforeEach(async () => {
    enqueued.length = 0;
    await redis.del(lockKey());
  });
  afterAll(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(bin, { recursive: true, force: true });
    rmSync(workRoot, { recursive: true, force: true });
  });

  it('keeps the lease through a cycle longer than the lease, so no second leader takes over', async () => {
    const id = await taskIn('INITIALIZING', '4242');
    sacct([row('4242', `tes_${id}`, 'RUNNING')], 1.5);
    const leader = reconciler(new LeaderLock(redis, lockKey(), 400));
    const rival = new LeaderLock(redis, lockKey(), 400);
    leader.start();
    try {
      await until(() => existsSync(join(bin, 'sacct.started')));
      // Well past the lease's 400 ms while sacct sleeps: the rival never gets in.
      const taken: number[] = [];
      const since = Date.now();
      while (Date.now() - since < 1400) {
        if (await rival.acquire()) taken.push(Date.now() - since);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(taken).toEqual([]);
      await until(() => leader.stats.cycles === 1);
    } finally {
      await leader.stop();
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(await store.getState(id)).toBe('RUNNING');
  });

  it('writes nothing once its lease has gone to another leader mid-cycle', async () => {
    const id = await taskIn('INITIALIZING', '4343');
    sacct([row('4343', `tes_${id}`, 'RUNNING')], 1.2);
    const leader = reconciler(new LeaderLock(redis, lockKey(), 400));
    leader.start();
    try {
      await until(() => existsSync(join(bin, 'sacct.started')));
      // The lease is taken from under the leader (as when Redis lost it), and a rival holds it.
      await redis.del(lockKey());
      expect(await new LeaderLock(redis, lockKey(), 10_000).acquire()).toBe(true);
      await new Promise((r) => setTimeout(r, 1600));
    } finally {
      await leader.stop();
    }
    expect(await store.getState(id)).toBe('INITIALIZING');
  });

  it('applies no change from a read that another writer has since overtaken', async () => {
    const id = await taskIn('INITIALIZING', '4444');
    sacct([row('4444', `tes_${id}`, 'RUNNING')]);
    const note = 'Slurm requeued job 4444: now PENDING (BeginTime)';
    // Another writer (a leader with a newer view) requeues the task just after this cycle read it.
    const racing: TaskStore = Object.create(store) as TaskStore;
    racing.getBriefs = async (ids): Promise<Map<string, TaskBrief>> => {
      const read = await store.getBriefs(ids);
      await store.transition(id, 'QUEUED', {
        path: 'requeue',
        logs: [{ logs: [], outputs: [], system_logs: [note] }],
      });
      return read;
    };
    await reconciler(new LeaderLock(redis, lockKey(), 10_000), racing).cycle();
    expect(await store.getState(id)).toBe('QUEUED');
    expect((await store.get(id))?.logs?.[0]?.system_logs).toEqual([note]);
  });

  describe('with job ids the controller gave out twice', () => {
    it("takes no accounting record for a task's job unless it names the task", async () => {
      const started = await taskIn('INITIALIZING', '5150');
      const ending = await taskIn('RUNNING', '5151');
      const own = await taskIn('INITIALIZING', '5152');
      sacct([
        row('5150', 'tes_01OTHERTASK0000000000000', 'RUNNING'),
        row('5151', 'tes_01OTHERTASK0000000000001', 'COMPLETED'),
        row('5152', `tes_${own}`, 'RUNNING'),
      ]);
      await reconciler(new LeaderLock(redis, lockKey(), 10_000)).cycle();
      expect(await store.getState(own)).toBe('RUNNING');
      expect(await store.getState(started)).toBe('INITIALIZING');
      expect(await store.getState(ending)).toBe('RUNNING');
      // Their own jobs are gone with the controller's state: they end as vanished jobs, not as the
      // other jobs did.
      const statuses = new Map(enqueued.map((e) => [e.taskId, e.status]));
      expect([...statuses.keys()].sort()).toEqual([started, ending].sort());
      for (const [, s] of statuses) expect(s).toMatchObject({ rawState: 'MISSING' });
      expect(statuses.get(ending)?.jobId).toBe('5151');
    });

    it('notices an id given out again while the task’s own job was running', async () => {
      const id = await taskIn('INITIALIZING', '5250');
      const r = reconciler(new LeaderLock(redis, lockKey(), 10_000));
      sacct([row('5250', `tes_${id}`, 'RUNNING')]);
      await r.cycle();
      expect(await store.getState(id)).toBe('RUNNING');
      expect(enqueued).toEqual([]);
      sacct([row('5250', 'tes_01OTHERTASK0000000000002', 'COMPLETED')]);
      await r.cycle();
      expect(enqueued).toEqual([{ taskId: id, status: expect.objectContaining({ rawState: 'MISSING' }) }]);
    });

    it("checks an array element's record against the array recorded with its task's run", async () => {
      const mine = await taskIn('INITIALIZING', '6100_1', 'tes_array_dddddddddddd');
      const theirs = await taskIn('INITIALIZING', '6101_0', 'tes_array_eeeeeeeeeeee');
      // The recorded name decides, not the task's files: these markers say the opposite.
      const at = '2026-12-01T10:00:00.000Z\n';
      writeFileSync(join(workRoot, mine, 'submit-attempted'), `${at}array tes_array_ffffffffffff 1\n`);
      writeFileSync(join(workRoot, theirs, 'submit-attempted'), `${at}array tes_array_ffffffffffff 0\n`);
      sacct([
        row('6100_1', 'tes_array_dddddddddddd', 'RUNNING'),
        row('6101_0', 'tes_array_ffffffffffff', 'RUNNING'),
      ]);
      await reconciler(new LeaderLock(redis, lockKey(), 10_000)).cycle();
      expect(await store.getState(mine)).toBe('RUNNING');
      expect(await store.getState(theirs)).toBe('INITIALIZING');
      expect(enqueued.map((e) => e.taskId)).toEqual([theirs]);
    });

    it("checks an older gateway's array element against the array line of its submit marker", async () => {
      const mine = await taskIn('INITIALIZING', '6000_1');
      const theirs = await taskIn('INITIALIZING', '6001_0');
      const at = '2026-12-01T10:00:00.000Z\n';
      writeFileSync(join(workRoot, mine, 'submit-attempted'), `${at}array tes_array_aaaaaaaaaaaa 1\n`);
      writeFileSync(join(workRoot, theirs, 'submit-attempted'), `${at}array tes_array_bbbbbbbbbbbb 0\n`);
      sacct([
        row('6000_1', 'tes_array_aaaaaaaaaaaa', 'RUNNING'),
        row('6001_0', 'tes_array_cccccccccccc', 'RUNNING'),
      ]);
      await reconciler(new LeaderLock(redis, lockKey(), 10_000)).cycle();
      expect(await store.getState(mine)).toBe('RUNNING');
      expect(await store.getState(theirs)).toBe('INITIALIZING');
      expect(enqueued.map((e) => e.taskId)).toEqual([theirs]);
    });
  });
});

import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { connect, dropPrefix, REDIS_URL, testPrefix } from '../helpers/redis.js';
import { Redis } from 'ioredis';
import { LeaderLock } from '../../src/store/leader-lock.js';
import { BacklogFullError } from '../../src/errors.js';
import { IllegalTransitionError } from '../../src/tes/state.js';

const TASK = { executors: [{ image: 'alpine', command: ['true'] }] };

/** The Redis logical database only the prefix test writes to. */
const KEYS_DB = 13;

async function allKeys(redis: Redis): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  return keys;
}

describe('RedisTaskStore', () => {
  const prefix = testPrefix('store');
  let a: Redis;
  let b: Redis;
  let storeA: RedisTaskStore;
  let storeB: RedisTaskStore;
  beforeAll(() => {
    a = connect();
    b = connect();
    storeA = new RedisTaskStore(a, { prefix, maxBacklog: 1000 });
    storeB = new RedisTaskStore(b, { prefix, maxBacklog: 1000 });
  });
  afterAll(async () => {
    await dropPrefix(a, prefix);
    a.disconnect();
    b.disconnect();
  });

  it('applies a legal transition and moves the task between state indexes', async () => {
    const t = await storeA.create(TASK);
    expect(await storeA.transition(t.id, 'RUNNING')).toEqual({ outcome: 'ok', previous: 'QUEUED' });
    expect(await a.zscore(storeA.keys.state('QUEUED'), t.id)).toBeNull();
    expect(await a.zscore(storeA.keys.state('RUNNING'), t.id)).toBe('0');
  });

  it('refuses an illegal transition and changes nothing', async () => {
    const t = await storeA.create(TASK);
    await storeA.transition(t.id, 'COMPLETE');
    expect(await storeA.transition(t.id, 'RUNNING')).toEqual({ outcome: 'illegal', previous: 'COMPLETE' });
    expect((await storeA.get(t.id))?.state).toBe('COMPLETE');
  });

  it('lets exactly one of two racing processes win', async () => {
    for (let i = 0; i < 50; i++) {
      const t = await storeA.create(TASK);
      const [x, y] = await Promise.all([
        storeA.transition(t.id, 'COMPLETE'),
        storeB.transition(t.id, 'CANCELED'),
      ]);
      expect([x.outcome, y.outcome].sort()).toEqual(['illegal', 'ok']);
      const final = (await storeA.get(t.id))!.state;
      expect(final).toBe(x.outcome === 'ok' ? 'COMPLETE' : 'CANCELED');
      const inIndexes = await Promise.all(
        ['QUEUED', 'COMPLETE', 'CANCELED'].map((s) => a.zscore(storeA.keys.state(s as 'QUEUED'), t.id)),
      );
      expect(inIndexes.filter((v) => v !== null)).toHaveLength(1);
    }
  });

  it('refuses a change asked to happen only without a job once a job is recorded', async () => {
    const a = await storeA.create(TASK);
    const b = await storeA.create(TASK);
    await storeA.setJob(b.id, '4242', {});
    expect((await storeA.transition(a.id, 'CANCELED', { onlyWithoutJob: true })).outcome).toBe('ok');
    expect(await storeA.transition(b.id, 'CANCELED', { onlyWithoutJob: true })).toEqual({
      outcome: 'illegal',
      previous: 'QUEUED',
    });
    expect(await storeA.getState(b.id)).toBe('QUEUED');
    expect((await storeA.activeJobs()).get(b.id)).toBe('4242');
  });

  it('refuses a change asked to happen only with a given job unless that job is recorded', async () => {
    const none = await storeA.create(TASK);
    const other = await storeA.create(TASK);
    const own = await storeA.create(TASK);
    await storeA.setJob(other.id, '17', {});
    await storeA.setJob(own.id, '42', {});
    const refused = { outcome: 'illegal', previous: 'QUEUED' };
    // No job recorded (a failover took the submission back), or another one.
    expect(await storeA.transition(none.id, 'RUNNING', { withJob: '42' })).toEqual(refused);
    expect(await storeA.transition(other.id, 'RUNNING', { withJob: '42' })).toEqual(refused);
    // The same state with new logs is refused alike.
    expect(await storeA.transition(none.id, 'QUEUED', { withJob: '42', logs: [] })).toEqual({
      outcome: 'illegal',
      previous: 'QUEUED',
    });
    expect((await storeA.transition(own.id, 'RUNNING', { withJob: '42' })).outcome).toBe('ok');
    expect(await storeA.getState(none.id)).toBe('QUEUED');
    expect((await storeA.get(none.id))!.logs).toBeUndefined();
    expect(await storeA.getState(other.id)).toBe('QUEUED');
    const jobs = await storeA.activeJobs();
    expect([jobs.get(none.id), jobs.get(other.id), jobs.get(own.id)]).toEqual([undefined, '17', '42']);
    await expect(storeA.transition(own.id, 'RUNNING', { withJob: '42', job: '43' })).rejects.toThrow(
      /exclude each other/,
    );
  });

  it('reports a missing task', async () => {
    expect(await storeA.transition('01jd0000000000000000000000', 'RUNNING')).toEqual({ outcome: 'missing' });
  });

  it('forgets the job of a task that reaches a terminal state', async () => {
    const t = await storeA.create(TASK);
    await storeA.setJob(t.id, '77', { workDir: '/w' });
    expect((await storeA.activeJobs()).get(t.id)).toBe('77');
    await storeA.transition(t.id, 'RUNNING');
    await storeA.transition(t.id, 'EXECUTOR_ERROR');
    expect((await storeA.activeJobs()).has(t.id)).toBe(false);
  });

  it('lists every active job however many there are, and tells the tasks without one', async () => {
    const own = new RedisTaskStore(a, { prefix: `${prefix}many:`, maxBacklog: 1000 });
    // More than one slice of the jobs index, written straight into it.
    const entries = Array.from({ length: 2500 }, (_, i) => [`01jd${String(i).padStart(22, '0')}`, `${i}`]);
    await a.hset(own.keys.jobs, Object.fromEntries(entries));
    const jobs = await own.activeJobs();
    expect(jobs.size).toBe(2500);
    expect(jobs.get(entries[1234]![0]!)).toBe('1234');
    const none = '01jdnojob00000000000000000';
    expect(await own.withoutJobs([entries[7]![0]!, none, entries[2499]![0]!])).toEqual([none]);
    expect(await own.withoutJobs([])).toEqual([]);
    await dropPrefix(a, `${prefix}many:`);
  });

  it('never moves a task backwards, whatever sources the caller names', async () => {
    const t = await storeA.create(TASK);
    await storeA.transition(t.id, 'INITIALIZING');
    await expect(storeA.transition(t.id, 'QUEUED', { from: ['INITIALIZING'] })).rejects.toBeInstanceOf(
      IllegalTransitionError,
    );
    expect(await storeA.getState(t.id)).toBe('INITIALIZING');
    await storeA.transition(t.id, 'RUNNING');
    for (const back of ['QUEUED', 'INITIALIZING'] as const) {
      await expect(storeA.transition(t.id, back, { from: ['RUNNING'] })).rejects.toBeInstanceOf(
        IllegalTransitionError,
      );
      expect((await storeA.transition(t.id, back)).outcome).toBe('illegal');
    }
    expect(await storeA.getState(t.id)).toBe('RUNNING');
    expect(await a.zscore(storeA.keys.state('RUNNING'), t.id)).toBe('0');
  });

  it('records a job with a change, and only when the change is made', async () => {
    const waiting = await storeA.create(TASK);
    const run = { workDir: '/w', jobId: '42' };
    expect(await storeA.transition(waiting.id, 'QUEUED', { from: ['QUEUED'], run, job: '42' })).toEqual({
      outcome: 'same',
      previous: 'QUEUED',
    });
    expect((await storeA.activeJobs()).get(waiting.id)).toBe('42');
    expect((await storeA.get(waiting.id))?.run).toEqual(run);

    const cancelled = await storeA.create(TASK);
    await storeA.transition(cancelled.id, 'CANCELED');
    const t = await storeA.transition(cancelled.id, 'QUEUED', { from: ['QUEUED'], run, job: '43' });
    expect(t).toEqual({ outcome: 'illegal', previous: 'CANCELED' });
    expect((await storeA.activeJobs()).has(cancelled.id)).toBe(false);
    expect((await storeA.get(cancelled.id))?.run).toBeUndefined();
  });

  it("makes a fenced change only while the lease is its holder's, and writes nothing otherwise", async () => {
    const lease = new LeaderLock(a, storeA.keys.lock('fence-test'), 15_000);
    const t = await storeA.create(TASK);
    const run = { workDir: '/w', jobId: '44' };
    const fenced = { from: ['QUEUED' as const], run, job: '44', fence: lease.fence };
    // Nobody holds the lease, then another process does: refused, with nothing written.
    expect(await storeA.transition(t.id, 'QUEUED', fenced)).toEqual({
      outcome: 'fenced',
      previous: 'QUEUED',
    });
    await a.set(storeA.keys.lock('fence-test'), 'another holder', 'PX', 15_000);
    expect(await storeA.transition(t.id, 'RUNNING', { fence: lease.fence })).toEqual({
      outcome: 'fenced',
      previous: 'QUEUED',
    });
    expect((await storeA.get(t.id))?.state).toBe('QUEUED');
    expect((await storeA.get(t.id))?.run).toBeUndefined();
    expect((await storeA.activeJobs()).has(t.id)).toBe(false);
    expect(await a.zscore(storeA.keys.state('RUNNING'), t.id)).toBeNull();
    // Its holder's: made.
    await a.del(storeA.keys.lock('fence-test'));
    expect(await lease.acquire()).toBe(true);
    expect(await storeA.transition(t.id, 'QUEUED', fenced)).toEqual({ outcome: 'same', previous: 'QUEUED' });
    expect((await storeA.activeJobs()).get(t.id)).toBe('44');
    await lease.release();
  });

  it('frees the fencing lease with a change that writes, and keeps it otherwise', async () => {
    const key = storeA.keys.lock('fence-free-test');
    const lease = new LeaderLock(a, key, 15_000);
    const t = await storeA.create(TASK);
    const freeing = { fence: lease.fence, releaseFence: true };
    expect(await lease.acquire()).toBe(true);
    // Refused (no legal move from QUEUED to COMPLETE's source list given): the lease stays.
    expect((await storeA.transition(t.id, 'COMPLETE', { ...freeing, from: ['RUNNING'] })).outcome).toBe(
      'illegal',
    );
    expect(await a.get(key)).toBe(lease.fence.owner);
    // Written, as the same state with its run and job: freed in the same change.
    const run = { workDir: '/w', jobId: '45' };
    expect(await storeA.transition(t.id, 'QUEUED', { ...freeing, from: ['QUEUED'], run, job: '45' })).toEqual(
      { outcome: 'same', previous: 'QUEUED' },
    );
    expect(await a.get(key)).toBeNull();
    expect((await storeA.activeJobs()).get(t.id)).toBe('45');
    // Another holder's lease is neither used nor freed.
    await a.set(key, 'another holder', 'PX', 15_000);
    expect((await storeA.transition(t.id, 'RUNNING', freeing)).outcome).toBe('fenced');
    expect(await a.get(key)).toBe('another holder');
    await a.del(key);
  });

  it('reads tasks for the sweeps without their requests', async () => {
    const t = await storeA.create({
      executors: [
        { image: 'alpine', command: ['true'] },
        { image: 'docker://ubuntu:24.04', command: ['true'] },
        { image: 'alpine', command: ['false'] },
      ],
    });
    await storeA.setRun(t.id, { jobId: '7' });
    // A request that cannot even be parsed is never looked at.
    await a.hset(storeA.keys.task(t.id), 'req', 'not json');
    await expect(storeA.getMany([t.id])).rejects.toThrow(SyntaxError);
    const briefs = await storeA.getBriefs([t.id, '01jd0000000000000000000000']);
    expect([...briefs.keys()]).toEqual([t.id]);
    expect(briefs.get(t.id)).toEqual({
      id: t.id,
      state: 'QUEUED',
      creationTime: t.creationTime,
      run: { jobId: '7' },
    });
    expect(await storeA.imagesOf([t.id])).toEqual(new Set(['alpine', 'docker://ubuntu:24.04']));
  });

  it('reads the images of a task stored before they had a field of their own from its request', async () => {
    const t = await storeA.create({ executors: [{ image: 'busybox', command: ['true'] }] });
    await a.hdel(storeA.keys.task(t.id), 'images');
    expect(await storeA.imagesOf([t.id])).toEqual(new Set(['busybox']));
  });

  it('refuses new tasks when the backlog is full', async () => {
    const p = testPrefix('backlog');
    const small = new RedisTaskStore(a, { prefix: p, maxBacklog: 2 });
    await small.create(TASK);
    await small.create(TASK);
    await expect(small.create(TASK)).rejects.toBeInstanceOf(BacklogFullError);
    await dropPrefix(a, p);
  });

  it('throws on a change the state machine never allows, and leaves the task as it was', async () => {
    const t = await storeA.create(TASK);
    await storeA.transition(t.id, 'RUNNING');
    await expect(storeA.transition(t.id, 'CANCELED', { from: ['QUEUED', 'RUNNING'] })).rejects.toThrow(
      new IllegalTransitionError(t.id, 'RUNNING', 'CANCELED'),
    );
    await expect(storeA.transition(t.id, 'CANCELED', { from: ['RUNNING'] })).rejects.toBeInstanceOf(
      IllegalTransitionError,
    );
    expect(await storeA.getState(t.id)).toBe('RUNNING');
    // A source that is legal but not the task's state is a race, not a mistake: no throw.
    expect(await storeA.transition(t.id, 'CANCELED', { from: ['QUEUED'] })).toEqual({
      outcome: 'illegal',
      previous: 'RUNNING',
    });
  });

  it('keeps every key under its prefix', async () => {
    // A logical database of this test's own: a scan of all of it sees a key written outside the
    // prefix, which a scan of the prefix alone never could. Only this test's runs write there.
    const family = 'tesgw-test:keys:';
    const own = new Redis(REDIS_URL, { db: KEYS_DB, maxRetriesPerRequest: 1 });
    const p = testPrefix('keys');
    try {
      const s = new RedisTaskStore(own, { prefix: p, maxBacklog: 10 });
      const t = await s.create({ ...TASK, name: 'n', tags: { k: 'v' } });
      await s.setJob(t.id, '1', {});
      await s.transition(t.id, 'RUNNING');
      await s.setLogs(t.id, []);
      await s.setRun(t.id, { jobId: '1' });
      await s.list({ tags: [['k', 'v']], pageSize: 10, view: 'MINIMAL', namePrefix: 'n' });
      const lock = new LeaderLock(own, s.keys.lock('reconciler'), 10_000);
      await lock.acquire();
      const keys = await allKeys(own);
      expect(keys.filter((k) => k.startsWith(p)).length).toBeGreaterThanOrEqual(6);
      expect(keys.filter((k) => !k.startsWith(family))).toEqual([]);
    } finally {
      await dropPrefix(own, p);
      own.disconnect();
    }
  });

  it('sees a key written outside its prefix', async () => {
    const own = new Redis(REDIS_URL, { db: KEYS_DB, maxRetriesPerRequest: 1 });
    const stray = `${testPrefix('stray')}x`;
    try {
      await own.set(stray, '1');
      expect((await allKeys(own)).filter((k) => !k.startsWith('tesgw-test:keys:'))).toContain(stray);
    } finally {
      await own.del(stray);
      own.disconnect();
    }
  });
});

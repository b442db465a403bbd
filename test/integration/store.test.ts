import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';
import type { Redis } from 'ioredis';
import { BacklogFullError } from '../../src/errors.js';

const TASK = { executors: [{ image: 'alpine', command: ['true'] }] };

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

  it('never moves a task backwards, whatever sources the caller names', async () => {
    const t = await storeA.create(TASK);
    await storeA.transition(t.id, 'INITIALIZING');
    expect(await storeA.transition(t.id, 'QUEUED', { from: ['INITIALIZING'] })).toEqual({
      outcome: 'illegal',
      previous: 'INITIALIZING',
    });
    await storeA.transition(t.id, 'RUNNING');
    for (const back of ['QUEUED', 'INITIALIZING'] as const) {
      expect((await storeA.transition(t.id, back, { from: ['RUNNING'] })).outcome).toBe('illegal');
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

  it('keeps every key under its prefix', async () => {
    const p = testPrefix('keys');
    const s = new RedisTaskStore(a, { prefix: p, maxBacklog: 10 });
    const t = await s.create({ ...TASK, name: 'n', tags: { k: 'v' } });
    await s.setJob(t.id, '1', {});
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await a.scan(cursor, 'MATCH', `${p}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    expect(keys.length).toBeGreaterThanOrEqual(6);
    await dropPrefix(a, p);
  });
});

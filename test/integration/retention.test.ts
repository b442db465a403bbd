import { jest } from '@jest/globals';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { createLogger } from '../../src/logger.js';
import { TaskQueues } from '../../src/queue/producer.js';
import { JOB_KINDS, jobIdFor } from '../../src/queue/jobs.js';
import { Reconciler } from '../../src/reconciler/reconciler.js';
import { LeaderLock } from '../../src/store/leader-lock.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { TaskRetention } from '../../src/task-retention.js';
import { TERMINAL_STATES, type TesState } from '../../src/tes/state.js';
import { taskDirOf } from '../../src/tes/task-directory.js';
import { newTaskId } from '../../src/tes/task-id.js';
import type { TaskRequest } from '../../src/tes/types.js';
import { startTestGateway } from '../helpers/gateway.js';
import { seedOldTask } from '../helpers/old-tasks.js';
import { connect, dropPrefix, testPrefix, keysUnder } from '../helpers/redis.js';
import { idleDriver } from '../helpers/idle-driver.js';

jest.setTimeout(60_000);

/**
 * Expiry of finished tasks against a real Redis and real files. Tasks are made through the store as
 * the gateway makes them; the tests then run retention as if 40 days had passed (cutoff 10 days
 * ahead), and place a task in time by its `ended` field where they need one that is still young.
 */
const DAY_MS = 24 * 3600 * 1000;
const LATER = (): number => Date.now() + 40 * DAY_MS;
const STATUS = {
  jobId: '1',
  state: 'COMPLETED',
  rawState: 'COMPLETED',
  exitCode: { code: 0, signal: 0 },
} as const;

/** Every key with its value read by type (DUMP is no fingerprint: a hash's order may change). */
async function snapshot(redis: Redis, prefix: string): Promise<Map<string, unknown>> {
  const out = new Map<string, unknown>();
  for (const key of await keysUnder(redis, prefix)) {
    const type = await redis.type(key);
    const value =
      type === 'hash'
        ? Object.entries(await redis.hgetall(key)).sort()
        : type === 'zset'
          ? await redis.zrange(key, 0, -1, 'WITHSCORES')
          : type === 'list'
            ? await redis.lrange(key, 0, -1)
            : type === 'set'
              ? (await redis.smembers(key)).sort()
              : type === 'string'
                ? await redis.get(key)
                : type === 'stream'
                  ? await redis.xrange(key, '-', '+')
                  : type;
    out.set(key, [type, value]);
  }
  return out;
}

/** A driver that is never asked anything: the reconciler tests have no active jobs. */
const IDLE_DRIVER = idleDriver('local');

describe('retention of finished tasks', () => {
  let redis: Redis;
  let workRoot: string;
  let outside: string;
  let prefix: string;
  let store: RedisTaskStore;
  let queues: TaskQueues;

  function retention(batchSize = 500, days = 30): TaskRetention {
    return new TaskRetention({
      redis,
      prefix,
      queues,
      workRoot,
      terminalTasksDays: days,
      batchSize,
    });
  }

  /** A task as the gateway makes one, ended in `state`, with its directory and queue jobs. */
  async function finished(
    state: TesState,
    request: Partial<TaskRequest> = {},
    options: { owner?: string; files?: Record<string, string> } = {},
  ): Promise<string> {
    const task = await store.create(
      { executors: [{ image: 'alpine', command: ['true'] }], ...request },
      options.owner ? { owner: { user: options.owner, groups: ['lab'] } } : {},
    );
    await queues.enqueue('submit', { taskId: task.id });
    await store.setJob(task.id, `${task.id.slice(-6)}`, { workDir: taskDirOf(workRoot, task.id) });
    if (TERMINAL_STATES.includes(state)) {
      await queues.enqueue('cancel', { taskId: task.id });
      await queues.enqueue('finalize', { taskId: task.id, status: STATUS });
      expect((await store.transition(task.id, state)).outcome).toBe('ok');
    } else {
      await store.transition(task.id, state);
    }
    const dir = taskDirOf(workRoot, task.id);
    mkdirSync(join(dir, 'exec-0'), { recursive: true });
    for (const [name, text] of Object.entries(options.files ?? { 'exec-0/stdout': 'out\n' })) {
      writeFileSync(join(dir, name), text);
    }
    return task.id;
  }

  /** Moves a task's end `days` into the future: young at the tests' later cutoff. */
  async function endIn(taskId: string, days: number): Promise<void> {
    await redis.hset(store.keys.task(taskId), 'ended', String(Date.now() + days * DAY_MS));
  }

  beforeEach(() => {
    redis = connect();
    prefix = testPrefix('retention');
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 100_000 });
    queues = new TaskQueues(redis, store.keys.bullPrefix, { submitAttempts: 1, submitBackoffMs: 1000 });
    workRoot = mkdtempSync(join('/var/tmp', 'tesgw-retention-'));
    outside = mkdtempSync(join('/var/tmp', 'tesgw-retention-outside-'));
  });

  afterEach(async () => {
    await queues.close();
    await dropPrefix(redis, prefix);
    redis.disconnect();
    for (const dir of [workRoot, outside]) {
      // A test may leave directories without write permission.
      openUpForCleanup(dir);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('records when a task ended as it becomes terminal, and only then', async () => {
    const before = Date.now();
    const task = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
    await store.transition(task.id, 'RUNNING');
    expect(await redis.hget(store.keys.task(task.id), 'ended')).toBeNull();
    await store.transition(task.id, 'COMPLETE');
    const ended = Number(await redis.hget(store.keys.task(task.id), 'ended'));
    expect(ended).toBeGreaterThanOrEqual(before - 1000);
    expect(ended).toBeLessThanOrEqual(Date.now() + 1000);
  });

  it('removes an expired task whole: record, every index entry, queue jobs and directory', async () => {
    const ids: string[] = [];
    for (const [i, state] of TERMINAL_STATES.entries()) {
      ids.push(
        await finished(
          state,
          { name: `job ${i}`, tags: { project: `p${i}`, 'a:b': 'c', 'ü \u0001"/': 'v/"' } },
          { owner: `user${i}` },
        ),
      );
    }
    // A terminal task left in the jobs hash by an older gateway goes from there too.
    await redis.hset(store.keys.jobs, ids[0]!, '123');
    for (const id of ids) {
      expect(await redis.exists(`${store.keys.bullPrefix}:submit:${jobIdFor('submit', id)}`)).toBe(1);
    }

    const tally = await retention().sweep(LATER());

    expect(tally.count).toBe(TERMINAL_STATES.length);
    expect(tally.failed).toBe(0);
    for (const state of TERMINAL_STATES) expect(tally.byState[state]).toBe(1);
    expect(tally.bytes).toBe(4 * TERMINAL_STATES.length);
    const left = await keysUnder(redis, prefix);
    // Only the queues' own keys remain: no task, no index (empty ones included), no job of these tasks.
    expect(left.filter((k) => !k.startsWith(`${store.keys.bullPrefix}:`))).toEqual([]);
    for (const id of ids) {
      expect(left.filter((k) => k.includes(id))).toEqual([]);
      for (const kind of JOB_KINDS)
        expect(await queues.queue(kind).getJob(jobIdFor(kind, id))).toBeUndefined();
      expect(existsSync(taskDirOf(workRoot, id))).toBe(false);
    }
  });

  it('keeps young and unfinished tasks, and a tag index that a kept task still uses', async () => {
    const old = await finished(
      'COMPLETE',
      { name: 'old', tags: { shared: 'x', mine: 'old' } },
      { owner: 'ann' },
    );
    const young = await finished('COMPLETE', { name: 'young', tags: { shared: 'x' } }, { owner: 'ann' });
    await endIn(young, 20);
    const running = await finished('RUNNING', { name: 'running', tags: { shared: 'x' } });
    const queued = await finished('QUEUED', { tags: { shared: 'x' } });
    const before = await snapshot(redis, `${store.keys.task(young)}`);

    const tally = await retention().sweep(LATER());

    expect(tally.count).toBe(1);
    expect(await redis.exists(store.keys.task(old))).toBe(0);
    expect(existsSync(taskDirOf(workRoot, old))).toBe(false);
    for (const id of [young, running, queued]) {
      expect(await redis.exists(store.keys.task(id))).toBe(1);
      expect(existsSync(taskDirOf(workRoot, id))).toBe(true);
      expect(await redis.zscore(store.keys.all, id)).toBe('0');
      expect(await redis.zscore(store.keys.tagValue('shared', 'x'), id)).toBe('0');
    }
    expect(await snapshot(redis, `${store.keys.task(young)}`)).toEqual(before);
    expect(await redis.zrange(store.keys.tagKey('shared'), 0, -1)).toEqual([young, running, queued].sort());
    expect(await redis.zrange(store.keys.owner('ann'), 0, -1)).toEqual([young]);
    expect(await redis.exists(store.keys.tagKey('mine'), store.keys.tagValue('mine', 'old'))).toBe(0);
    expect(await redis.zrange(store.keys.names, 0, -1)).toEqual([`running\0${running}`, `young\0${young}`]);
    expect(await redis.hget(store.keys.jobs, running)).not.toBeNull();
    const page = await store.list({ tags: [['shared', 'x']], pageSize: 10, view: 'MINIMAL' });
    expect(page.records.map((r) => r.id).sort()).toEqual([young, running, queued].sort());
  });

  it('dates a task that ended before `ended` was recorded by its logs, else its creation', async () => {
    const byLogs = await finished('EXECUTOR_ERROR');
    const youngByLogs = await finished('COMPLETE');
    const byCreation = await finished('SYSTEM_ERROR');
    for (const id of [byLogs, youngByLogs, byCreation]) await redis.hdel(store.keys.task(id), 'ended');
    const log = (endMs: number): string =>
      JSON.stringify([{ logs: [], outputs: [], end_time: new Date(endMs).toISOString() }]);
    await store.setLogs(byLogs, JSON.parse(log(Date.now())));
    await store.setLogs(youngByLogs, JSON.parse(log(Date.now() + 20 * DAY_MS)));

    const tally = await retention().sweep(LATER());

    expect(tally.count).toBe(2);
    expect(await redis.exists(store.keys.task(byLogs))).toBe(0);
    expect(await redis.exists(store.keys.task(byCreation))).toBe(0);
    expect(await redis.exists(store.keys.task(youngByLogs))).toBe(1);
  });

  it('reads at most batchSize index entries a pass, and steps over young tasks', async () => {
    const young: string[] = [];
    for (let i = 0; i < 4; i++) {
      young.push(await finished('COMPLETE'));
      await endIn(young.at(-1)!, 20);
    }
    const old: string[] = [];
    for (let i = 0; i < 5; i++) old.push(await finished('COMPLETE'));
    const r = retention(3);
    const now = LATER();

    const passes = [];
    for (;;) {
      const report = await r.pass(now);
      passes.push(report);
      expect(report.examined).toBeLessThanOrEqual(3);
      if (report.sweepDone) break;
      expect(passes.length).toBeLessThan(10);
    }
    // The young ones come first (created first) and fill the first pass: the walk goes past them.
    expect(passes[0]!.examined).toBe(3);
    expect(passes[0]!.tally.count).toBe(0);
    expect(passes.reduce((n, p) => n + p.tally.count, 0)).toBe(5);
    for (const id of old) expect(await redis.exists(store.keys.task(id))).toBe(0);
    for (const id of young) expect(await redis.exists(store.keys.task(id))).toBe(1);
  });

  it('never reads tasks created after the cutoff, however long ago they say they ended', async () => {
    const id = await finished('COMPLETE');
    await redis.hset(store.keys.task(id), 'ended', '0');
    const report = await retention(500).pass(Date.now());
    expect(report).toMatchObject({ examined: 0, sweepDone: true, tally: { count: 0 } });
    expect(await redis.exists(store.keys.task(id))).toBe(1);
  });

  it('keeps everything when terminalTasksDays is 0', async () => {
    const id = await finished('COMPLETE');
    const r = retention(500, 0);
    expect(r.enabled).toBe(false);
    expect((await r.sweep(Date.now() + 10_000 * DAY_MS)).count).toBe(0);
    expect((await r.survey(Date.now() + 10_000 * DAY_MS)).count).toBe(0);
    expect(await redis.exists(store.keys.task(id))).toBe(1);
  });

  it('reports in a dry run what would go, and changes nothing', async () => {
    const a = await finished(
      'COMPLETE',
      { tags: { t: '1' } },
      { files: { 'exec-0/stdout': 'x'.repeat(1000) } },
    );
    await redis.hset(store.keys.task(a), 'ended', String(Date.now() - 5 * DAY_MS));
    const b = await finished('CANCELED', {}, { files: { 'exec-0/stderr': 'y'.repeat(24) } });
    const young = await finished('COMPLETE');
    await endIn(young, 20);
    const keysBefore = await snapshot(redis, prefix);

    const now = LATER();
    const tally = await retention(1).survey(now);

    expect(tally).toMatchObject({ count: 2, byState: { COMPLETE: 1, CANCELED: 1 }, bytes: 1024, failed: 0 });
    expect(tally.oldestEndMs).toBe(Number(await redis.hget(store.keys.task(a), 'ended')));
    expect(tally.newestEndMs).toBe(Number(await redis.hget(store.keys.task(b), 'ended')));
    expect(await snapshot(redis, prefix)).toEqual(keysBefore);
    for (const id of [a, b, young]) expect(existsSync(taskDirOf(workRoot, id))).toBe(true);
    expect(readFileSync(join(taskDirOf(workRoot, a), 'exec-0', 'stdout'), 'utf8')).toHaveLength(1000);
  });

  it('removes the job array files in .arrays/ older than the retention, and only those', async () => {
    const arrays = join(workRoot, '.arrays');
    mkdirSync(arrays);
    const old = [
      '0123456789ab.sh',
      '0123456789ab.sbatch-command',
      '0123456789ab_0.out',
      '0123456789ab_17.err',
    ];
    for (const name of old) writeFileSync(join(arrays, name), 'x');
    // Another batch, changed lately (an element that started late wrote its output file again).
    writeFileSync(join(arrays, 'ba9876543210_3.out'), 'young');
    const later = LATER();
    utimesSync(join(arrays, 'ba9876543210_3.out'), later / 1000, later / 1000);
    // Not a name the launcher gives: never touched, however old.
    writeFileSync(join(arrays, 'notes.txt'), 'keep');

    const survey = await retention().survey(later);
    expect(survey).toMatchObject({ arrayFiles: 4, arrayBytes: 4 });
    expect(readdirSync(arrays).sort()).toEqual([...old, 'ba9876543210_3.out', 'notes.txt'].sort());

    expect(await retention().sweep(later)).toMatchObject({ arrayFiles: 4, arrayBytes: 4 });
    expect(readdirSync(arrays).sort()).toEqual(['ba9876543210_3.out', 'notes.txt']);
  });

  it('removes old task directories that no task record points to, and only those', async () => {
    // A task whose record is gone (lost in a failover, say): its directory is no task's.
    const lost = newTaskId(Date.now() - 50 * DAY_MS);
    mkdirSync(join(taskDirOf(workRoot, lost), 'exec-0'), { recursive: true });
    writeFileSync(join(taskDirOf(workRoot, lost), 'exec-0', 'stdout'), 'x'.repeat(10));
    // A task still running: old, but its record is there.
    const running = await finished('RUNNING');
    // Lost too, but changed lately; and a folder not named as a task.
    const fresh = newTaskId();
    mkdirSync(taskDirOf(workRoot, fresh));
    const later = LATER();
    utimesSync(taskDirOf(workRoot, fresh), later / 1000, later / 1000);
    mkdirSync(join(workRoot, 'notes'));

    const survey = await retention().survey(later);
    expect(survey).toMatchObject({ orphanDirs: 1, orphanBytes: 10, count: 0 });
    expect(existsSync(taskDirOf(workRoot, lost))).toBe(true);

    expect(await retention().sweep(later)).toMatchObject({ orphanDirs: 1, orphanBytes: 10, failed: 0 });
    expect(existsSync(taskDirOf(workRoot, lost))).toBe(false);
    for (const dir of [taskDirOf(workRoot, running), taskDirOf(workRoot, fresh), join(workRoot, 'notes')]) {
      expect(existsSync(dir)).toBe(true);
    }
  });

  it('unlinks a task directory that is a link, and links inside one, never what they point to', async () => {
    mkdirSync(join(outside, 'keep'));
    writeFileSync(join(outside, 'keep', 'precious'), 'do not remove');
    const linked = await finished('COMPLETE');
    rmSync(taskDirOf(workRoot, linked), { recursive: true });
    symlinkSync(join(outside, 'keep'), taskDirOf(workRoot, linked));
    const inner = await finished('COMPLETE');
    symlinkSync(join(outside, 'keep'), join(taskDirOf(workRoot, inner), 'mnt'));
    symlinkSync(join(outside, 'keep', 'precious'), join(taskDirOf(workRoot, inner), 'exec-0', 'file'));

    const tally = await retention().sweep(LATER());

    expect(tally.count).toBe(2);
    expect(() => lstatSync(taskDirOf(workRoot, linked))).toThrow(/ENOENT/);
    expect(existsSync(taskDirOf(workRoot, inner))).toBe(false);
    expect(readFileSync(join(outside, 'keep', 'precious'), 'utf8')).toBe('do not remove');
  });

  it('removes a directory an executor made read-only', async () => {
    const id = await finished('COMPLETE');
    const outputs = join(taskDirOf(workRoot, id), 'mnt', 'outputs');
    mkdirSync(join(outputs, 'deep'), { recursive: true });
    writeFileSync(join(outputs, 'deep', 'result'), 'r');
    chmodSync(join(outputs, 'deep'), 0o500);
    chmodSync(outputs, 0o500);

    const tally = await retention().sweep(LATER());

    expect(tally).toMatchObject({ count: 1, failed: 0 });
    expect(existsSync(taskDirOf(workRoot, id))).toBe(false);
  });

  it('expires from the reconciler of the leader only', async () => {
    const runs = { a: 0, b: 0 };
    const lockKey = store.keys.lock('reconciler');
    const make = (name: 'a' | 'b'): Reconciler =>
      new Reconciler({
        store,
        driver: IDLE_DRIVER,
        queues,
        lock: new LeaderLock(redis, lockKey, 5_000),
        logger: createLogger('silent'),
        workRoot,
        pollIntervalMs: 100,
        missingGraceMs: 60_000,
        housekeeping: async () => {
          runs[name]++;
        },
        housekeepingIntervalMs: 300,
      });
    const a = make('a');
    a.start();
    await new Promise((r) => setTimeout(r, 200));
    const b = make('b');
    b.start();
    await new Promise((r) => setTimeout(r, 1200));
    // b first: once a stops, it frees the lease, and b would rightly take over.
    await b.stop();
    await a.stop();
    expect(runs.a).toBeGreaterThanOrEqual(2);
    expect(runs.a).toBeLessThanOrEqual(6);
    expect(runs.b).toBe(0);
  });

  it('expires old tasks from a running gateway, and keeps its young ones', async () => {
    const gwRoot = mkdtempSync(join('/var/tmp', 'tesgw-retention-gw-'));
    const gwPrefix = testPrefix('retention-gw');
    const old = await seedOldTask(redis, gwPrefix, gwRoot, {
      ageDays: 45,
      state: 'COMPLETE',
      endedDaysAgo: 40,
    });
    const recent = await seedOldTask(redis, gwPrefix, gwRoot, {
      ageDays: 45,
      state: 'COMPLETE',
      endedDaysAgo: 2,
    });
    const gw = await startTestGateway(
      'retention-gw',
      { backend: 'local', container: { runtime: 'bwrap-host' }, retention: { intervalMs: 1000 } },
      { prefix: gwPrefix, workRoot: gwRoot },
    );
    try {
      const deadline = Date.now() + 15_000;
      while ((await redis.exists(`${gwPrefix}task:${old}`)) === 1 && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 100));
      }
      expect(await redis.exists(`${gwPrefix}task:${old}`)).toBe(0);
      expect(existsSync(taskDirOf(gwRoot, old))).toBe(false);
      expect(await redis.exists(`${gwPrefix}task:${recent}`)).toBe(1);
      expect(existsSync(taskDirOf(gwRoot, recent))).toBe(true);
    } finally {
      await gw.close();
      rmSync(gwRoot, { recursive: true, force: true });
    }
  });
});

/** Makes every directory below `dir` writable again, so that a test's clean-up can remove it. */
function openUpForCleanup(dir: string): void {
  if (!existsSync(dir)) return;
  const walk = (path: string): void => {
    const st = lstatSync(path);
    if (!st.isDirectory()) return;
    chmodSync(path, 0o700);
    for (const name of readdirSyncSafe(path)) walk(join(path, name));
  };
  walk(dir);
}

function readdirSyncSafe(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

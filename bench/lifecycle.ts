import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { TaskQueues } from '../src/queue/producer.js';
import { RedisTaskStore } from '../src/store/redis-task-store.js';
import { TaskRetention } from '../src/task-retention.js';
import { TERMINAL_STATES } from '../src/tes/state.js';
import { taskDirOf } from '../src/tes/task-directory.js';
import { taskDirBytes } from '../src/compute/remove-task-dir.js';
import { fmt, percentile, type Row } from './table.js';

/**
 * Expiry of finished tasks: TASKS terminal tasks (tags, a name, an owner, a task directory of three
 * small files each), made through the store as the gateway makes them, then expired by the leader's
 * passes (retention.batchSize 500) with the clock moved past the retention. Reports tasks expired per
 * second, the time of one pass, and Redis memory before the tasks, with them, and after expiry; then
 * the same without task directories, for the Redis side alone and the time Redis spends per script.
 *
 * Runs on a private Redis (no persistence, a free port) so that memory is this bench's alone.
 */
const TASKS = Number(process.env.BENCH_LIFECYCLE_TASKS ?? 20_000);
const BATCH = 500;
const DAY_MS = 24 * 3600 * 1000;

export async function startPrivateRedis(): Promise<{ redis: Redis; server: ChildProcess }> {
  const port = 20_000 + Math.floor(Math.random() * 5000);
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  // Refusals while the server starts are expected: connect() below retries them.
  redis.on('error', () => undefined);
  for (let i = 0; ; i++) {
    try {
      await redis.connect();
      await redis.ping();
      return { redis, server };
    } catch (err) {
      if (i >= 50) {
        server.kill();
        throw new Error(`a private redis-server on port ${port} did not answer: ${(err as Error).message}`);
      }
      redis.disconnect();
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/^used_memory:(\d+)/m.exec(info)?.[1] ?? NaN);
}

const mib = (bytes: number): string => `${fmt(bytes / 2 ** 20, 1)} MiB`;

export async function benchLifecycle(rows: Row[]): Promise<void> {
  const { redis, server } = await startPrivateRedis();
  const prefix = 'tesgw-bench-lifecycle:';
  const workRoot = mkdtempSync(join(tmpdir(), 'tesgw-bench-lifecycle-'));
  const store = new RedisTaskStore(redis, { prefix, maxBacklog: 10_000_000 });
  const queues = new TaskQueues(redis, store.keys.bullPrefix, { submitAttempts: 1, submitBackoffMs: 1000 });
  try {
    // The queues' own keys exist in a running gateway whatever its tasks.
    await Promise.all(['submit', 'cancel', 'finalize'].map((k) => queues.queue(k as 'submit').count()));
    const empty = await usedMemory(redis);

    const seed = async (withDirs: boolean): Promise<void> => {
      for (let i = 0; i < TASKS; i += 200) {
        await Promise.all(
          Array.from({ length: Math.min(200, TASKS - i) }, async (_, j) => {
            const n = i + j;
            const task = await store.create(
              {
                name: `bench-${n}`,
                tags: { project: `p${n % 20}`, run: `r${n}` },
                executors: [{ image: 'alpine', command: ['sh', '-c', `echo ${n}`] }],
              },
              { owner: { user: `user${n % 10}` } },
            );
            await store.transition(task.id, TERMINAL_STATES[n % TERMINAL_STATES.length]!);
            if (!withDirs) return;
            const dir = taskDirOf(workRoot, task.id);
            mkdirSync(join(dir, 'exec-0'), { recursive: true });
            writeFileSync(join(dir, 'job.sh'), '#!/bin/bash\n'.repeat(40));
            writeFileSync(join(dir, 'exec-0', 'stdout'), `${n}\n`);
            writeFileSync(join(dir, 'exec-0', 'exit_code'), '0\n');
          }),
        );
      }
    };
    const retention = new TaskRetention({
      redis,
      prefix,
      queues,
      workRoot,
      terminalTasksDays: 30,
      batchSize: BATCH,
    });
    /** The leader's passes with the clock past the retention, until the sweep is done. */
    const expireAll = async (): Promise<{ seconds: number; passMs: number[] }> => {
      const later = Date.now() + 31 * DAY_MS;
      const passMs: number[] = [];
      let expired = 0;
      const started = performance.now();
      for (;;) {
        const t0 = performance.now();
        const report = await retention.pass(later);
        passMs.push(performance.now() - t0);
        expired += report.tally.count;
        if (report.tally.failed > 0) throw new Error(`${report.tally.failed} tasks could not be expired`);
        if (report.sweepDone) break;
      }
      const seconds = (performance.now() - started) / 1000;
      const left = (await redis.keys(`${prefix}task:*`)).length + (await redis.keys(`${prefix}idx:*`)).length;
      if (expired !== TASKS || left !== 0) {
        throw new Error(
          `expected ${TASKS} tasks expired and no task or index key left, saw ${expired} and ${left}`,
        );
      }
      return { seconds, passMs: passMs.sort((a, b) => a - b) };
    };

    await seed(true);
    const full = await usedMemory(redis);
    const diskFull = await taskDirBytes(workRoot);
    const whole = await expireAll();
    const after = await usedMemory(redis);
    const diskAfter = await taskDirBytes(workRoot);

    // Again without task directories: the Redis side alone, and the time Redis spends in scripts.
    await seed(false);
    await redis.config('RESETSTAT');
    const redisOnly = await expireAll();
    const stats = await redis.info('commandstats');
    const evalsha = /^cmdstat_evalsha:calls=(\d+),usec=\d+,usec_per_call=([\d.]+)/m.exec(stats);

    const section = 'lifecycle';
    const pass = (r: { passMs: number[] }): string =>
      `${fmt(percentile(r.passMs, 50))} ms / ${fmt(percentile(r.passMs, 99))} ms`;
    rows.push(
      {
        section,
        metric: `expiry of ${fmt(TASKS)} terminal tasks (record, indexes, queue jobs, task dir)`,
        value: `${fmt(TASKS / whole.seconds)} tasks/s (${fmt(whole.seconds, 1)} s)`,
      },
      { section, metric: `one pass of ${BATCH} (p50 / p99)`, value: pass(whole) },
      {
        section,
        metric: `the same without task directories (Redis side only)`,
        value: `${fmt(TASKS / redisOnly.seconds)} tasks/s, a pass ${pass(redisOnly)}`,
      },
      {
        section,
        metric: 'Redis time per expiry script (mean)',
        value: evalsha ? `${evalsha[2]} µs over ${fmt(Number(evalsha[1]))} scripts` : 'not reported',
      },
      {
        section,
        metric: 'Redis memory: no tasks / with the tasks / after expiry',
        value: `${mib(empty)} / ${mib(full)} / ${mib(after)}`,
      },
      {
        section,
        metric: 'task directories: before / after expiry',
        value: `${mib(diskFull)} / ${mib(diskAfter)}`,
      },
    );
  } finally {
    await queues.close().catch(() => undefined);
    redis.disconnect();
    server.kill();
    rmSync(workRoot, { recursive: true, force: true });
  }
}

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { openRedis } from '../src/store/redis-connection.js';
import { loadConfig } from '../src/config/load-config.js';
import { startGateway, type Gateway } from '../src/gateway.js';
import { createLogger } from '../src/logger.js';
import type { SlurmDriver } from '../src/compute/slurm/slurm-driver.js';
import { dropPrefix } from '../src/store/drop-prefix.js';
import { cancelGatewayJobs } from './slurm-cleanup.js';
import { fmt, percentile, type Row } from './table.js';

const TASKS = Number(process.env.BENCH_SCALE_TASKS ?? 10_000);
/** The first tasks, measured alone before the rest arrive: the figures to compare with. */
const FIRST = Math.min(500, TASKS);
const POLL_MS = 2000;
/** How long the reconciler is watched at each size. */
const WATCH_MS = 20_000;
const ROOT = process.cwd();

/**
 * Many active tasks at once on the real single-node Slurm: 10,000 tasks (BENCH_SCALE_TASKS) go as
 * job arrays and stay pending (submitted held), first 500 of them alone, then all. At each size it
 * measures the reconciler's cycle (its duration and sacct calls), GET and list latency, and Redis
 * memory per task; then every task is cancelled over the API at once and timed until all are
 * CANCELED. The cluster is left as found, also after a failure.
 */
export async function benchScale(rows: Row[]): Promise<void> {
  try {
    execFileSync('sinfo', ['-h'], { stdio: 'pipe', timeout: 10_000 });
  } catch {
    rows.push({ section: 'scale', metric: 'skipped', value: 'no cluster (bash scripts/slurm-up.sh)' });
    return;
  }
  const images = join(ROOT, '.tmp', 'images');
  execFileSync('bash', [join(ROOT, 'test/apptainer/build-images.sh'), images], { stdio: 'pipe' });
  const image = join(images, 'busybox.sif');
  const prefix = `tesgw-bench-scale:${Date.now()}:`;
  const workRoot = mkdtempSync('/var/tmp/tesgw-bench-scale-');
  const config = loadConfig({
    env: {},
    overrides: {
      server: { port: 0, host: '127.0.0.1', maxBacklog: 10_000_000 },
      redis: { prefix },
      workRoot,
      backend: 'slurm',
      log: { level: 'silent' },
      container: {
        runtime: 'apptainer',
        executable: join(ROOT, 'test/apptainer/apptainer'),
        imageRoots: [images],
      },
      // Held: the tasks stay active (QUEUED, their jobs pending) for as long as the bench needs.
      slurm: { extraArgs: ['--hold'] },
      reconciler: { pollIntervalMs: POLL_MS },
      security: { allowRoot: true },
    },
  });
  const gateway = await startGateway(config, { api: true, worker: true }, createLogger('silent'));
  const base = `http://127.0.0.1:${gateway.port}/ga4gh/tes/v1`;
  const redis = openRedis(config.redis);
  const cycles = watchCycles(gateway);
  try {
    const body = JSON.stringify({
      name: 'scale',
      tags: { bench: 'scale' },
      executors: [{ image, command: ['true'] }],
    });
    const memoryBefore = await usedMemory(redis);
    const first = await createTasks(base, body, FIRST);
    await waitForSubmitted(redis, gateway, FIRST);
    const small = await measure(base, gateway, cycles, first);
    const rest = await createTasks(base, body, TASKS - FIRST);
    await waitForSubmitted(redis, gateway, TASKS);
    const ids = [...first, ...rest];
    const memoryPerTask = ((await usedMemory(redis)) - memoryBefore) / TASKS;
    const large = await measure(base, gateway, cycles, ids);

    const cycle = (m: Measured): string =>
      `${fmt(percentile(m.cycleMs, 50))} / ${fmt(m.cycleMs[m.cycleMs.length - 1] ?? NaN)}`;
    const largeCycleP50 = percentile(large.cycleMs, 50);
    rows.push({
      section: 'scale',
      metric: `reconciler cycle p50 / max (ms): ${fmt(FIRST)} / ${fmt(TASKS)} active tasks`,
      value: `${cycle(small)} / ${cycle(large)}`,
      goal: '< 1000',
      verdict: largeCycleP50 < 1000 ? 'met' : 'missed',
    });
    rows.push({
      section: 'scale',
      metric: `tasks read per cycle (quiet ones are skipped, a tenth read each time): ${fmt(FIRST)} / ${fmt(TASKS)} active`,
      value: `${fmt(small.readsPerCycle)} / ${fmt(large.readsPerCycle)}`,
    });
    rows.push({
      section: 'scale',
      metric: `sacct calls per cycle, ${fmt(TASKS)} active (slurm.sacctChunkSize ${fmt(config.slurm.sacctChunkSize)})`,
      value: fmt(large.sacctPerCycle, 2),
    });
    rows.push({
      section: 'scale',
      metric: `GET /tasks/{id} p50 / p99 (ms): ${fmt(FIRST)} / ${fmt(TASKS)} active`,
      value: `${fmt(percentile(small.getMs, 50), 2)} / ${fmt(percentile(small.getMs, 99), 2)} / ${fmt(percentile(large.getMs, 50), 2)} / ${fmt(percentile(large.getMs, 99), 2)}`,
    });
    rows.push({
      section: 'scale',
      metric: `list page of 100 (state=QUEUED) p50 / p99 (ms): ${fmt(FIRST)} / ${fmt(TASKS)} active`,
      value: `${fmt(percentile(small.listMs, 50), 2)} / ${fmt(percentile(small.listMs, 99), 2)} / ${fmt(percentile(large.listMs, 50), 2)} / ${fmt(percentile(large.listMs, 99), 2)}`,
    });
    rows.push({
      section: 'scale',
      metric: 'Redis memory per active task, with its job and queue entries (bytes)',
      value: fmt(memoryPerTask),
    });

    // Every task cancelled at once, as an engine aborting a run does.
    const jobIds = new Set(
      Object.values(await redis.hgetall(gateway.store.keys.jobs)).map((id) => id.split('_')[0]!),
    );
    const cancelStart = Date.now();
    await inBatches(ids, 100, async (id) => {
      const res = await fetch(`${base}/tasks/${id}:cancel`, { method: 'POST' });
      if (!res.ok) throw new Error(`cancel of ${id} answered ${res.status}: ${await res.text()}`);
    });
    const accepted = Date.now() - cancelStart;
    const deadline = Date.now() + 300_000;
    while ((await gateway.store.countInState('CANCELED')) < TASKS) {
      if (Date.now() > deadline) {
        const left = TASKS - (await gateway.store.countInState('CANCELED'));
        throw new Error(`${left} of ${TASKS} tasks were not CANCELED within 300 s of their cancel`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    rows.push({
      section: 'scale',
      metric: `${fmt(TASKS)} cancels: all answered / all CANCELED (s)`,
      value: `${fmt(accepted / 1000, 2)} / ${fmt((Date.now() - cancelStart) / 1000, 2)}`,
    });
    const queued = execFileSync('squeue', ['-h', '-o', '%F'], { encoding: 'utf8' }).split('\n');
    const left = [...new Set(queued.filter((id) => jobIds.has(id)))];
    if (left.length > 0)
      throw new Error(`jobs still queued after their tasks were CANCELED: ${left.join(' ')}`);
  } finally {
    await cancelGatewayJobs(redis, gateway.store.keys);
    await gateway.close();
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(workRoot, { recursive: true, force: true });
  }
}

interface Measured {
  /** Reconciler cycles seen while watching, in ms, sorted. */
  cycleMs: number[];
  /** Tasks read per cycle while watching, on average. */
  readsPerCycle: number;
  sacctPerCycle: number;
  getMs: number[];
  listMs: number[];
}

/** Watches the reconciler for WATCH_MS while timing GETs and list pages one after another. */
async function measure(
  base: string,
  gateway: Gateway,
  cycles: CycleLog,
  ids: readonly string[],
): Promise<Measured> {
  const driver = gateway.driver as SlurmDriver;
  const sacctBefore = driver.sacctCalls.states;
  const cyclesBefore = gateway.reconciler!.stats.cycles;
  const seenBefore = cycles.durations.length;
  const getMs: number[] = [];
  const listMs: number[] = [];
  const until = Date.now() + WATCH_MS;
  for (let i = 0; Date.now() < until; i++) {
    const t0 = performance.now();
    const res = await fetch(`${base}/tasks/${ids[(i * 7919) % ids.length]}`);
    await res.arrayBuffer();
    getMs.push(performance.now() - t0);
    if (i % 10 === 0) {
      const t1 = performance.now();
      const page = await fetch(`${base}/tasks?state=QUEUED&page_size=100`);
      const json = (await page.json()) as { tasks: unknown[] };
      listMs.push(performance.now() - t1);
      if (json.tasks.length !== 100) throw new Error(`a QUEUED list page held ${json.tasks.length} tasks`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const ran = gateway.reconciler!.stats.cycles - cyclesBefore;
  if (ran === 0) throw new Error(`no reconciler cycle ran in ${WATCH_MS} ms`);
  return {
    cycleMs: cycles.durations.slice(seenBefore).sort((a, b) => a - b),
    readsPerCycle: mean(cycles.reads.slice(seenBefore)),
    sacctPerCycle: (driver.sacctCalls.states - sacctBefore) / ran,
    getMs: getMs.sort((a, b) => a - b),
    listMs: listMs.sort((a, b) => a - b),
  };
}

interface CycleLog {
  /** How long each reconciler cycle with active jobs took, in ms. */
  durations: number[];
  /** How many tasks each of them read. */
  reads: number[];
}

/** Records each reconciler cycle with active jobs. */
function watchCycles(gateway: Gateway): CycleLog {
  const reconciler = gateway.reconciler;
  if (!reconciler) throw new Error('the gateway runs no reconciler');
  const log: CycleLog = { durations: [], reads: [] };
  const cycle = reconciler.cycle.bind(reconciler);
  reconciler.cycle = async () => {
    const t0 = performance.now();
    const report = await cycle();
    if (report.active > 0) {
      log.durations.push(performance.now() - t0);
      log.reads.push(report.active - report.skipped);
    }
    return report;
  };
  return log;
}

/** Creates `n` tasks over HTTP, 100 at a time; returns their ids. */
async function createTasks(base: string, body: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  await inBatches(Array.from({ length: n }), 100, async () => {
    const res = await fetch(`${base}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    if (!res.ok) throw new Error(`create answered ${res.status}: ${await res.text()}`);
    ids.push(((await res.json()) as { id: string }).id);
  });
  return ids;
}

/** Waits until `n` tasks have their job (the jobs index counts tasks with a job, not yet ended). */
async function waitForSubmitted(redis: Redis, gateway: Gateway, n: number): Promise<void> {
  const deadline = Date.now() + 300_000;
  while ((await redis.hlen(gateway.store.keys.jobs)) < n) {
    if (Date.now() > deadline) {
      const have = await redis.hlen(gateway.store.keys.jobs);
      throw new Error(`${n - have} of ${n} tasks got no job within 300 s`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Runs `work` over `items`, at most `width` at once. */
async function inBatches<T>(items: readonly T[], width: number, work: (item: T) => Promise<void>) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  });
  await Promise.all(lanes);
}

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

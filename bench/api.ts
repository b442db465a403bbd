import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { loadConfig } from '../src/config/load-config.js';
import { RedisTaskStore } from '../src/store/redis-task-store.js';
import { dropPrefix } from '../src/store/drop-prefix.js';
import { fmt, percentile, type Row } from './table.js';

/**
 * The API against a real Redis: creates and reads per second under load (autocannon, 50
 * connections), then the latency of a tag-filtered list page of 100 with 100,000 tasks stored, and
 * Redis memory per stored task.
 */
const STORED = 100_000;
const LOAD_SECONDS = Number(process.env.BENCH_SECONDS ?? 10);

export async function benchApi(rows: Row[]): Promise<void> {
  const prefix = `tesgw-bench:${Date.now()}:`;
  const port = 18_000 + Math.floor(Math.random() * 1000);
  const overrides = {
    // As it would be deployed on this 2-core host: one API process per core.
    server: { port, host: '127.0.0.1', maxBacklog: 10_000_000, processes: 2 },
    redis: { prefix },
    log: { level: 'warn' },
  };
  const config = loadConfig({ env: {}, overrides });
  // The API runs in its own process, as deployed; the load generator gets the other core.
  const configFile = join(mkdtempSync(join(tmpdir(), 'tesgw-bench-')), 'gateway.yaml');
  writeFileSync(configFile, JSON.stringify(overrides));
  const server = await startApiProcess(configFile, `http://127.0.0.1:${port}/ga4gh/tes/v1/service-info`);
  const base = `http://127.0.0.1:${port}/ga4gh/tes/v1`;
  const redis = new Redis(config.redis.url);
  const store = new RedisTaskStore(redis, { prefix, maxBacklog: config.server.maxBacklog });
  try {
    const body = JSON.stringify({
      name: 'bench task',
      tags: { run: 'r1', kind: 'bench' },
      executors: [{ image: 'alpine', command: ['echo', 'hello'] }],
    });
    const memStart = await usedMemory(redis);
    const created = await autocannon({
      url: `${base}/tasks`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      connections: 50,
      duration: LOAD_SECONDS,
    });
    const createdCount = await store.countInState('QUEUED');
    const memWithQueue = (await usedMemory(redis)) - memStart;
    rows.push({
      section: 'api',
      metric: 'creates per second (POST /tasks, stored + enqueued)',
      value: fmt(created.requests.average),
      goal: '>= 2,000',
      verdict: created.requests.average >= 2000 ? 'met' : 'missed',
    });
    rows.push({
      section: 'api',
      metric: 'create latency p50 / p99 (ms)',
      value: `${created.latency.p50} / ${created.latency.p99}`,
    });
    if (created.non2xx > 0 || created.errors > 0) {
      rows.push({
        section: 'api',
        metric: 'create errors',
        value: `${created.non2xx} non-2xx, ${created.errors} errors`,
      });
    }

    const ids = await store.idsInState('QUEUED', 10_000);
    let next = 0;
    const read = await autocannon({
      url: base,
      connections: 50,
      duration: LOAD_SECONDS,
      requests: [
        {
          method: 'GET',
          setupRequest: (req) => ({ ...req, path: `/ga4gh/tes/v1/tasks/${ids[next++ % ids.length]}` }),
        },
      ],
    });
    rows.push({
      section: 'api',
      metric: 'GET /tasks/{id} per second (MINIMAL)',
      value: fmt(read.requests.average),
      goal: '>= 5,000',
      verdict: read.requests.average >= 5000 ? 'met' : 'missed',
    });

    // Fill the store to 100,000 tasks: 1% carry the tag the list asks for.
    const storeMemStart = await usedMemory(redis);
    const toAdd = STORED - createdCount;
    const inFlight = new Set<Promise<unknown>>();
    for (let i = 0; i < toAdd; i++) {
      const p = store
        .create({
          name: `task-${i}`,
          tags: { run: `r${(i % 100) + 2}`, kind: 'bench' },
          executors: [{ image: 'alpine', command: ['echo', String(i)] }],
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= 256) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    const perTaskStore = ((await usedMemory(redis)) - storeMemStart) / toAdd;
    const total = await store.countInState('QUEUED');

    const latencies: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const t0 = performance.now();
      const res = await fetch(
        `${base}/tasks?tag_key=run&tag_value=r${(i % 100) + 2}&page_size=100&view=MINIMAL`,
      );
      const json = (await res.json()) as { tasks: unknown[] };
      latencies.push(performance.now() - t0);
      if (json.tasks.length !== 100) throw new Error(`expected a full page, got ${json.tasks.length}`);
    }
    latencies.sort((a, b) => a - b);
    const p99 = percentile(latencies, 99);
    rows.push({
      section: 'api',
      metric: `tag-filtered list page of 100, ${fmt(total)} tasks stored: p50 / p99 (ms)`,
      value: `${fmt(percentile(latencies, 50), 2)} / ${fmt(p99, 2)}`,
      goal: 'p99 < 20',
      verdict: p99 < 20 ? 'met' : 'missed',
    });
    const deep: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now();
      await fetch(
        `${base}/tasks?state=QUEUED&tag_key=kind&tag_value=bench&name_prefix=task-99&page_size=100`,
      );
      deep.push(performance.now() - t0);
    }
    deep.sort((a, b) => a - b);
    rows.push({
      section: 'api',
      metric: 'list with state + tag + name_prefix filters: p50 / p99 (ms)',
      value: `${fmt(percentile(deep, 50), 2)} / ${fmt(percentile(deep, 99), 2)}`,
    });
    rows.push({ section: 'api', metric: 'Redis memory per stored task (bytes)', value: fmt(perTaskStore) });
    rows.push({
      section: 'api',
      metric: 'Redis memory per created task incl. its queue job (bytes)',
      value: fmt(memWithQueue / Math.max(1, createdCount)),
    });
  } finally {
    server.kill('SIGTERM');
    await dropPrefix(redis, prefix);
    redis.disconnect();
  }
}

async function startApiProcess(configFile: string, probe: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['dist/src/main.js', 'api', '--config', configFile], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(probe)).ok) return child;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error('the API process did not start');
}

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

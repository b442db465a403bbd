import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config/load-config.js';
import { startGateway } from '../src/gateway.js';
import { createLogger } from '../src/logger.js';
import { taskDirBytes } from '../src/compute/remove-task-dir.js';
import { startPrivateRedis, usedMemory } from './lifecycle.js';
import { fmt, type Row } from './table.js';

/**
 * A steady load that creates and finishes tasks for SOAK_MINUTES (20 by default) through a whole
 * gateway (API, workers, leader; the local backend with real sandboxed executors) whose retention is
 * a few minutes: Redis memory, stored tasks and the work root must level off once tasks expire as
 * fast as they are made. Runs on a private Redis so that its memory is the gateway's alone.
 */
const MINUTES = Number(process.env.BENCH_SOAK_MINUTES ?? 20);
const RETENTION_MINUTES = Number(process.env.BENCH_SOAK_RETENTION_MINUTES ?? 4);
const PER_SECOND = Number(process.env.BENCH_SOAK_RATE ?? 4);

interface Sample {
  minute: number;
  memory: number;
  stored: number;
  workRootBytes: number;
  created: number;
}

async function workRootBytes(workRoot: string): Promise<number> {
  let total = 0;
  for (const entry of readdirSync(workRoot)) total += await taskDirBytes(join(workRoot, entry));
  return total;
}

export async function benchSoak(rows: Row[]): Promise<void> {
  const { redis, server } = await startPrivateRedis();
  const workRoot = mkdtempSync(join(tmpdir(), 'tesgw-bench-soak-'));
  const port = (redis.options as { port: number }).port;
  const config = loadConfig({
    env: {},
    overrides: {
      server: { port: 0, host: '127.0.0.1' },
      redis: { url: `redis://127.0.0.1:${port}`, prefix: 'tesgw-soak:' },
      backend: 'local',
      container: { runtime: 'bwrap-host' },
      local: { maxConcurrentTasks: 4 },
      workRoot,
      log: { level: 'silent' },
      reconciler: { pollIntervalMs: 500 },
      retention: { terminalTasksDays: RETENTION_MINUTES / 1440, intervalMs: 10_000 },
      security: { allowRoot: true },
    },
  });
  const gateway = await startGateway(config, { api: true, worker: true }, createLogger('silent'));
  const base = `http://127.0.0.1:${gateway.port}/ga4gh/tes/v1`;
  const samples: Sample[] = [];
  let created = 0;
  let refused = 0;
  try {
    const started = Date.now();
    const end = started + MINUTES * 60_000;
    let nextSample = started + 60_000;
    while (Date.now() < end) {
      const second = Date.now();
      await Promise.all(
        Array.from({ length: PER_SECOND }, async () => {
          const res = await fetch(`${base}/tasks`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
              name: `soak-${created}`,
              tags: { soak: 'yes', n: String(created % 100) },
              executors: [{ image: 'alpine', command: ['sh', '-c', 'echo soak'] }],
            }),
          });
          if (res.status === 200) created++;
          else refused++;
          await res.arrayBuffer();
        }),
      );
      if (Date.now() >= nextSample) {
        samples.push({
          minute: Math.round((Date.now() - started) / 60_000),
          memory: await usedMemory(redis),
          stored: await redis.zcard('tesgw-soak:idx:all'),
          workRootBytes: await workRootBytes(workRoot),
          created,
        });
        nextSample += 60_000;
        process.stderr.write(
          `bench: soak minute ${samples.at(-1)!.minute}: ${JSON.stringify(samples.at(-1))}\n`,
        );
      }
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - second))));
    }
  } finally {
    await gateway.close();
    redis.disconnect();
    server.kill();
    rmSync(workRoot, { recursive: true, force: true });
  }
  // Steady state: from two retention periods on, every task made is matched by one expired.
  const steady = samples.filter((s) => s.minute >= 2 * RETENTION_MINUTES + 1);
  const first = steady[0];
  const last = steady.at(-1);
  const mib = (b: number): string => `${fmt(b / 2 ** 20, 1)} MiB`;
  rows.push({
    section: 'soak',
    metric: `tasks created over ${MINUTES} min at ${PER_SECOND}/s, retention ${RETENTION_MINUTES} min (refused)`,
    value: `${fmt(created)} (${fmt(refused)})`,
  });
  if (!first || !last || first === last) {
    rows.push({
      section: 'soak',
      metric: 'steady state',
      value: 'too short a run to see one',
      verdict: 'missed',
    });
    return;
  }
  const flat = (a: number, b: number): boolean => b <= a * 1.2 + 1;
  rows.push(
    {
      section: 'soak',
      metric: `Redis memory, minute ${first.minute} / minute ${last.minute} / most in between`,
      value: `${mib(first.memory)} / ${mib(last.memory)} / ${mib(Math.max(...steady.map((s) => s.memory)))}`,
      goal: 'flat (last <= 1.2 x first)',
      verdict: flat(first.memory, last.memory) ? 'met' : 'missed',
    },
    {
      section: 'soak',
      metric: `tasks stored, minute ${first.minute} / minute ${last.minute}`,
      value: `${fmt(first.stored)} / ${fmt(last.stored)}`,
      goal: 'flat',
      verdict: flat(first.stored, last.stored) ? 'met' : 'missed',
    },
    {
      section: 'soak',
      metric: `work root, minute ${first.minute} / minute ${last.minute}`,
      value: `${mib(first.workRootBytes)} / ${mib(last.workRootBytes)}`,
      goal: 'flat',
      verdict: flat(first.workRootBytes, last.workRootBytes) ? 'met' : 'missed',
    },
  );
}

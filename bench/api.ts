import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon, { type Result } from 'autocannon';
import type { Redis } from 'ioredis';
import { openRedis } from '../src/store/redis-connection.js';
import { loadConfig } from '../src/config/load-config.js';
import { TokenStore } from '../src/identity/tokens.js';
import { RedisTaskStore } from '../src/store/redis-task-store.js';
import { dropPrefix } from '../src/store/drop-prefix.js';
import { GatewayMetrics } from '../src/observability/metrics.js';
import { httpMetrics } from '../src/observability/ops-routes.js';
import { fmt, percentile, type Row } from './table.js';

/**
 * The API against a real Redis: creates and reads per second under load (autocannon, 50
 * connections), with token authentication off and on, then the latency of a tag-filtered list page
 * of 100 with 100,000 tasks stored, and Redis memory per stored task.
 *
 * Auth off and auth on are two gateways, each on its own Redis prefix so that both stores grow
 * alike, measured in turns (off, on, off, on, ...): on a 2-core host two runs of one setup can differ
 * by far more than the 10% that token checks may cost, and turns spread that drift over both sides.
 * Each side reports its median round (BENCH_ROUNDS, 3 by default). Each round also reads the auth-off
 * gateway's tasks through a bare server (bare-server.ts), the ceiling of this stack on this host, and
 * the gateway's GET rate is reported as a share of it.
 *
 * What metrics cost on creates is measured the same way, against a third gateway with
 * `metrics.enabled: false` whose creates run right after the auth-off gateway's in each round; the
 * cost is the median of the rounds' ratios, each of two runs next to each other in time.
 */
const STORED = 100_000;
const LOAD_SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = 50;
const WARM_UP_SECONDS = 3;
/** The owner of every task the auth-on gateway stores. */
const BENCH_USER = 'benchuser';

/** One API process under test, with what a client must send it. */
interface Target {
  label: string;
  base: string;
  headers: Record<string, string>;
  store: RedisTaskStore;
  /** The API process (and the processes it forks), for the CPU its requests cost. */
  pid?: number | undefined;
}

/** The rounds of one target, as measured. */
interface Runs {
  creates: Result[];
  reads: Result[];
}

/** The bare server of bare-server.ts, reading the auth-off gateway's tasks. */
const BARE_PROCESSES = 2;

export async function benchApi(rows: Row[]): Promise<void> {
  if (!Number.isInteger(ROUNDS) || ROUNDS < 1) {
    throw new Error(`BENCH_ROUNDS must be a whole number of 1 or more, not ${process.env.BENCH_ROUNDS}`);
  }
  const prefix = `tesgw-bench:${Date.now()}:`;
  const authPrefix = `${prefix}auth:`;
  const port = 18_000 + Math.floor(Math.random() * 1000);
  const overrides = {
    // As it would be deployed on this 2-core host: one API process per core.
    server: { port, host: '127.0.0.1', maxBacklog: 10_000_000, processes: 2 },
    redis: { prefix },
    log: { level: 'warn' },
  };
  const authOverrides = {
    ...overrides,
    server: { ...overrides.server, port: port + 1 },
    redis: { prefix: authPrefix },
    auth: { mode: 'tokens' },
  };
  const noMetricsOverrides = {
    ...overrides,
    server: { ...overrides.server, port: port + 3 },
    redis: { prefix: `${prefix}nometrics:` },
    metrics: { enabled: false },
  };
  const config = loadConfig({ env: {}, overrides });
  const authConfig = loadConfig({ env: {}, overrides: authOverrides });
  const configDir = mkdtempSync(join(tmpdir(), 'tesgw-bench-'));
  const redis = openRedis(config.redis);
  const started: ChildProcess[] = [];
  try {
    // The APIs run in their own processes, as deployed; the load generator gets the other core.
    const startTarget = async (label: string, settings: typeof overrides): Promise<Target> => {
      const configFile = join(configDir, `${label}.yaml`);
      writeFileSync(configFile, JSON.stringify(settings));
      const base = `http://127.0.0.1:${settings.server.port}/ga4gh/tes/v1`;
      const child = await startApiProcess(configFile, `${base}/service-info`);
      started.push(child);
      const store = new RedisTaskStore(redis, {
        prefix: settings.redis.prefix,
        maxBacklog: config.server.maxBacklog,
      });
      return { label, base, headers: {}, store, pid: child.pid };
    };
    const off = await startTarget('auth-off', overrides);
    const bareBase = `http://127.0.0.1:${port + 2}/ga4gh/tes/v1`;
    started.push(
      await startProcess(
        [
          'dist/bench/bare-server.js',
          String(port + 2),
          prefix,
          String(BARE_PROCESSES),
          config.redis.url ?? 'redis://127.0.0.1:6379',
        ],
        `http://127.0.0.1:${port + 2}/ready`,
      ),
    );
    const bare: Target = { label: 'bare', base: bareBase, headers: {}, store: off.store };
    const on = await startTarget('auth-on', authOverrides);
    const noMetrics = await startTarget('metrics-off', noMetricsOverrides);
    if ((await fetch(`http://127.0.0.1:${port + 3}/metrics`)).status !== 404) {
      throw new Error('the gateway with metrics.enabled: false still serves /metrics');
    }
    const tokens = new TokenStore(redis, on.store.keys.tokens, {
      cacheTtlMs: authConfig.auth.tokens.cacheTtlMs,
    });
    const { token } = await tokens.create({ user: BENCH_USER, name: 'bench', lifetimeMs: 86_400_000 });
    on.headers = { authorization: `Bearer ${token}` };
    // Rates of a gateway that lets anyone in would say nothing about the cost of checking tokens.
    const anonymous = await fetch(`${on.base}/tasks?page_size=1`);
    if (anonymous.status !== 401) {
      throw new Error(
        `the auth-on gateway answered a request without a token with ${anonymous.status}, not 401`,
      );
    }

    const body = JSON.stringify({
      name: 'bench task',
      tags: { run: 'r1', kind: 'bench' },
      executors: [{ image: 'alpine', command: ['echo', 'hello'] }],
    });
    const offRuns: Runs = { creates: [], reads: [] };
    const onRuns: Runs = { creates: [], reads: [] };
    const bareReads: Result[] = [];
    const noMetricsCreates: Result[] = [];
    /** API CPU milliseconds per create, metrics on (the auth-off gateway) and off, by round. */
    const cpuPerCreate = { on: [] as number[], off: [] as number[] };
    let offMemory = 0;
    let offCreated = 0;
    // Unmeasured first load of each gateway: the first seconds of a process run before its hot paths
    // are compiled, and would count against whichever side a round happens to start with.
    for (const target of [off, noMetrics, on]) await loadCreates(target, body, WARM_UP_SECONDS);
    for (const target of [off, on, bare]) {
      await loadReads(target, await target.store.idsInState('QUEUED', 10_000), WARM_UP_SECONDS);
    }
    for (let round = 0; round < ROUNDS; round++) {
      // The auth-off gateway runs between the two it is compared with, and the order turns every
      // round (metrics off, auth off, auth on; then back), so that drift favours neither side.
      const offCreates = async (): Promise<void> => {
        // Memory per created task is measured on the auth-off side only, as before token auth existed.
        const memBefore = await usedMemory(redis);
        const countBefore = await off.store.countInState('QUEUED');
        const run = await timedCreates(off, body);
        offRuns.creates.push(run.result);
        cpuPerCreate.on.push(run.cpuMsPerCreate);
        offMemory += (await usedMemory(redis)) - memBefore;
        offCreated += (await off.store.countInState('QUEUED')) - countBefore;
      };
      const noMetricsRun = async (): Promise<void> => {
        const run = await timedCreates(noMetrics, body);
        noMetricsCreates.push(run.result);
        cpuPerCreate.off.push(run.cpuMsPerCreate);
      };
      const onCreates = async (): Promise<void> => {
        onRuns.creates.push(await loadCreates(on, body));
      };
      const order = [noMetricsRun, offCreates, onCreates];
      for (const run of round % 2 === 0 ? order : order.reverse()) await run();
      offRuns.reads.push(await loadReads(off, await off.store.idsInState('QUEUED', 10_000)));
      onRuns.reads.push(await loadReads(on, await on.store.idsInState('QUEUED', 10_000)));
      bareReads.push(await loadReads(bare, await off.store.idsInState('QUEUED', 10_000)));
    }

    const created = medianRun(offRuns.creates);
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
    pushErrors(rows, 'create errors', offRuns.creates);
    pushErrors(rows, 'create errors, metrics off', noMetricsCreates);
    // Each round's pair ran back to back: their ratio leaves out the host's drift between rounds.
    const metricsCost =
      1 - median(offRuns.creates.map((r, i) => r.requests.average / noMetricsCreates[i]!.requests.average));
    rows.push({
      section: 'api',
      metric: 'cost of metrics on the create rate: 1 - (on / off), median of the rounds',
      value: `${fmt(metricsCost * 100, 1)}%`,
      goal: '< 5%',
      verdict: metricsCost < 0.05 ? 'met' : 'missed',
    });
    rows.push({
      section: 'api',
      metric: `rounds of ${LOAD_SECONDS} s, creates per second: metrics on / off`,
      value: `${rates(offRuns.creates)} / ${rates(noMetricsCreates)}`,
    });
    // CPU per request drifts far less than a rate on a shared 2-core host: the steadier reading.
    rows.push({
      section: 'api',
      metric: 'API CPU per create (ms), median of the rounds: metrics on / off',
      value: `${fmt(median(cpuPerCreate.on), 3)} / ${fmt(median(cpuPerCreate.off), 3)}`,
    });
    const perCreateUs = metricsWorkPerCreateUs();
    rows.push({
      section: 'api',
      metric: "metrics' own work per create, timed alone (us): share of the API CPU per create",
      value: `${fmt(perCreateUs, 2)}: ${fmt((perCreateUs / 1000 / median(cpuPerCreate.off)) * 100, 2)}%`,
    });
    rows.push({
      section: 'api',
      metric: 'rounds, API CPU per create (ms): metrics on / off',
      value: `${cpuPerCreate.on.map((v) => fmt(v, 3)).join(', ')} / ${cpuPerCreate.off.map((v) => fmt(v, 3)).join(', ')}`,
    });
    const read = medianRun(offRuns.reads);
    rows.push({
      section: 'api',
      metric: 'GET /tasks/{id} per second (MINIMAL)',
      value: fmt(read.requests.average),
      goal: '>= 5,000',
      verdict: read.requests.average >= 5000 ? 'met' : 'missed',
    });
    pushErrors(rows, 'GET errors', offRuns.reads);
    const bareRead = medianRun(bareReads);
    rows.push({
      section: 'api',
      metric: `the same against a bare node:http + ioredis server (${BARE_PROCESSES} processes, same JSON)`,
      value: fmt(bareRead.requests.average),
    });
    pushErrors(rows, 'bare server GET errors', bareReads);
    const ofBare = read.requests.average / bareRead.requests.average;
    rows.push({
      section: 'api',
      metric: 'GET /tasks/{id} per second: gateway / bare server',
      value: fmt(ofBare, 2),
      goal: '>= 0.5',
      verdict: ofBare >= 0.5 ? 'met' : 'missed',
    });

    const createdOn = medianRun(onRuns.creates);
    rows.push({
      section: 'api',
      metric: 'creates per second, token auth on',
      value: fmt(createdOn.requests.average),
    });
    rows.push({
      section: 'api',
      metric: 'create latency p50 / p99 (ms), token auth on',
      value: `${createdOn.latency.p50} / ${createdOn.latency.p99}`,
    });
    pushErrors(rows, 'create errors, token auth on', onRuns.creates);
    const readOn = medianRun(onRuns.reads);
    rows.push({
      section: 'api',
      metric: 'GET /tasks/{id} per second (MINIMAL), token auth on',
      value: fmt(readOn.requests.average),
    });
    pushErrors(rows, 'GET errors, token auth on', onRuns.reads);
    pushRatio(rows, 'auth on / off, creates', createdOn, created);
    pushRatio(rows, 'auth on / off, GET', readOn, read);
    rows.push({
      section: 'api',
      metric: `rounds of ${LOAD_SECONDS} s, creates per second: auth off / on`,
      value: `${rates(offRuns.creates)} / ${rates(onRuns.creates)}`,
    });
    rows.push({
      section: 'api',
      metric: `rounds of ${LOAD_SECONDS} s, GETs per second: auth off / on / bare server`,
      value: `${rates(offRuns.reads)} / ${rates(onRuns.reads)} / ${rates(bareReads)}`,
    });

    // Fill the auth-off store to 100,000 tasks: 1% of those added carry the tag the list asks for.
    const store = off.store;
    const base = off.base;
    const storeMemStart = await usedMemory(redis);
    // At least 100 tasks for each of the 100 tags the list asks for, however many the load made.
    const toAdd = Math.max(10_000, STORED - (await store.countInState('QUEUED')));
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
    const perTaskStore = ((await usedMemory(redis)) - storeMemStart) / Math.max(1, toAdd);
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
      value: fmt(offMemory / Math.max(1, offCreated)),
    });
  } finally {
    await Promise.all(started.map(stopApiProcess));
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(configDir, { recursive: true, force: true });
  }
}

/** POST /tasks under load, with the CPU time the API's processes spent per created task. */
async function timedCreates(
  target: Target,
  body: string,
): Promise<{ result: Result; cpuMsPerCreate: number }> {
  if (target.pid === undefined) throw new Error(`the ${target.label} gateway has no process id`);
  const before = treeCpuMs(target.pid);
  const result = await loadCreates(target, body);
  const spent = treeCpuMs(target.pid) - before;
  return { result, cpuMsPerCreate: spent / Math.max(1, result['2xx']) };
}

/**
 * What recording one create costs, timed in this process alone, free of the host's noise: the
 * request's pass through the real HTTP metrics middleware to its histogram observation, and the
 * per-user count of created tasks (with users named, as with auth on).
 */
function metricsWorkPerCreateUs(): number {
  const metrics = new GatewayMetrics({ userLabels: 50, processMetrics: false });
  const middleware = httpMetrics(metrics);
  const req = { method: 'POST', openapi: { openApiRoute: '/ga4gh/tes/v1/tasks' } };
  const res = Object.assign(new EventEmitter(), { req, statusCode: 200 });
  const next = (): void => undefined;
  const run = (n: number): void => {
    for (let i = 0; i < n; i++) {
      middleware(req as never, res as never, next);
      res.emit('finish');
      metrics.taskCreated(`user${i % 10}`);
    }
  };
  run(100_000);
  const n = 1_000_000;
  const started = performance.now();
  run(n);
  return ((performance.now() - started) * 1000) / n;
}

/** User and system CPU time, in ms, of a process and every process under it (Linux /proc). */
function treeCpuMs(pid: number): number {
  const ticksPerMs = 100 / 1000; // USER_HZ: 100 on Linux for every architecture it reports to
  let ticks = 0;
  const pending = [pid];
  while (pending.length > 0) {
    const p = pending.pop()!;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    } catch {
      continue; // gone since it was listed
    }
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
    try {
      for (const task of readdirSync(`/proc/${p}/task`)) {
        const children = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim();
        if (children) pending.push(...children.split(' ').map(Number));
      }
    } catch {
      // it or a thread of it ended while being read: its time so far is counted
    }
  }
  return ticks / ticksPerMs;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/** POST /tasks under load for LOAD_SECONDS. */
function loadCreates(target: Target, body: string, seconds = LOAD_SECONDS): Promise<Result> {
  return autocannon({
    url: `${target.base}/tasks`,
    method: 'POST',
    headers: { ...target.headers, 'content-type': 'application/json' },
    body,
    connections: CONNECTIONS,
    duration: seconds,
  });
}

/** GET /tasks/{id} (MINIMAL) under load for LOAD_SECONDS, cycling through `ids`. */
function loadReads(target: Target, ids: readonly string[], seconds = LOAD_SECONDS): Promise<Result> {
  if (ids.length === 0) throw new Error(`the ${target.label} gateway stored no task to read`);
  let next = 0;
  const path = new URL(target.base).pathname;
  return autocannon({
    url: target.base,
    headers: target.headers,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        method: 'GET',
        setupRequest: (req) => ({ ...req, path: `${path}/tasks/${ids[next++ % ids.length]}` }),
      },
    ],
  });
}

/** The run with the median rate; of an even number, the lower of the middle two (a real run). */
function medianRun(runs: readonly Result[]): Result {
  if (runs.length === 0) throw new Error('no rounds were run: set BENCH_ROUNDS to 1 or more');
  const sorted = [...runs].sort((a, b) => a.requests.average - b.requests.average);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

function rates(runs: readonly Result[]): string {
  return runs.map((r) => fmt(r.requests.average)).join(', ');
}

/** A row for failed requests of any round, so that a rate made of 401s or 404s does not pass for one. */
function pushErrors(rows: Row[], metric: string, runs: readonly Result[]): void {
  const non2xx = runs.reduce((n, r) => n + r.non2xx, 0);
  const errors = runs.reduce((n, r) => n + r.errors, 0);
  if (non2xx > 0 || errors > 0) {
    rows.push({ section: 'api', metric, value: `${non2xx} non-2xx, ${errors} errors` });
  }
}

/** The cost of token authentication: auth-on rate over auth-off rate, each side's median round. */
function pushRatio(rows: Row[], metric: string, on: Result, off: Result): void {
  const ratio = on.requests.average / off.requests.average;
  rows.push({
    section: 'api',
    metric,
    value: fmt(ratio, 2),
    goal: '>= 0.90',
    verdict: ratio >= 0.9 ? 'met' : 'missed',
  });
}

function startApiProcess(configFile: string, probe: string): Promise<ChildProcess> {
  return startProcess(['dist/src/main.js', 'api', '--config', configFile], probe);
}

/** Starts `node ARGS...` and waits until `probe` answers 2xx. */
async function startProcess(args: string[], probe: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(probe)).ok) return child;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await stopApiProcess(child);
  throw new Error(`node ${args.join(' ')} did not answer ${probe} within 10 s`);
}

/** SIGTERM (which also stops the processes it forked), then SIGKILL if it is still there after 10 s. */
async function stopApiProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

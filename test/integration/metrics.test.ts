import { createTask, FAKE_APPTAINER, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { freePort } from '../helpers/free-port.js';
import { TokenStore } from '../../src/identity/tokens.js';
import { parsePrometheusText, sampleValue, scrape } from '../helpers/prometheus-text.js';
import { TES_STATES } from '../../src/tes/state.js';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { GatewayMetrics } from '../../src/observability/metrics.js';
import { Readiness, redisCheck } from '../../src/observability/readiness.js';
import { startOpsServer } from '../../src/observability/ops-routes.js';
import { createLogger } from '../../src/logger.js';
import { testPrefix } from '../helpers/redis.js';

/**
 * The API's /metrics, /healthz and /readyz against the real Redis over real HTTP: task and queue
 * gauges read from Redis, HTTP requests by route template, the exposition's names and help, the
 * probes outside authentication, and readiness that names the dependency that fails.
 */

const TASK = { executors: [{ image: 'alpine', command: ['echo', 'hello'] }] };
const API_ONLY = { roles: { api: true, worker: false } };

describe('the API /metrics', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    // Nothing consumes the queues: every task stays QUEUED with its submission waiting.
    gw = await startTestGateway('metrics-api', { metrics: { cacheMs: 0 } }, API_ONLY);
  });
  afterAll(async () => {
    await gw.close();
  });

  it('counts tasks by state and waiting submissions, from Redis', async () => {
    const before = await scrape(`${gw.url}/metrics`);
    expect(sampleValue(before, 'tes_gateway_tasks', { state: 'QUEUED' })).toBe(0);
    for (let i = 0; i < 3; i++) await createTask(gw.base, TASK);
    const after = await scrape(`${gw.url}/metrics`);
    expect(sampleValue(after, 'tes_gateway_tasks', { state: 'QUEUED' })).toBe(3);
    for (const state of TES_STATES.filter((s) => s !== 'QUEUED')) {
      expect(sampleValue(after, 'tes_gateway_tasks', { state })).toBe(0);
    }
    expect(sampleValue(after, 'tes_gateway_queue_jobs', { queue: 'submit', status: 'waiting' })).toBe(3);
    expect(sampleValue(after, 'tes_gateway_queue_jobs', { queue: 'finalize', status: 'waiting' })).toBe(0);
    expect(
      sampleValue(after, 'tes_gateway_queue_oldest_waiting_age_seconds', { queue: 'submit' }),
    ).toBeGreaterThan(0);
    expect(sampleValue(after, 'tes_gateway_queue_oldest_waiting_age_seconds', { queue: 'cancel' })).toBe(0);
  });

  it('counts requests by route template and status, never by raw path', async () => {
    const id = await createTask(gw.base, TASK);
    expect((await fetch(`${gw.base}/tasks/${id}`)).status).toBe(200);
    expect((await fetch(`${gw.base}/tasks/${id}`)).status).toBe(200);
    expect((await fetch(`${gw.base}/tasks/no-such-task`)).status).toBe(404);
    expect((await fetch(`${gw.url}/no/such/path`)).status).toBe(404);
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    expect(text).not.toContain(id);
    expect(text).not.toContain('no-such-task');
    const m = parsePrometheusText(text);
    const count = 'tes_gateway_http_request_duration_seconds_count';
    const get = { route: '/ga4gh/tes/v1/tasks/{id}', method: 'GET' };
    expect(sampleValue(m, count, { ...get, status: '200' })).toBe(2);
    expect(sampleValue(m, count, { ...get, status: '404' })).toBe(1);
    expect(
      sampleValue(m, count, { route: '/ga4gh/tes/v1/tasks', method: 'POST', status: '200' }),
    ).toBeGreaterThanOrEqual(1);
    expect(sampleValue(m, count, { route: 'unmatched', method: 'GET', status: '404' })).toBe(1);
    // The operator's paths are not API traffic.
    for (const s of m.get('tes_gateway_http_request_duration_seconds')!.samples) {
      expect(s.labels.route).not.toMatch(/healthz|readyz|metrics/);
    }
  });

  it('gives every metric help text and a conventional name', async () => {
    const m = await scrape(`${gw.url}/metrics`);
    expect(m.size).toBeGreaterThan(20);
    for (const f of m.values()) {
      expect({ name: f.name, help: Boolean(f.help?.trim()), type: f.type }).toEqual({
        name: expect.stringMatching(/^tes_gateway_[a-z0-9_]+$/),
        help: true,
        type: expect.stringMatching(/^(counter|gauge|histogram|summary)$/),
      });
      if (f.type === 'counter') expect(f.name).toMatch(/_total$/);
      if (f.type === 'histogram') expect(f.name).toMatch(/_(seconds|bytes|tasks)$/);
      expect(f.name).not.toMatch(/_(milliseconds|ms|kb|mb)$/);
    }
    for (const name of [
      'tes_gateway_tasks',
      'tes_gateway_queue_jobs',
      'tes_gateway_queue_oldest_waiting_age_seconds',
      'tes_gateway_http_request_duration_seconds',
      'tes_gateway_slurm_calls_total',
      'tes_gateway_slurm_call_duration_seconds',
      'tes_gateway_slurm_call_errors_total',
      'tes_gateway_slurm_submission_tasks',
      'tes_gateway_reconciler_cycle_duration_seconds',
      'tes_gateway_reconciler_active_jobs',
      'tes_gateway_task_end_lag_seconds',
      'tes_gateway_image_cache_lookups_total',
      'tes_gateway_image_pulled_bytes_total',
      'tes_gateway_image_pull_failures_total',
      'tes_gateway_staged_bytes_total',
      'tes_gateway_process_resident_memory_bytes',
    ]) {
      expect(m.has(name) ? name : `${name} missing`).toBe(name);
    }
    // Without identities there are no users to count by.
    expect(m.has('tes_gateway_user_tasks_created_total')).toBe(false);
  });

  it('has every metric of its own listed in docs/operations.md', async () => {
    const doc = readFileSync(join(process.cwd(), 'docs', 'operations.md'), 'utf8');
    const m = await scrape(`${gw.url}/metrics`);
    const own = [...m.keys()].filter((name) => !/^tes_gateway_(process|nodejs)_/.test(name));
    expect(own.filter((name) => !doc.includes(`| \`${name}\` |`))).toEqual([]);
  });

  it('answers /healthz and /readyz with each check named and timed', async () => {
    const health = await fetch(`${gw.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${gw.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      status: 'ready',
      checks: [{ name: 'redis', ok: true, latency_ms: expect.any(Number) }],
    });
  });

  it('keeps the probes out of the TES base paths, and answers them to GET and HEAD only', async () => {
    expect((await fetch(`${gw.base}/healthz`)).status).toBe(404);
    expect((await fetch(`${gw.base}/metrics`)).status).toBe(404);
    expect((await fetch(`${gw.url}/readyz`, { method: 'HEAD' })).status).toBe(200);
    const post = await fetch(`${gw.url}/metrics`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });
});

describe('scrape-time counts', () => {
  it('are read from Redis at most once per metrics.cacheMs', async () => {
    const gw = await startTestGateway('metrics-cache', { metrics: { cacheMs: 60_000 } }, API_ONLY);
    try {
      await createTask(gw.base, TASK);
      const first = await scrape(`${gw.url}/metrics`);
      expect(sampleValue(first, 'tes_gateway_tasks', { state: 'QUEUED' })).toBe(1);
      await createTask(gw.base, TASK);
      const second = await scrape(`${gw.url}/metrics`);
      expect(sampleValue(second, 'tes_gateway_tasks', { state: 'QUEUED' })).toBe(1);
      expect(await gw.gateway.store.countInState('QUEUED')).toBe(2);
    } finally {
      await gw.close();
    }
  });
});

describe('with authentication on', () => {
  let gw: TestGateway;
  let token: string;
  const METRICS_TOKEN = 'scrape-secret-0123456789';
  beforeAll(async () => {
    gw = await startTestGateway(
      'metrics-auth',
      { auth: { mode: 'tokens' }, metrics: { cacheMs: 0, token: METRICS_TOKEN, userLabels: 2 } },
      API_ONLY,
    );
    token = (
      await new TokenStore(gw.gateway.store.redis, gw.gateway.store.keys.tokens, { cacheTtlMs: 0 }).create({
        user: 'alice',
        lifetimeMs: 3_600_000,
      })
    ).token;
  });
  afterAll(async () => {
    await gw.close();
  });

  it('answers the probes without credentials, and still refuses the API', async () => {
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${gw.url}/readyz`)).status).toBe(200);
    expect((await fetch(`${gw.base}/tasks`)).status).toBe(401);
  });

  it('asks for metrics.token on /metrics', async () => {
    const none = await fetch(`${gw.url}/metrics`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    // A user's API token is not the scrape token.
    expect((await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(
      401,
    );
    await scrape(`${gw.url}/metrics`, { authorization: `Bearer ${METRICS_TOKEN}` });
  });

  it('counts tasks created by user, the users past the cap as other', async () => {
    const store = new TokenStore(gw.gateway.store.redis, gw.gateway.store.keys.tokens, { cacheTtlMs: 0 });
    const tokens: Record<string, string> = { alice: token };
    for (const user of ['bob', 'carol', 'dave'])
      tokens[user] = (await store.create({ user, lifetimeMs: 3_600_000 })).token;
    for (const user of ['alice', 'alice', 'bob', 'carol', 'dave']) {
      const res = await fetch(`${gw.base}/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens[user]}` },
        body: JSON.stringify(TASK),
      });
      expect(res.status).toBe(200);
    }
    const m = await scrape(`${gw.url}/metrics`, { authorization: `Bearer ${METRICS_TOKEN}` });
    const created = m.get('tes_gateway_user_tasks_created_total')!;
    expect(Object.fromEntries(created.samples.map((s) => [s.labels.user, s.value]))).toEqual({
      alice: 2,
      bob: 1,
      other: 2,
    });
  });
});

describe('with metrics.enabled: false', () => {
  it('serves no /metrics, saying why, and keeps the probes and the API', async () => {
    const gw = await startTestGateway('metrics-off', { metrics: { enabled: false } }, API_ONLY);
    try {
      expect(gw.gateway.metrics).toBeUndefined();
      const id = await createTask(gw.base, TASK);
      expect((await fetch(`${gw.base}/tasks/${id}`)).status).toBe(200);
      const res = await fetch(`${gw.url}/metrics`);
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({
        message: 'metrics are off on this gateway (metrics.enabled: false)',
      });
      expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${gw.url}/readyz`)).status).toBe(200);
    } finally {
      await gw.close();
    }
  });
});

describe('/readyz with Redis gone', () => {
  it('answers 503 naming redis and its error', async () => {
    // Its socket to nowhere never closes: disconnecting waits disconnectTimeout for it.
    const dead = new Redis(`redis://127.0.0.1:${await freePort()}`, {
      maxRetriesPerRequest: 1,
      disconnectTimeout: 50,
    });
    dead.on('error', () => undefined);
    const store = new RedisTaskStore(dead, { prefix: testPrefix('metrics-dead-redis'), maxBacklog: 10 });
    const metrics = new GatewayMetrics({ sources: { taskStates: () => store.countByState() }, cacheMs: 0 });
    const server = await startOpsServer(
      { metrics, readiness: new Readiness([redisCheck(dead)]) },
      '127.0.0.1',
      0,
      createLogger('silent'),
    );
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      const res = await fetch(`${url}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.json()).toEqual({
        status: 'not ready',
        failing: ['redis'],
        checks: [
          {
            name: 'redis',
            ok: false,
            latency_ms: expect.any(Number),
            error: expect.stringMatching(/^the connection to Redis is (connecting|reconnecting|close)/),
          },
        ],
      });
      // The scrape still answers; the counts it could not read are left out, and counted (a failure
      // shows from the next scrape on: the registry reads its metrics side by side).
      const first = await scrape(`${url}/metrics`);
      expect(first.get('tes_gateway_tasks')?.samples ?? []).toEqual([]);
      const second = await scrape(`${url}/metrics`);
      expect(second.get('tes_gateway_tasks')?.samples ?? []).toEqual([]);
      expect(sampleValue(second, 'tes_gateway_metrics_collect_errors_total', { source: 'tasks' })).toBe(1);
    } finally {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await closed;
      dead.disconnect();
    }
  });
});

describe('a worker of the local backend', () => {
  it('serves its probes on worker.http, checking only Redis and the work root', async () => {
    const gw = await startTestGateway(
      'metrics-local-worker',
      {
        backend: 'local',
        container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
        worker: { submitBackoffMs: 200, http: { host: '127.0.0.1', port: 0 } },
      },
      { roles: { api: false, worker: true } },
    );
    try {
      const url = `http://127.0.0.1:${gw.gateway.opsPort}`;
      const res = await fetch(`${url}/readyz`);
      const body = (await res.json()) as { checks: Array<{ name: string; ok: boolean }> };
      expect({ status: res.status, checks: body.checks.map((c) => [c.name, c.ok]) }).toEqual({
        status: 200,
        checks: [
          ['redis', true],
          ['workRoot', true],
        ],
      });
      const m = await scrape(`${url}/metrics`);
      expect(m.has('tes_gateway_reconciler_cycle_duration_seconds')).toBe(true);
    } finally {
      await gw.close();
    }
  });

  it('opens no listener unless worker.http.port is set', async () => {
    const gw = await startTestGateway(
      'metrics-no-listener',
      { backend: 'local', container: { runtime: 'apptainer', executable: FAKE_APPTAINER } },
      { roles: { api: false, worker: true } },
    );
    try {
      expect(gw.gateway.opsServer).toBeUndefined();
    } finally {
      await gw.close();
    }
  });
});

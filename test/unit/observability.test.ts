import { CollectCache } from '../../src/observability/collect-cache.js';
import { OTHER_USERS, UserLabels } from '../../src/observability/user-labels.js';
import { cachedCheck, Readiness } from '../../src/observability/readiness.js';
import { GatewayMetrics } from '../../src/observability/metrics.js';
import { controllerProblem } from '../../src/compute/slurm/slurm-cli.js';
import { loadConfig } from '../../src/config/load-config.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';

describe('CollectCache', () => {
  it('reads once per interval, and once at a time', async () => {
    let now = 0;
    let reads = 0;
    const cache = new CollectCache(
      async () => ++reads,
      1000,
      () => now,
    );
    expect(await Promise.all([cache.get(), cache.get(), cache.get()])).toEqual([1, 1, 1]);
    now = 999;
    expect(await cache.get()).toBe(1);
    now = 1000;
    expect(await cache.get()).toBe(2);
    expect(reads).toBe(2);
  });

  it('waits for a read slower than the interval instead of starting another', async () => {
    let now = 0;
    let reads = 0;
    let finish: (value: number) => void = () => undefined;
    const cache = new CollectCache(
      () =>
        new Promise<number>((resolve) => {
          reads++;
          finish = resolve;
        }),
      100,
      () => now,
    );
    const first = cache.get();
    now = 5000;
    const second = cache.get();
    expect(second).toBe(first);
    finish(7);
    expect(await second).toBe(7);
    expect(reads).toBe(1);
    expect(await cache.get()).toBe(7);
    now = 5100;
    void cache.get();
    expect(reads).toBe(2);
  });

  it('keeps a failure for the interval, then reads again', async () => {
    let now = 0;
    let fail = true;
    let reads = 0;
    const cache = new CollectCache(
      async () => {
        reads++;
        if (fail) throw new Error('redis is down');
        return 'up';
      },
      500,
      () => now,
    );
    await expect(cache.get()).rejects.toThrow('redis is down');
    fail = false;
    await expect(cache.get()).rejects.toThrow('redis is down');
    now = 500;
    expect(await cache.get()).toBe('up');
    expect(reads).toBe(2);
  });
});

describe('UserLabels', () => {
  it('names the first users up to the cap and the rest other, for good', () => {
    const labels = new UserLabels(2);
    expect(['alice', 'bob', 'carol', 'alice', 'dave', 'bob'].map((u) => labels.labelOf(u))).toEqual([
      'alice',
      'bob',
      OTHER_USERS,
      'alice',
      OTHER_USERS,
      'bob',
    ]);
  });

  it('keeps a user called other apart from the rest', () => {
    expect(new UserLabels(5).labelOf('other')).toBe('other_');
  });
});

describe('Readiness', () => {
  it('reports each check by name, the failing ones with their error', async () => {
    const report = await new Readiness([
      { name: 'redis', run: async () => undefined },
      {
        name: 'slurm',
        run: async () => {
          throw new Error('no Slurm controller is up');
        },
      },
    ]).report();
    expect(report).toEqual({
      ready: false,
      checks: [
        { name: 'redis', ok: true, latency_ms: expect.any(Number) },
        { name: 'slurm', ok: false, latency_ms: expect.any(Number), error: 'no Slurm controller is up' },
      ],
    });
  });

  it('fails a check that does not answer in time', async () => {
    const report = await new Readiness(
      [{ name: 'workRoot', run: () => new Promise<void>((resolve) => setTimeout(resolve, 500)) }],
      50,
    ).report();
    expect(report.checks[0]).toEqual({
      name: 'workRoot',
      ok: false,
      latency_ms: expect.any(Number),
      error: 'no answer within 50 ms',
    });
  });

  it('runs a cached check once per interval', async () => {
    let runs = 0;
    const check = cachedCheck(
      {
        name: 'slurm',
        run: async () => {
          runs++;
        },
      },
      60_000,
    );
    const readiness = new Readiness([check]);
    await readiness.report();
    await readiness.report();
    expect(runs).toBe(1);
  });
});

describe('controllerProblem', () => {
  it('passes when a controller is up, even with a backup down', () => {
    expect(controllerProblem('Slurmctld(primary) at vm is UP\n')).toBeUndefined();
    expect(
      controllerProblem('Slurmctld(primary) at a is DOWN\nSlurmctld(backup) at b is UP\n'),
    ).toBeUndefined();
  });

  it('names the controllers when none is up', () => {
    expect(controllerProblem('Slurmctld(primary) at a is DOWN\n')).toBe(
      'no Slurm controller is up: Slurmctld(primary) at a is DOWN',
    );
    expect(controllerProblem('')).toBe('no Slurm controller is up: scontrol ping printed nothing');
  });
});

describe('GatewayMetrics', () => {
  it('keeps each registry to itself', async () => {
    const a = new GatewayMetrics({ processMetrics: false });
    const b = new GatewayMetrics({ processMetrics: false });
    a.slurmCall('sbatch', 0.2);
    a.slurmCall('sbatch', 3, 'timeout');
    const ma = parsePrometheusText(await a.metrics());
    const mb = parsePrometheusText(await b.metrics());
    expect(sampleValue(ma, 'tes_gateway_slurm_calls_total', { command: 'sbatch' })).toBe(2);
    expect(
      sampleValue(ma, 'tes_gateway_slurm_call_errors_total', { command: 'sbatch', kind: 'timeout' }),
    ).toBe(1);
    expect(sampleValue(ma, 'tes_gateway_slurm_call_duration_seconds_sum', { command: 'sbatch' })).toBeCloseTo(
      3.2,
    );
    expect(sampleValue(mb, 'tes_gateway_slurm_calls_total', { command: 'sbatch' })).toBe(0);
  });

  it('reads the task counts on scrape and leaves them out when the read fails', async () => {
    let fail = false;
    const metrics = new GatewayMetrics({
      processMetrics: false,
      cacheMs: 0,
      sources: {
        taskStates: async () => {
          if (fail) throw new Error('redis is down');
          return {
            UNKNOWN: 0,
            QUEUED: 4,
            INITIALIZING: 0,
            RUNNING: 2,
            PAUSED: 0,
            COMPLETE: 9,
            EXECUTOR_ERROR: 1,
            SYSTEM_ERROR: 0,
            CANCELING: 0,
            CANCELED: 3,
            PREEMPTED: 0,
          };
        },
      },
    });
    const ok = parsePrometheusText(await metrics.metrics());
    expect(sampleValue(ok, 'tes_gateway_tasks', { state: 'RUNNING' })).toBe(2);
    expect(sampleValue(ok, 'tes_gateway_tasks', { state: 'COMPLETE' })).toBe(9);
    fail = true;
    const failed = parsePrometheusText(await metrics.metrics());
    expect(failed.get('tes_gateway_tasks')?.samples ?? []).toEqual([]);
  });
});

describe('the metrics and listener settings', () => {
  it('default to no worker listener, open metrics on, and 50 user labels', () => {
    const config = loadConfig({ env: {} });
    expect(config.worker.http).toEqual({ host: '127.0.0.1' });
    expect(config.metrics).toEqual({ enabled: true, userLabels: 50, cacheMs: 5000 });
  });

  it('take the worker listener from the environment', () => {
    const config = loadConfig({
      env: { TES_GATEWAY_WORKER_HTTP_PORT: '9464', TES_GATEWAY_WORKER_HTTP_HOST: '0.0.0.0' },
    });
    expect(config.worker.http).toEqual({ host: '0.0.0.0', port: 9464 });
  });

  it('refuse a short scrape token, naming the key', () => {
    expect(() => loadConfig({ env: {}, overrides: { metrics: { token: 'short' } } })).toThrow(
      /metrics\.token: must be at least 16 characters/,
    );
  });
});

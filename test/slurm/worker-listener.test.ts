import { jest } from '@jest/globals';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  createTask,
  FAKE_APPTAINER,
  requireSlurm,
  startTestGateway,
  testImages,
  waitFor,
  type TestGateway,
} from '../helpers/gateway.js';
import { sampleValue, scrape } from '../helpers/prometheus-text.js';

/**
 * The listener of `tes-gateway worker` (worker.http) on the real cluster: after a task ran, its
 * /metrics shows the sbatch and sacct calls, the submission, the reconciler's cycles, the lag to the
 * terminal state, the bytes staged and the image cache's hits, misses and failed pulls; its /readyz
 * asks the controller (`scontrol ping`) and names `slurm` when the controller does not answer.
 */
jest.setTimeout(180_000);

let image: string;
let registry: string;
let data: string;
let files: Server;
let filesBase: string;
const REMOTE = 'fetched over http\n';
const slurmConfig = (extra: Record<string, unknown> = {}) => ({
  backend: 'slurm',
  container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
  slurm: { defaultPartition: 'debug', ...extra },
  worker: { submitBackoffMs: 200, http: { host: '127.0.0.1', port: 0 } },
});

beforeAll(async () => {
  requireSlurm();
  const images = testImages();
  image = images.busybox;
  registry = images.registry;
  data = mkdtempSync('/var/tmp/tesgw-listener-');
  files = createServer((req, res) => {
    if (req.url === '/remote.txt') res.end(REMOTE);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
  filesBase = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => files.close(resolve));
  rmSync(data, { recursive: true, force: true });
  delete process.env.FAKE_APPTAINER_REGISTRY;
});

describe('a worker with its listener', () => {
  let api: TestGateway;
  let worker: TestGateway;
  let listener: string;
  beforeAll(async () => {
    const storage = {
      allowedRoots: [{ path: data, writable: true }],
      // The test's file server listens on loopback, which downloads may reach only when allowed.
      http: { allowedPrivateNetworks: ['127.0.0.0/8'] },
    };
    api = await startTestGateway(
      'listener-api',
      { ...slurmConfig(), storage },
      { roles: { api: true, worker: false } },
    );
    worker = await startTestGateway(
      'listener-worker',
      { ...slurmConfig(), storage },
      { roles: { api: false, worker: true }, prefix: api.prefix, workRoot: api.workRoot },
    );
    expect(worker.gateway.server).toBeUndefined();
    listener = `http://127.0.0.1:${worker.gateway.opsPort}`;
  });
  afterAll(async () => {
    await worker.close();
    await api.close();
  });

  it('serves the Slurm, reconciler and staging metrics of a task it ran', async () => {
    const script = 'cat /in/remote.txt > /dev/null && echo metrics > /out/result.txt\n';
    const id = await createTask(api.base, {
      inputs: [
        { path: '/in/run.sh', content: script },
        { path: '/in/remote.txt', url: `${filesBase}/remote.txt` },
      ],
      outputs: [{ path: '/out/result.txt', url: `file://${data}/result.txt` }],
      executors: [{ image, command: ['sh', '/in/run.sh'] }],
    });
    expect((await waitFor(api.base, id)).state).toBe('COMPLETE');
    expect(readFileSync(join(data, 'result.txt'), 'utf8')).toBe('metrics\n');

    const m = await scrape(`${listener}/metrics`);
    expect(sampleValue(m, 'tes_gateway_slurm_calls_total', { command: 'sbatch' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(m, 'tes_gateway_slurm_calls_total', { command: 'sacct' })).toBeGreaterThanOrEqual(1);
    expect(
      sampleValue(m, 'tes_gateway_slurm_call_duration_seconds_count', { command: 'sbatch' }),
    ).toBeGreaterThanOrEqual(1);
    expect(
      sampleValue(m, 'tes_gateway_slurm_call_duration_seconds_sum', { command: 'sbatch' }),
    ).toBeGreaterThan(0);
    expect(sampleValue(m, 'tes_gateway_slurm_call_errors_total', { command: 'sbatch', kind: 'exit' })).toBe(
      0,
    );
    expect(sampleValue(m, 'tes_gateway_slurm_submission_tasks_count')).toBeGreaterThanOrEqual(1);
    expect(sampleValue(m, 'tes_gateway_reconciler_cycle_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(sampleValue(m, 'tes_gateway_task_end_lag_seconds_count')).toBe(1);
    expect(sampleValue(m, 'tes_gateway_staged_bytes_total', { direction: 'in', scheme: 'content' })).toBe(
      Buffer.byteLength(script),
    );
    expect(sampleValue(m, 'tes_gateway_staged_bytes_total', { direction: 'in', scheme: 'http' })).toBe(
      REMOTE.length,
    );
    expect(sampleValue(m, 'tes_gateway_staged_bytes_total', { direction: 'out', scheme: 'file' })).toBe(
      'metrics\n'.length,
    );
    expect(sampleValue(m, 'tes_gateway_tasks', { state: 'COMPLETE' })).toBe(1);
  });

  it('counts image cache misses with their bytes, hits and failed pulls', async () => {
    process.env.FAKE_APPTAINER_REGISTRY = registry;
    const run = async (ref: string) =>
      (
        await waitFor(
          api.base,
          await createTask(api.base, { executors: [{ image: ref, command: ['true'] }] }),
        )
      ).state as string;
    expect(await run('alpine')).toBe('COMPLETE');
    expect(await run('docker://alpine:latest')).toBe('COMPLETE');
    expect(await run('docker://nope/never:1')).toBe('SYSTEM_ERROR');
    const m = await scrape(`${listener}/metrics`);
    expect(sampleValue(m, 'tes_gateway_image_cache_lookups_total', { result: 'miss' })).toBe(1);
    expect(sampleValue(m, 'tes_gateway_image_cache_lookups_total', { result: 'hit' })).toBe(1);
    expect(sampleValue(m, 'tes_gateway_image_pulled_bytes_total')).toBe(
      statSync(join(registry, 'docker_alpine_latest.sif')).size,
    );
    expect(sampleValue(m, 'tes_gateway_image_pull_failures_total', { kind: 'permanent' })).toBe(1);
  });

  it('is ready when Redis, the controller and the work root answer', async () => {
    const res = await fetch(`${listener}/readyz`);
    const body = (await res.json()) as { checks: Array<{ name: string; ok: boolean }> };
    expect({ status: res.status, checks: body.checks.map((c) => [c.name, c.ok]) }).toEqual({
      status: 200,
      checks: [
        ['redis', true],
        ['slurm', true],
        ['workRoot', true],
      ],
    });
    expect((await fetch(`${listener}/healthz`)).status).toBe(200);
  });

  it('serves nothing of the TES API', async () => {
    expect((await fetch(`${listener}/ga4gh/tes/v1/tasks`)).status).toBe(404);
  });
});

describe('a worker whose scontrol fails', () => {
  it('answers /readyz with 503 naming slurm and the error', async () => {
    const binDir = mkdtempSync('/var/tmp/tesgw-scontrol-');
    writeFileSync(
      join(binDir, 'scontrol'),
      "#!/bin/sh\necho 'slurm_ping error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n",
    );
    chmodSync(join(binDir, 'scontrol'), 0o755);
    const worker = await startTestGateway('listener-scontrol', slurmConfig({ binDir }), {
      roles: { api: false, worker: true },
    });
    try {
      const url = `http://127.0.0.1:${worker.gateway.opsPort}`;
      const res = await fetch(`${url}/readyz`);
      expect(res.status).toBe(503);
      const body = (await res.json()) as {
        failing: string[];
        checks: Array<{ name: string; error?: string }>;
      };
      expect(body.failing).toEqual(['slurm']);
      expect(body.checks.find((c) => c.name === 'slurm')?.error).toMatch(
        /scontrol.*Unable to contact slurm controller/,
      );
      // Cached: a second probe within seconds does not run scontrol again.
      expect((await fetch(`${url}/readyz`)).status).toBe(503);
      const m = await scrape(`${url}/metrics`);
      expect(
        sampleValue(m, 'tes_gateway_slurm_call_errors_total', { command: 'scontrol', kind: 'exit' }),
      ).toBe(1);
    } finally {
      await worker.close();
      rmSync(binDir, { recursive: true, force: true });
    }
  });
});

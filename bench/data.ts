import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';
import { openRedis } from '../src/store/redis-connection.js';
import { loadConfig } from '../src/config/load-config.js';
import { startGateway } from '../src/gateway.js';
import { createLogger } from '../src/logger.js';
import { HttpFetcher } from '../src/staging/http-fetcher.js';
import { AllowedRoots } from '../src/staging/allowed-roots.js';
import { stageInputs } from '../src/staging/stage-inputs.js';
import { dropPrefix } from '../src/store/drop-prefix.js';
import { waitForJobs } from './wait-for-jobs.js';
import { fmt, type Row } from './table.js';

const run = promisify(execFile);
const ROOT = process.cwd();
const GIB = 1024 ** 3;

/** A file server in its own process: /big streams 1 GiB of zeros, /small/<n> 1 KiB each. */
const SERVER = `
const http = require('node:http');
const chunk = Buffer.alloc(1024 * 1024);
const small = Buffer.alloc(1024, 97);
const server = http.createServer((req, res) => {
  if (req.url === '/big') {
    res.writeHead(200, { 'content-length': String(1024 ** 3) });
    let sent = 0;
    const pump = () => {
      while (sent < 1024) { sent++; if (!res.write(chunk)) return res.once('drain', pump); }
      res.end();
    };
    pump();
  } else if (req.url.startsWith('/small/')) res.end(small);
  else res.writeHead(404).end();
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;

/**
 * Staging and the image cache: a 1 GiB http input, 1,000 small http inputs of one task, and 50 tasks
 * on the real cluster sharing one image that is not cached yet.
 */
export async function benchData(rows: Row[]): Promise<void> {
  const server = spawn(process.execPath, ['-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<string>((resolve) =>
      createInterface({ input: server.stdout }).once('line', resolve),
    );
    const base = `http://127.0.0.1:${port}`;
    const dir = mkdtempSync('/var/tmp/tesgw-bench-data-');
    const config = loadConfig({ env: {} });
    // The file server is on this host, a loopback address that downloads may reach only when allowed.
    const fetcher = new HttpFetcher({ ...config.storage.http, allowedPrivateNetworks: ['127.0.0.0/8'] });

    const rssBefore = process.memoryUsage().rss;
    let peakRss = rssBefore;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
    const t0 = performance.now();
    await fetcher.fetch(`${base}/big`, join(dir, 'big'), 'FILE', 'inputs[0]');
    const seconds = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    if (statSync(join(dir, 'big')).size !== GIB) throw new Error('the 1 GiB input arrived incomplete');
    rows.push({
      section: 'data',
      metric: '1 GiB http input: throughput (MB/s)',
      value: fmt(GIB / 1e6 / seconds),
    });
    rows.push({
      section: 'data',
      metric: '1 GiB http input: gateway memory growth (MiB)',
      value: fmt((peakRss - rssBefore) / 2 ** 20),
    });
    rmSync(join(dir, 'big'));

    const inputs = Array.from({ length: 1000 }, (_, i) => ({
      path: `/in/f${i}`,
      url: `${base}/small/${i}`,
      type: 'FILE' as const,
    }));
    for (const parallel of [4, 16]) {
      const work = mkdtempSync(join(dir, 'small-'));
      const t1 = performance.now();
      await stageInputs(inputs, work, {
        roots: new AllowedRoots([]),
        fetchers: [fetcher],
        parallel,
        limits: {
          maxDownloadBytes: config.storage.maxTaskDownloadBytes,
          maxListedObjects: config.storage.s3.maxListedObjects,
        },
      });
      rows.push({
        section: 'data',
        metric: `1,000 small http inputs of one task, ${parallel} at a time (s)`,
        value: fmt((performance.now() - t1) / 1000, 2),
      });
    }
    rmSync(dir, { recursive: true, force: true });
    fetcher.close();
  } finally {
    server.kill();
  }
  await benchSharedImage(rows);
}

async function benchSharedImage(rows: Row[]): Promise<void> {
  try {
    execFileSync('sinfo', ['-h'], { stdio: 'pipe', timeout: 10_000 });
  } catch {
    rows.push({
      section: 'data',
      metric: 'shared image: skipped',
      value: 'no cluster (bash scripts/slurm-up.sh)',
    });
    return;
  }
  const images = join(ROOT, '.tmp', 'images');
  execFileSync('bash', [join(ROOT, 'test/apptainer/build-images.sh'), images], { stdio: 'pipe' });
  const work = mkdtempSync('/var/tmp/tesgw-bench-image-');
  const pullLog = join(work, 'pulls.log');
  const delayMs = 2000;
  process.env.FAKE_APPTAINER_REGISTRY = join(images, 'registry');
  process.env.FAKE_APPTAINER_PULL_LOG = pullLog;
  process.env.FAKE_APPTAINER_PULL_DELAY_MS = String(delayMs);
  const prefix = `tesgw-bench-image:${Date.now()}:`;
  const config = loadConfig({
    env: {},
    overrides: {
      server: { port: 0, host: '127.0.0.1' },
      redis: { prefix },
      workRoot: join(work, 'tasks'),
      backend: 'slurm',
      log: { level: 'silent' },
      container: {
        runtime: 'apptainer',
        executable: join(ROOT, 'test/apptainer/apptainer'),
        imageCacheDir: join(work, 'images'),
      },
      slurm: { extraArgs: ['--hold'] },
      // The bench runs as root on a disposable machine, like CI.
      security: { allowRoot: true },
    },
  });
  const gateway = await startGateway(config, { api: true, worker: true }, createLogger('silent'));
  const redis = openRedis(config.redis);
  try {
    const base = `http://127.0.0.1:${gateway.port}/ga4gh/tes/v1`;
    const body = JSON.stringify({ executors: [{ image: 'docker://alpine:latest', command: ['true'] }] });
    const t0 = Date.now();
    const ids = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const res = await fetch(`${base}/tasks`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        });
        return ((await res.json()) as { id: string }).id;
      }),
    );
    const records = await waitForJobs(gateway.store, ids);
    const last = Math.max(...[...records.values()].map((r) => Date.parse(r.run!.submittedAt!)));
    const pulls = existsSync(pullLog) ? readFileSync(pullLog, 'utf8').split('\n').filter(Boolean).length : 0;
    rows.push({
      section: 'data',
      metric: `50 tasks sharing one uncached image (pull takes ${delayMs} ms): create to all submitted (s)`,
      value: fmt((last - t0) / 1000, 2),
    });
    rows.push({
      section: 'data',
      metric: 'image pulls for those 50 tasks',
      value: String(pulls),
      goal: '1',
      verdict: pulls === 1 ? 'met' : 'missed',
    });
    await run('scancel', [[...records.values()].map((r) => r.run!.jobId!).join(',')]);
  } finally {
    await gateway.close();
    await dropPrefix(redis, prefix);
    redis.disconnect();
    delete process.env.FAKE_APPTAINER_PULL_DELAY_MS;
  }
}

import { jest } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../helpers/free-port.js';
import { FAKE_APPTAINER, requireSlurm, TEST_IMAGES_DIR, testImages } from '../helpers/gateway.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import {
  cancelJobsOf,
  notComplete,
  shortTask,
  sleep,
  startBurst,
  waitAllEnded,
  wrongJobCounts,
} from '../helpers/fault-burst.js';

/**
 * A restart of the gateway's Redis in the middle of a burst: a private redis-server (append-only
 * file on, so a clean shutdown keeps every acknowledged write) that the test stops with SIGTERM and
 * starts again on the same port and directory. The shared Redis of the other tests is never touched.
 * Creations during the outage may be refused; every accepted task ends COMPLETE with exactly one Slurm
 * job or array element.
 */
jest.setTimeout(200_000);

const OUTAGE_MS = 5_000;
let dir: string;
let port: number;
let redis: ChildProcess | undefined;
let gw: GatewayProcess | undefined;
let image: string;
let ids: readonly string[] = [];
// Should the test process end before afterAll, the server ends with it.
process.once('exit', () => redis?.kill('SIGKILL'));

async function startRedis(): Promise<void> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--save', ''],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  redis = child;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null });
    try {
      await client.connect();
      // Loading the append-only file answers LOADING until done.
      if ((await client.ping()) === 'PONG') return;
    } catch {
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(
          `the private redis-server on port ${port} did not start (${child.exitCode ?? 'running'})`,
        );
      }
    } finally {
      client.disconnect();
    }
    await sleep(100);
  }
}

async function stopRedis(): Promise<void> {
  const child = redis;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

beforeAll(async () => {
  requireSlurm();
  image = testImages().busybox;
  dir = mkdtempSync(join(existsSync('/var/tmp') ? '/var/tmp' : tmpdir(), 'tesgw-fault-redis-'));
  port = await freePort();
  await startRedis();
});
afterAll(async () => {
  if (gw) await cancelJobsOf(ids, gw.workRoot);
  await gw?.close();
  await stopRedis();
  rmSync(dir, { recursive: true, force: true });
});

it('loses no task and runs none twice across a restart of its Redis', async () => {
  gw = await startGatewayProcess('fault-redis', {
    backend: 'slurm',
    container: { runtime: 'apptainer', executable: FAKE_APPTAINER, imageRoots: [TEST_IMAGES_DIR] },
    slurm: { defaultPartition: 'debug' },
    redis: { url: `redis://127.0.0.1:${port}` },
  });
  const base = gw.base;
  const burst = startBurst(
    () => [base],
    (n) => shortTask(image, `redis-${n}`),
  );
  ids = burst.ids;
  let refusedDuring: number;
  try {
    await sleep(3_000);
    const refusedBefore = burst.refused();
    await stopRedis();
    await sleep(OUTAGE_MS);
    refusedDuring = burst.refused() - refusedBefore;
    await startRedis();
    await sleep(3_000);
  } finally {
    await burst.stop();
  }
  // The outage was real: creations were refused while Redis was away.
  expect(refusedDuring).toBeGreaterThan(0);
  expect(gw.exitStatus()).toBeUndefined();

  const tasks = await waitAllEnded(() => base, burst.ids, 120_000);
  expect(notComplete(tasks)).toEqual([]);
  expect(await wrongJobCounts(tasks, gw.workRoot, 15)).toEqual([]);
});

import { jest } from '@jest/globals';
import { existsSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { FAKE_APPTAINER, requireSlurm, TEST_IMAGES_DIR, testImages } from '../helpers/gateway.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';
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
 * kill -9 of the gateway during a burst, twice: a `serve` process dies without any shutdown while
 * tasks are being created, staged, submitted and finished; a new process on the same Redis and work
 * root takes over (BullMQ hands it the stalled jobs, the reconciler's lease expires to it). Every
 * task a process accepted ends COMPLETE with exactly one Slurm job or array element.
 */
jest.setTimeout(240_000);

const prefix = testPrefix('fault-kill');
const workRoot = mkdtempSync(join(existsSync('/var/tmp') ? '/var/tmp' : '/tmp', 'tesgw-fault-kill-'));
const started: GatewayProcess[] = [];
let image: string;
let ids: readonly string[] = [];

function start(): Promise<GatewayProcess> {
  return startGatewayProcess(
    'fault-kill',
    {
      backend: 'slurm',
      container: { runtime: 'apptainer', executable: FAKE_APPTAINER, imageRoots: [TEST_IMAGES_DIR] },
      slurm: { defaultPartition: 'debug' },
      // A short lease: the next process leads the reconciler soon after the last leader died.
      reconciler: { pollIntervalMs: 500, leaderTtlMs: 3_000 },
    },
    {},
    { prefix, workRoot, keepKeys: true },
  ).then((gw) => {
    started.push(gw);
    return gw;
  });
}

async function kill9(gw: GatewayProcess): Promise<void> {
  process.kill(gw.pid, 'SIGKILL');
  while (gw.exitStatus() === undefined) await sleep(50);
}

beforeAll(() => {
  requireSlurm();
  image = testImages().busybox;
});
afterAll(async () => {
  for (const gw of started) await gw.close();
  await cancelJobsOf(ids, workRoot);
  const redis = connect();
  await dropPrefix(redis, prefix);
  redis.disconnect();
});

it('loses no task and runs none twice when the gateway is killed with SIGKILL during a burst', async () => {
  let gw = await start();
  const burst = startBurst(
    () => [gw.base],
    (n) => shortTask(image, `kill-${n}`),
  );
  ids = burst.ids;
  for (let kill = 0; kill < 2; kill++) {
    await sleep(3_000);
    const accepted = burst.ids.length;
    await kill9(gw);
    expect(gw.exitStatus()).toBe('signal SIGKILL');
    expect(accepted).toBeGreaterThan(0);
    gw = await start();
  }
  await sleep(2_000);
  await burst.stop();
  expect(burst.ids.length).toBeGreaterThan(10);

  // The stalled submissions come back after BullMQ's stall check (30 s).
  const tasks = await waitAllEnded(() => gw.base, burst.ids, 150_000);
  expect(notComplete(tasks)).toEqual([]);
  expect(await wrongJobCounts(tasks, workRoot, 15)).toEqual([]);
});

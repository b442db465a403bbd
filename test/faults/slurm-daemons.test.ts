import { jest } from '@jest/globals';
import {
  FAKE_APPTAINER,
  requireSlurm,
  startTestGateway,
  testImages,
  type TestGateway,
} from '../helpers/gateway.js';
import { ensureSlurmDaemon, stopSlurmDaemon, type SlurmDaemon } from '../helpers/slurm-daemons.js';
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
 * The cluster's own daemons go away for a while during a burst: slurmctld (clean stop, state saved,
 * sbatch and squeue fail meanwhile) and slurmdbd (sacct fails, the controller queues accounting).
 * Tasks keep being created throughout; every accepted task ends COMPLETE with exactly one Slurm job
 * or array element. One file, so the two outages never overlap; each daemon is started again
 * whatever the test's outcome. Other test files running at the same time see the outage too.
 */
jest.setTimeout(200_000);

const OUTAGE_MS = 20_000;
let image: string;
let gw: TestGateway | undefined;
let ids: readonly string[] = [];

const slurmConfig = {
  backend: 'slurm',
  container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
  slurm: { defaultPartition: 'debug' },
  // Eight attempts from 500 ms ride out about a minute of controller trouble.
  worker: { submitBackoffMs: 500 },
};

beforeAll(() => {
  requireSlurm();
  image = testImages().busybox;
});
afterEach(async () => {
  await ensureSlurmDaemon('slurmdbd');
  await ensureSlurmDaemon('slurmctld');
  if (gw) await cancelJobsOf(ids, gw.workRoot);
  await gw?.close();
  gw = undefined;
});

/** A burst through one gateway with `daemon` stopped for OUTAGE_MS in its middle. */
async function burstAcross(daemon: SlurmDaemon, name: string): Promise<void> {
  gw = await startTestGateway(name, slurmConfig);
  const base = gw.base;
  const burst = startBurst(
    () => [base],
    (n) => shortTask(image, `${name}-${n}`),
  );
  ids = burst.ids;
  try {
    await sleep(3_000);
    const before = burst.ids.length;
    await stopSlurmDaemon(daemon);
    await sleep(OUTAGE_MS);
    const during = burst.ids.length - before;
    await ensureSlurmDaemon(daemon);
    await sleep(2_000);
    // The API keeps accepting tasks while the daemon is away: Redis holds them.
    expect(during).toBeGreaterThan(10);
  } finally {
    await burst.stop();
  }
  const tasks = await waitAllEnded(() => base, burst.ids, 120_000);
  expect(notComplete(tasks)).toEqual([]);
  expect(await wrongJobCounts(tasks, gw.workRoot, 15)).toEqual([]);
}

it('loses no task and runs none twice across a slurmctld stop and start', async () => {
  await burstAcross('slurmctld', 'fault-ctld');
});

it('loses no task and runs none twice while slurmdbd is down', async () => {
  await burstAcross('slurmdbd', 'fault-dbd');
});

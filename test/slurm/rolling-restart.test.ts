import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { jobNameFor } from '../../src/compute/slurm/sbatch-args.js';
import { FAKE_APPTAINER, requireSlurm, TEST_IMAGES_DIR, testImages } from '../helpers/gateway.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { testPrefix, connect, dropPrefix } from '../helpers/redis.js';

/**
 * A rolling restart, as an orchestrator does it: two `serve` processes share one Redis and one work
 * root; each in turn gets SIGTERM while tasks are created and submitted, and is started again. Every
 * accepted task must end COMPLETE with exactly one Slurm job, and each process must stop within its
 * shutdown time.
 */
jest.setTimeout(300_000);

const SHUTDOWN_MS = 8_000;
const prefix = testPrefix('rolling');
const workRoot = mkdtempSync(join(existsSync('/var/tmp') ? '/var/tmp' : '/tmp', 'tesgw-rolling-'));
let image: string;
const running: GatewayProcess[] = [];

function start(): Promise<GatewayProcess> {
  return startGatewayProcess(
    'rolling',
    {
      backend: 'slurm',
      container: { runtime: 'apptainer', executable: FAKE_APPTAINER, imageRoots: [TEST_IMAGES_DIR] },
      // One job per task, so that "one job" can be counted by the task's job name.
      slurm: { defaultPartition: 'debug', arrayWindowMs: 0 },
      server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: SHUTDOWN_MS },
    },
    {},
    { prefix, workRoot, keepKeys: true },
  );
}

/** Stops a gateway; returns how long it took, and its log line saying what it waited for. */
async function stop(gw: GatewayProcess): Promise<{ ms: number; stopped: string | undefined }> {
  const began = Date.now();
  process.kill(gw.pid, 'SIGTERM');
  while (gw.exitStatus() === undefined) {
    if (Date.now() - began > SHUTDOWN_MS + 15_000)
      throw new Error(`gateway ${gw.pid} did not stop: ${gw.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  expect(gw.exitStatus()).toBe('exit code 0');
  const stopped = gw
    .stdout()
    .split('\n')
    .find((line) => line.includes('"tes-gateway stopped"'));
  return { ms: Date.now() - began, stopped };
}

/** Creates a task through whichever gateway answers; a gateway that is stopping may refuse it. */
async function create(gateways: () => GatewayProcess[], n: number): Promise<string | undefined> {
  for (const gw of gateways()) {
    try {
      const res = await fetch(`${gw.base}/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          name: `rolling-${n}`,
          executors: [{ image, command: ['sh', '-c', 'sleep 1; echo done'] }],
        }),
      });
      if (res.status === 200) return ((await res.json()) as { id: string }).id;
    } catch {
      // Connection refused or reset: that gateway is stopping; try the other.
    }
  }
  return undefined;
}

beforeAll(() => {
  requireSlurm();
  image = testImages().busybox;
});
afterAll(async () => {
  for (const gw of running) await gw.close();
  const redis = connect();
  await dropPrefix(redis, prefix);
  redis.disconnect();
});

it('loses nothing and submits nothing twice across a rolling restart of two serve processes', async () => {
  let a = await start();
  let b = await start();
  running.push(a, b);
  const up = (): GatewayProcess[] => [a, b].filter((g) => g.exitStatus() === undefined);
  const ids: string[] = [];
  let n = 0;
  let creating = true;
  const creator = (async () => {
    while (creating) {
      const id = await create(up, n++);
      if (id) ids.push(id);
      await new Promise((r) => setTimeout(r, 40));
    }
  })();

  await new Promise((r) => setTimeout(r, 2_000));
  const stoppedA = await stop(a);
  a = await start();
  running.push(a);
  await new Promise((r) => setTimeout(r, 2_000));
  const stoppedB = await stop(b);
  b = await start();
  running.push(b);
  await new Promise((r) => setTimeout(r, 1_000));
  creating = false;
  await creator;

  expect(ids.length).toBeGreaterThan(20);
  for (const stopped of [stoppedA, stoppedB]) {
    // The log line says how long each step of the shutdown waited: the failure shows it.
    expect(stopped).toEqual({ ms: expect.any(Number), stopped: expect.stringContaining('"waitedMs"') });
    if (stopped.ms >= SHUTDOWN_MS + 5_000)
      throw new Error(
        `a gateway took ${stopped.ms} ms to stop, beyond its ${SHUTDOWN_MS} ms: ${stopped.stopped}`,
      );
  }

  // Every accepted task ends COMPLETE.
  const deadline = Date.now() + 180_000;
  const states = new Map<string, string>();
  while (Date.now() < deadline) {
    for (const id of ids) {
      if (states.get(id) === 'COMPLETE') continue;
      const res = await fetch(`${b.base}/tasks/${id}`);
      states.set(id, ((await res.json()) as { state: string }).state);
    }
    if ([...states.values()].every((s) => s === 'COMPLETE')) break;
    await new Promise((r) => setTimeout(r, 1_000));
  }
  const notComplete: string[] = [];
  for (const id of ids.filter((i) => states.get(i) !== 'COMPLETE')) {
    const full = (await (await fetch(`${b.base}/tasks/${id}?view=FULL`)).json()) as {
      state: string;
      logs?: Array<{ system_logs?: string[] }>;
    };
    notComplete.push(`${id}: ${full.state} ${JSON.stringify(full.logs?.map((l) => l.system_logs))}`);
  }
  expect(notComplete).toEqual([]);

  // Exactly one Slurm job for each.
  const counts = new Map<string, number>();
  const since = new Date(Date.now() - 15 * 60_000).toISOString().slice(0, 19);
  const out = execFileSync('sacct', ['-X', '-n', '-P', '-a', `--starttime=${since}`, '--format=JobName'], {
    encoding: 'utf8',
  });
  for (const name of out.split('\n').filter(Boolean)) counts.set(name, (counts.get(name) ?? 0) + 1);
  const wrong = ids
    .filter((id) => counts.get(jobNameFor(id)) !== 1)
    .map((id) => `${id}: ${counts.get(jobNameFor(id)) ?? 0} jobs`);
  expect(wrong).toEqual([]);
});

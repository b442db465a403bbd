import { jest } from '@jest/globals';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { TokenStore } from '../../src/identity/tokens.js';
import { Keys } from '../../src/store/keys.js';
import { ledgerDirOf, taskDirOf } from '../../src/tes/task-directory.js';
import { requireSlurm, testImages } from '../helpers/gateway.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';
import { RUN_AS, runAsUserSettings, runAsUserSetup, unixUser } from '../helpers/run-as-user.js';
import {
  cancelJobsOf,
  jobUsers,
  notComplete,
  shortTask,
  sleep,
  startBurst,
  waitAllEnded,
  wrongJobCounts,
  type EndedTask,
} from '../helpers/fault-burst.js';

/**
 * kill -9 of the gateway during a burst, twice, with tasks running as their owners (identity.runAs
 * user): the `serve` process, run as the service account, dies without any shutdown while two users'
 * tasks are being staged, prepared and submitted through sudo and the helper (a helper call may still
 * be running when its caller dies); a new process on the same Redis and work root takes over. Every
 * task a process accepted ends COMPLETE with exactly one Slurm job or array element, found again
 * through the gateway's ledger and the owner's jobs, and accounting shows that job under the owner.
 */
jest.setTimeout(240_000);

const prefix = testPrefix('fault-run-as-kill');
const users = ['tes-alice', 'tes-bob'] as const;
const auth: Record<string, Record<string, string>> = {};
const started: GatewayProcess[] = [];
let service: { uid: number; gid: number };
let images: string | undefined;
let image: string;
let ids: readonly string[] = [];

function start(): Promise<GatewayProcess> {
  return startGatewayProcess(
    'fault-run-as-kill',
    {
      ...runAsUserSettings(images!),
      // A window long enough for a user's next task to join: bursts go as arrays of one user's tasks.
      slurm: { defaultPartition: 'debug', arrayWindowMs: 500 },
      // A short lease: the next process leads the reconciler soon after the last leader died.
      reconciler: { pollIntervalMs: 500, leaderTtlMs: 3_000 },
    },
    {},
    { prefix, workRoot: RUN_AS.workRoot, keepKeys: true },
    service,
  ).then((gw) => {
    started.push(gw);
    return gw;
  });
}

async function kill9(gw: GatewayProcess): Promise<void> {
  process.kill(gw.pid, 'SIGKILL');
  while (gw.exitStatus() === undefined) await sleep(50);
}

/** One line per task whose job accounting does not show under its owner alone. */
async function wrongOwners(tasks: readonly EndedTask[], ownerOf: (id: string) => string): Promise<string[]> {
  const byJob = await jobUsers(tasks.flatMap((t) => (t.jobId ? [t.jobId] : [])));
  const wrong: string[] = [];
  for (const task of tasks) {
    const under = (task.jobId && byJob.get(task.jobId)) || [];
    if (under.length !== 1 || under[0] !== ownerOf(task.id)) {
      wrong.push(
        `${task.id} of ${ownerOf(task.id)}: job ${task.jobId ?? 'none'} under [${under.join(', ')}]`,
      );
    }
  }
  return wrong;
}

beforeAll(async () => {
  requireSlurm();
  runAsUserSetup();
  image = testImages().busybox;
  service = unixUser(RUN_AS.serviceUser);
  images = mkdtempSync(join(RUN_AS.testDir, 'images-'));
  chownSync(images, service.uid, service.gid);
  const redis = connect();
  try {
    const tokens = new TokenStore(redis, new Keys(prefix).tokens, { cacheTtlMs: 0 });
    for (const user of users) {
      auth[user] = { authorization: `Bearer ${(await tokens.create({ user, lifetimeMs: 3600_000 })).token}` };
    }
  } finally {
    redis.disconnect();
  }
});

afterAll(async () => {
  for (const gw of started) await gw.close();
  // As root: scancel takes any user's job.
  await cancelJobsOf(ids, RUN_AS.workRoot, 'user');
  const redis = connect();
  await dropPrefix(redis, prefix);
  redis.disconnect();
  // The work root is shared with the other run-as-user tests: only this test's tasks go.
  for (const id of ids) {
    rmSync(taskDirOf(RUN_AS.workRoot, id), { recursive: true, force: true });
    rmSync(ledgerDirOf(RUN_AS.workRoot, id, 'user'), { recursive: true, force: true });
  }
  if (images) rmSync(images, { recursive: true, force: true });
});

it("loses no task and runs none twice when a run-as-user gateway is killed with SIGKILL during two users' burst", async () => {
  let gw = await start();
  // Tasks of the two users alternate; four creators at once, so each user's tasks come in pairs that
  // go as arrays (the default pace: about three tasks a second).
  const userOf = (n: number): string => users[n % users.length]!;
  const burst = startBurst(
    () => [gw.base],
    (n) => shortTask(image, `run-as-kill-${n}`),
    { inFlight: 4, pauseMs: 1_200, headers: (n) => auth[userOf(n)]! },
  );
  ids = burst.ids;
  const ownerOf = (id: string): string => userOf(burst.numberOf(id)!);
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
  expect(new Set(burst.ids.map(ownerOf))).toEqual(new Set(users));

  // The stalled submissions come back after BullMQ's stall check (30 s).
  const tasks = await waitAllEnded(
    () => gw.base,
    burst.ids,
    150_000,
    (id) => auth[ownerOf(id)]!,
  );
  expect(notComplete(tasks)).toEqual([]);
  // Array elements are found again through the ledger's markers, not their names: some must be here.
  expect(tasks.filter((t) => t.jobId?.includes('_')).length).toBeGreaterThan(0);
  expect(await wrongJobCounts(tasks, RUN_AS.workRoot, 15, 'user')).toEqual([]);
  expect(await wrongOwners(tasks, ownerOf)).toEqual([]);
});

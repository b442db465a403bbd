import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { TokenStore } from '../../src/identity/tokens.js';
import { Keys } from '../../src/store/keys.js';
import { getTask, requireSlurm, testImages, waitFor } from '../helpers/gateway.js';
import { MAIN, REGISTER, startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { connect, testPrefix } from '../helpers/redis.js';
import { RUN_AS, runAsUserSettings, runAsUserSetup, unixUser } from '../helpers/run-as-user.js';

/**
 * Tasks run as the people who asked (identity.runAs user), end to end on the real single-node Slurm:
 * the gateway runs as the service account `tesgw`, authenticates two users by token, and each one's
 * tasks run as their own Unix user through sudo and the installed helper, with inputs, outputs,
 * cancel and bursts submitted as one array per user.
 */
jest.setTimeout(300_000);

const DATA = join(RUN_AS.testDir, 'data');
let gw: GatewayProcess;
let image: string;
const auth: Record<string, Record<string, string>> = {};
const alice = 'tes-alice';
const bob = 'tes-bob';

function sh(script: string) {
  return { image, command: ['sh', '-c', script] };
}

async function create(user: string, body: unknown): Promise<string> {
  const res = await fetch(`${gw.base}/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth[user] },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as { id?: string; message?: string };
  if (res.status !== 200 || !json.id) throw new Error(`create as ${user}: ${res.status} ${json.message}`);
  return json.id;
}

function sacct(jobId: string, fields: string): string[][] {
  const out = execFileSync('sacct', ['-a', '-n', '-X', '-P', `--format=${fields}`, '-j', jobId], {
    encoding: 'utf8',
  });
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split('|'));
}

/** The controller's line for a job; empty once it has forgotten it ("Invalid job id" then). */
function inQueue(jobId: string): string {
  try {
    return execFileSync('squeue', ['-h', '-j', jobId], { encoding: 'utf8', stdio: 'pipe' }).trim();
  } catch {
    return '';
  }
}

/** A private folder of the user's own under the allowed root, with a file only they may read. */
function privateData(user: string): string {
  const { uid, gid } = unixUser(user);
  const dir = join(DATA, user);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chownSync(dir, uid, gid);
  const secret = join(dir, 'secret.txt');
  writeFileSync(secret, `${user}'s secret\n`, { mode: 0o600 });
  chownSync(secret, uid, gid);
  return dir;
}

beforeAll(async () => {
  requireSlurm();
  runAsUserSetup();
  image = testImages().busybox;
  mkdirSync(DATA, { recursive: true, mode: 0o755 });
  privateData(alice);
  privateData(bob);
  const prefix = testPrefix('run-as-user');
  const redis = connect();
  const tokens = new TokenStore(redis, new Keys(prefix).tokens, { cacheTtlMs: 0 });
  for (const user of [alice, bob]) {
    auth[user] = { authorization: `Bearer ${(await tokens.create({ user, lifetimeMs: 3600_000 })).token}` };
  }
  redis.disconnect();
  const service = unixUser(RUN_AS.serviceUser);
  const images = mkdtempSync(join(RUN_AS.testDir, 'images-'));
  chownSync(images, service.uid, service.gid);
  gw = await startGatewayProcess(
    'run-as-user',
    {
      ...runAsUserSettings(images),
      storage: { allowedRoots: [{ path: DATA, writable: true }] },
      slurm: { defaultPartition: 'debug', missingGraceMs: 60_000, arrayWindowMs: 300 },
    },
    {},
    { prefix, workRoot: RUN_AS.workRoot },
    { uid: service.uid, gid: service.gid },
  );
});

afterAll(async () => {
  await gw?.close();
});

describe('tasks run as their owners', () => {
  it("runs each user's task as that user, with their inputs, outputs and account", async () => {
    const ids: Record<string, string> = {};
    for (const user of [alice, bob]) {
      ids[user] = await create(user, {
        name: `whoami ${user}`,
        inputs: [
          { path: '/in/secret.txt', url: `file://${DATA}/${user}/secret.txt` },
          { path: '/in/note.txt', content: 'from content\n' },
        ],
        outputs: [{ path: '/out/result.txt', url: `file://${DATA}/${user}/result.txt` }],
        volumes: ['/out'],
        executors: [
          sh('id -un; cat /in/secret.txt /in/note.txt > /out/result.txt; id -un >> /out/result.txt'),
        ],
      });
    }
    for (const user of [alice, bob]) {
      const task = await waitFor(
        gw.base,
        ids[user]!,
        ['COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR'],
        180_000,
        auth[user],
      );
      expect({ state: task.state, logs: task.logs?.[0]?.system_logs }).toEqual({
        state: 'COMPLETE',
        logs: expect.anything(),
      });
      expect(task.logs[0].logs[0].stdout).toBe(`${user}\n`);
      const result = join(DATA, user, 'result.txt');
      expect(readFileSync(result, 'utf8')).toBe(`${user}'s secret\nfrom content\n${user}\n`);
      expect(statSync(result).uid).toBe(unixUser(user).uid);
      const dir = join(RUN_AS.workRoot, ids[user]!);
      const st = statSync(dir);
      expect({ uid: st.uid, mode: st.mode & 0o7777 }).toEqual({ uid: unixUser(user).uid, mode: 0o700 });
      const jobId = task.logs[0].metadata.job_id as string;
      expect(sacct(jobId, 'User,Account')).toEqual([[user, RUN_AS.account]]);
    }
  });

  it('refuses a file another user may not read, and leaves it unread', async () => {
    const before = statSync(join(DATA, alice, 'secret.txt'));
    const id = await create(bob, {
      inputs: [{ path: '/in/theirs.txt', url: `file://${DATA}/${alice}/secret.txt` }],
      executors: [sh('cat /in/theirs.txt')],
    });
    const task = await waitFor(
      gw.base,
      id,
      ['COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR'],
      180_000,
      auth[bob],
    );
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(task.logs[0].system_logs.join('\n')).toMatch(
      new RegExp(`inputs\\[0\\]: .*secret\\.txt does not exist, or ${bob} may not reach it`),
    );
    expect(task.logs[0].logs ?? []).toEqual([]);
    expect(statSync(join(DATA, alice, 'secret.txt')).atimeMs).toBe(before.atimeMs);
  });

  it("cancels a user's running job as that user", async () => {
    const id = await create(bob, { executors: [sh('sleep 300')] });
    await waitFor(gw.base, id, ['RUNNING'], 120_000, auth[bob]);
    const res = await fetch(`${gw.base}/tasks/${id}:cancel`, { method: 'POST', headers: auth[bob] });
    expect(res.status).toBe(200);
    const task = await waitFor(gw.base, id, ['CANCELED'], 120_000, auth[bob]);
    const jobId =
      task.logs[0].metadata?.job_id ??
      (await getTask(gw.base, id, 'FULL', auth[bob])).logs[0].metadata.job_id;
    // Completing (CG) for a moment, then gone from the controller's queue.
    const deadline = Date.now() + 60_000;
    let queued = inQueue(jobId);
    while (queued !== '' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      queued = inQueue(jobId);
    }
    expect(queued).toBe('');
    expect(sacct(jobId, 'User,State')).toEqual([[bob, expect.stringMatching(/^CANCELLED/)]]);
  });

  it("sends a burst of two users' tasks as one array per user", async () => {
    const ids = await Promise.all(
      [alice, bob].flatMap((user) =>
        Array.from({ length: 4 }, (_, i) =>
          create(user, { name: `burst ${user} ${i}`, executors: [sh('id -un')] }),
        ),
      ),
    );
    const tasks = await Promise.all(
      ids.map((id, i) =>
        waitFor(
          gw.base,
          id,
          ['COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR'],
          180_000,
          auth[i < 4 ? alice : bob],
        ),
      ),
    );
    const arrays = new Map<string, Set<string>>();
    tasks.forEach((task, i) => {
      const user = i < 4 ? alice : bob;
      expect({ state: task.state, out: task.logs[0].logs[0].stdout }).toEqual({
        state: 'COMPLETE',
        out: `${user}\n`,
      });
      const jobId = task.logs[0].metadata.job_id as string;
      const [[owner]] = sacct(jobId, 'User') as [[string]];
      expect(owner).toBe(user);
      const base = jobId.split('_')[0]!;
      arrays.set(base, (arrays.get(base) ?? new Set()).add(user));
    });
    // Array elements of one user only; at least one burst went as an array.
    for (const users of arrays.values()) expect(users.size).toBe(1);
    expect(tasks.some((t) => String(t.logs[0].metadata.job_id).includes('_'))).toBe(true);
  });

  it('keeps the gateway out of the task directories', async () => {
    const id = await create(alice, { executors: [sh('echo private > /tmp/x')] });
    await waitFor(gw.base, id, ['COMPLETE'], 180_000, auth[alice]);
    const service = unixUser(RUN_AS.serviceUser);
    const dir = join(RUN_AS.workRoot, id);
    expect(existsSync(dir)).toBe(true);
    expect(() =>
      execFileSync(
        'setpriv',
        [`--reuid=${service.uid}`, `--regid=${service.gid}`, '--clear-groups', 'ls', dir],
        {
          stdio: 'pipe',
        },
      ),
    ).toThrow(/Permission denied/);
  });

  it("ends SYSTEM_ERROR with the helper's reason when the task directory is no longer the owner's", async () => {
    const id = await create(alice, { executors: [sh('sleep 6; echo late > out.txt')] });
    await waitFor(gw.base, id, ['RUNNING'], 120_000, auth[alice]);
    // Someone gave the directory away while the job ran: the helper must not read it as alice.
    const other = unixUser(bob);
    chownSync(join(RUN_AS.workRoot, id), other.uid, other.gid);
    const task = await waitFor(gw.base, id, ['SYSTEM_ERROR'], 180_000, auth[alice]);
    const logs = (task.logs[0].system_logs ?? []).join('\n');
    expect(logs).toMatch(/could not be read as the task's owner: the helper refused to /);
    expect(logs).toContain(join(RUN_AS.workRoot, id));
  });
});

describe('task directories that no task record points to', () => {
  it("are removed by gc, the owner's as its owner and the gateway's ledger as the gateway", async () => {
    const id = await create(bob, { executors: [sh('echo left > out.txt')] });
    await waitFor(gw.base, id, ['COMPLETE'], 180_000, auth[bob]);
    const dir = join(RUN_AS.workRoot, id);
    const ledger = join(RUN_AS.workRoot, '.gateway', id);
    expect(statSync(dir).uid).toBe(unixUser(bob).uid);
    expect(existsSync(ledger)).toBe(true);
    // The record is lost (a Redis restored from an old copy, say), and the folders are old.
    const redis = connect();
    try {
      await redis.del(new Keys(gw.prefix).task(id));
    } finally {
      redis.disconnect();
    }
    const old = (Date.now() - 40 * 24 * 3600_000) / 1000;
    for (const path of [dir, ledger]) utimesSync(path, old, old);
    // Archives for the helper that a crash left in the ledgers: an old one goes, a new one stays.
    const handover = (name: string): string => join(RUN_AS.workRoot, '.gateway', `.handover-${name}.tar`);
    writeFileSync(handover('old'), 'x');
    utimesSync(handover('old'), old, old);
    writeFileSync(handover('new'), 'x');

    const service = unixUser(RUN_AS.serviceUser);
    const gc = (...args: string[]): string =>
      execFileSync(process.execPath, ['--import', REGISTER, MAIN, 'gc', ...args, '--config', gw.configFile], {
        encoding: 'utf8',
        stdio: 'pipe',
        uid: service.uid,
        gid: service.gid,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp' },
      });
    expect(gc('--dry-run')).toMatch(/task directories no task record points to: 2 \(\d+ bytes\)\n/);
    expect(existsSync(dir)).toBe(true);
    expect(existsSync(handover('old'))).toBe(true);
    expect(gc()).toMatch(/task directories no task record points to: 2 \(\d+ bytes\) removed/);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(ledger)).toBe(false);
    expect(existsSync(handover('old'))).toBe(false);
    expect(existsSync(handover('new'))).toBe(true);
    rmSync(handover('new'));
  });
});

describe('the work root shared with users', () => {
  it('refuses to start over a ledger folder someone else made in it', async () => {
    const service = unixUser(RUN_AS.serviceUser);
    const root = mkdtempSync(join(RUN_AS.testDir, 'squatted-'));
    chownSync(root, service.uid, service.gid);
    chmodSync(root, 0o1733);
    // A user got there first.
    const squatter = unixUser(alice);
    mkdirSync(join(root, '.gateway'), { mode: 0o777 });
    chownSync(join(root, '.gateway'), squatter.uid, squatter.gid);
    try {
      await expect(
        startGatewayProcess(
          'run-as-squatted',
          {
            auth: { mode: 'tokens' },
            identity: { runAs: 'user', helper: { path: RUN_AS.helper } },
            container: { runtime: 'bwrap-host' },
            security: { allowRoot: false },
          },
          {},
          { prefix: testPrefix('run-as-squatted'), workRoot: root },
          service,
        ),
      ).rejects.toThrow(
        /\.gateway must be a directory of the gateway's own .* someone else may have made it/,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

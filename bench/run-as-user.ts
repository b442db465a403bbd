import { execFile, execFileSync, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TokenStore } from '../src/identity/tokens.js';
import { dropPrefix } from '../src/store/drop-prefix.js';
import { Keys } from '../src/store/keys.js';
import { openRedis } from '../src/store/redis-connection.js';
import { RedisTaskStore } from '../src/store/redis-task-store.js';
import { waitForJobs } from './wait-for-jobs.js';
import { RUN_AS, unixUser } from '../test/helpers/run-as-user-installation.js';
import { ARRAYS_DIR, LEDGERS_DIR } from '../src/tes/task-directory.js';
import { fmt, type Row } from './table.js';
import { runBurstClient } from './burst-client.js';

const run = promisify(execFile);
const TASKS = Number(process.env.BENCH_RUN_AS_TASKS ?? 200);
const ROUNDS = 3;
const ROOT = process.cwd();
const USERS = ['tes-alice', 'tes-bob'];

/**
 * Submission when tasks run as their owners (identity.runAs user) against the same gateway running
 * them as its own account: 200 held one-executor tasks of two users, created at once; from the first
 * create to the last task with its job. Both gateways run as the service account `tesgw`, from the
 * built program, in the same work root, in rounds that alternate between the modes (the machine's
 * noise falls on both).
 */
export async function benchRunAsUser(rows: Row[]): Promise<void> {
  try {
    execFileSync('sinfo', ['-h'], { stdio: 'pipe', timeout: 10_000 });
  } catch {
    rows.push({ section: 'run-as-user', metric: 'skipped', value: 'no cluster (bash scripts/slurm-up.sh)' });
    return;
  }
  execFileSync('bash', [join(ROOT, 'scripts', 'run-as-user-setup.sh')], { stdio: 'pipe' });
  const images = join(ROOT, '.tmp', 'images');
  execFileSync('bash', [join(ROOT, 'test/apptainer/build-images.sh'), images], { stdio: 'pipe' });
  const image = join(images, 'busybox.sif');

  const seconds: Record<'service' | 'user', number[]> = { service: [], user: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of ['service', 'user'] as const)
      seconds[mode].push(await submitBurst(mode, image, images));
  }
  const best = (mode: 'service' | 'user') => Math.min(...seconds[mode]);
  const ratio = best('service') / best('user');
  const each = (mode: 'service' | 'user') => seconds[mode].map((s) => fmt(s, 2)).join(', ');
  rows.push({
    section: 'run-as-user',
    metric: `${TASKS} tasks of ${USERS.length} users, run as the service account: create to last submitted (s), rounds`,
    value: each('service'),
  });
  rows.push({
    section: 'run-as-user',
    metric: `the same, run as their owners through sudo and the helper (s), rounds`,
    value: each('user'),
  });
  rows.push({
    section: 'run-as-user',
    metric: 'submission throughput as owners / as the service account (best rounds)',
    value: fmt(ratio, 2),
    goal: '>= 0.8',
    verdict: ratio >= 0.8 ? 'met' : 'missed',
  });
}

async function submitBurst(mode: 'service' | 'user', image: string, images: string): Promise<number> {
  const service = unixUser(RUN_AS.serviceUser);
  const prefix = `tesgw-bench-run-as:${Date.now()}:`;
  const scratch = mkdtempSync(join(RUN_AS.testDir, `bench-${mode}-`));
  chownSync(scratch, service.uid, service.gid);
  // Both modes work in the helper's work root: where a folder lies on a disk changes what creating
  // files in it costs (on one ext4 here, seven times from one folder to its sibling).
  const workRoot = RUN_AS.workRoot;
  const config = {
    server: { port: 0, host: '127.0.0.1' },
    redis: { prefix },
    workRoot,
    backend: 'slurm',
    log: { level: 'info' },
    auth: { mode: 'tokens' },
    identity: {
      runAs: mode,
      helper: { path: RUN_AS.helper },
      policy: { everyone: { defaultAccount: RUN_AS.account } },
    },
    container: {
      runtime: 'apptainer',
      executable: join(ROOT, 'test/apptainer/apptainer'),
      imageRoots: [images],
      imageCacheDir: join(scratch, 'images'),
    },
    // Held, so that submission is measured alone.
    slurm: { extraArgs: ['--hold'] },
  };
  const file = join(RUN_AS.testDir, `bench-${mode}-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(config));
  const redis = openRedis({ url: process.env.TES_GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379' });
  const store = new RedisTaskStore(redis, { prefix, maxBacklog: 1_000_000 });
  const tokens = new TokenStore(redis, new Keys(prefix).tokens, { cacheTtlMs: 0 });
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'src', 'main.js'), 'serve', '--config', file], {
    cwd: ROOT,
    uid: service.uid,
    gid: service.gid,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/var/lib/tesgw' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let jobIds: string[] = [];
  let ids: string[] = [];
  try {
    const port = await portOf(child);
    const url = `http://127.0.0.1:${port}/ga4gh/tes/v1/tasks`;
    const body = JSON.stringify({ executors: [{ image, command: ['true'] }] });
    const per = TASKS / USERS.length;
    const bearer = await Promise.all(
      USERS.map(async (user) => (await tokens.create({ user, lifetimeMs: 3600_000 })).token),
    );
    const t0 = Date.now();
    const created = await Promise.all(bearer.map((token) => runBurstClient(url, body, per, token)));
    ids = created.flatMap((c) => c.ids);
    const records = await waitForJobs(store, ids);
    jobIds = [...records.values()].map((r) => r.run!.jobId!);
    const last = Math.max(...[...records.values()].map((r) => Date.parse(r.run!.submittedAt!)));
    return (last - t0) / 1000;
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    if (jobIds.length > 0)
      await run('scancel', [...new Set(jobIds.map((id) => id.split('_')[0]!))]).catch(() => undefined);
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(file, { force: true });
    rmSync(scratch, { recursive: true, force: true });
    // The shared work root outlives the round: its task directories and the gateway's ledgers go,
    // or every later round would work in a folder grown by the earlier ones.
    for (const id of ids) {
      rmSync(join(workRoot, id), { recursive: true, force: true });
      rmSync(join(workRoot, LEDGERS_DIR, id), { recursive: true, force: true });
    }
    // The dispatchers of the service account's arrays (as owners, they lie in task directories).
    rmSync(join(workRoot, ARRAYS_DIR), { recursive: true, force: true });
  }
}

/** The port from the gateway's `tes-gateway started` line. */
function portOf(child: ReturnType<typeof spawn>): Promise<number> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => reject(new Error(`the gateway did not start in 60 s: ${err.slice(-2000)}`)),
      60_000,
    );
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err = (err + chunk).slice(-8192)));
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      for (const line of out.split('\n')) {
        try {
          const entry = JSON.parse(line) as { msg?: string; port?: number };
          if (entry.msg === 'tes-gateway started' && typeof entry.port === 'number') {
            clearTimeout(timer);
            resolve(entry.port);
          }
        } catch {
          // not a whole JSON line yet
        }
      }
      out = out.slice(out.lastIndexOf('\n') + 1);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the gateway exited (${code}): ${err.slice(-2000)}`));
    });
  });
}

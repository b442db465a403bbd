import { execFile, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';

/**
 * Stops and starts the daemons of the single-node cluster that scripts/slurm-up.sh brought up, as
 * that script and scripts/slurm-down.sh do: the pid from `/run/slurm/<name>.pid`, SIGTERM (slurmctld
 * saves its state on it) and a wait until the process is gone (a zombie counts as gone); a start with
 * a clean environment in a session of its own (`setsid`), the daemon forking into the background.
 * Fault tests stop one, and must start it again whatever happens: call ensureSlurmDaemon in a
 * finally or afterAll.
 */
export type SlurmDaemon = 'slurmctld' | 'slurmdbd';

const SLURM_RUN = '/run/slurm';
const SLURM_LOG = '/var/log/slurm';
const CLEAN_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' };
const STOP_GRACE_MS = 30_000;
const START_TIMEOUT_MS = 60_000;

/** The pid of the running daemon, or undefined when none runs. */
export function slurmDaemonPid(name: SlurmDaemon): number | undefined {
  try {
    const pid = Number(readFileSync(`${SLURM_RUN}/${name}.pid`, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && isLive(pid, name) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Stops the daemon (SIGTERM, SIGKILL after 30 s); resolves once it has gone. */
export async function stopSlurmDaemon(name: SlurmDaemon): Promise<void> {
  const pid = slurmDaemonPid(name);
  if (pid === undefined) throw new Error(`${name} is not running (no live pid in ${SLURM_RUN}/${name}.pid)`);
  process.kill(pid, 'SIGTERM');
  if (await waitGone(pid, STOP_GRACE_MS)) return;
  process.kill(pid, 'SIGKILL');
  if (!(await waitGone(pid, 10_000))) throw new Error(`${name} (pid ${pid}) outlived SIGKILL`);
}

/**
 * Starts the daemon unless it runs, then waits until the cluster answers again: `scontrol ping`
 * reports the controller UP, `sinfo` shows the node usable and, for slurmdbd, `sacct` answers.
 */
export async function ensureSlurmDaemon(name: SlurmDaemon): Promise<void> {
  if (slurmDaemonPid(name) === undefined) await startDaemon(name);
  await waitUntil(`${name} answers`, async () => {
    const ping = await run('scontrol', ['ping']);
    if (!/is UP/.test(ping)) return false;
    const node = (await run('sinfo', ['-h', '-o', '%T'])).trim();
    if (!/^(idle|mixed|allocated|completing)/.test(node)) return false;
    if (name === 'slurmdbd') await run('sacct', ['-n', '-X', '-P', '-j', '1', '-o', 'JobID']);
    return true;
  });
}

async function startDaemon(name: SlurmDaemon): Promise<void> {
  const log = openSync(`${SLURM_LOG}/${name}.start.log`, 'a');
  try {
    const child = spawn(`/usr/sbin/${name}`, [], {
      env: CLEAN_ENV,
      detached: true,
      stdio: ['ignore', log, log],
    });
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`${name} exited ${code} at start-up; see ${SLURM_LOG}/${name}.log`);
  } finally {
    closeSync(log);
  }
  await waitUntil(`${name} writes its pid file`, () => Promise.resolve(slurmDaemonPid(name) !== undefined));
}

function isLive(pid: number, comm: string | undefined): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[0];
    if (state === 'Z' || state === 'X') return false;
    return comm === undefined || readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isLive(pid, undefined)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

async function waitUntil(what: string, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    try {
      if (await probe()) return;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what}: not after ${START_TIMEOUT_MS} ms${last ? ` (${last})` : ''}`);
}

function run(tool: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(tool, args, { timeout: 10_000, encoding: 'utf8' }, (err, stdout, stderr) =>
      err ? reject(new Error(`${tool} ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout),
    ),
  );
}

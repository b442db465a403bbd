/**
 * The gateway's pid file (`--pid-file FILE`) and `tes-gateway stop --pid-file FILE`.
 *
 * The file holds the process id alone, so `kill "$(cat FILE)"` works as well. Before it signals,
 * `stop` checks, through /proc, that the process still runs this very program: after a crash or a
 * reboot the pid may belong to something else, which must not be sent SIGTERM. Where /proc cannot
 * tell (another system, another user's process), the pid is trusted.
 */
import { readFileSync, readlinkSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';

/** A pid file that cannot be used, or a process that `stop` must not or could not stop. */
export class PidFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PidFileError';
  }
}

/** How long `stop` waits after SIGTERM: the gateway finishes its current queue jobs first. */
export const STOP_TIMEOUT_MS = 60_000;
const STOP_POLL_MS = 100;

/** The pid a pid file's text holds, or undefined when it holds anything else. */
export function parsePid(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^[1-9][0-9]{0,9}$/.test(trimmed)) return undefined;
  const pid = Number(trimmed);
  return pid <= 2 ** 31 - 1 ? pid : undefined;
}

/**
 * Whether a process's command line (/proc/PID/cmdline: NUL-separated) runs `script`: one of its
 * arguments, resolved against the process's working directory and then through symbolic links
 * (`realpath`, undefined when the path does not exist), is the script's real path.
 */
export function commandRunsScript(
  cmdline: string,
  cwd: string,
  script: string,
  realpath: (path: string) => string | undefined,
): boolean {
  const target = realpath(script);
  if (target === undefined) return false;
  return cmdline
    .split('\0')
    .slice(1)
    .filter((arg) => arg !== '' && !arg.startsWith('-'))
    .some((arg) => realpath(isAbsolute(arg) ? arg : resolve(cwd, arg)) === target);
}

export function readPidFile(file: string): number {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new PidFileError(`${file}: no such file (is a gateway running with --pid-file ${file}?)`);
    }
    throw new PidFileError(`${file}: cannot be read: ${(err as Error).message}`);
  }
  const pid = parsePid(text);
  if (pid === undefined)
    throw new PidFileError(`${file}: holds no process id (${JSON.stringify(text.slice(0, 40))})`);
  return pid;
}

/** Writes the file whole or not at all (a rename), so `stop` never reads half of it. */
export function writePidFile(file: string, pid: number): void {
  const partial = `${file}.${pid}.partial`;
  try {
    writeFileSync(partial, `${pid}\n`, { mode: 0o644 });
    renameSync(partial, file);
  } catch (err) {
    rmSync(partial, { force: true });
    throw new PidFileError(`--pid-file ${file}: cannot be written: ${(err as Error).message}`);
  }
}

/** Removes the file if it still names `pid`: a gateway started since owns it otherwise. */
export function removePidFile(file: string, pid: number): void {
  try {
    if (parsePid(readFileSync(file, 'utf8')) === pid) rmSync(file, { force: true });
  } catch {
    // Already gone, or unreadable: nothing of ours to remove.
  }
}

/** Whether the process exists and has not exited (a zombie, not yet reaped by its parent, has). */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists, as another user's process.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** The process's command line (NUL-separated) and working directory; undefined when /proc cannot tell. */
function readCommand(pid: number): { cmdline: string; cwd: string } | undefined {
  try {
    return { cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8'), cwd: readlinkSync(`/proc/${pid}/cwd`) };
  } catch {
    return undefined;
  }
}

function realpathOrUndefined(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

/** A gateway run from `script` that `file` names and that still runs, or undefined. */
export function runningGateway(file: string, script: string): number | undefined {
  let pid: number;
  try {
    pid = readPidFile(file);
  } catch {
    return undefined;
  }
  if (pid === process.pid || !isRunning(pid)) return undefined;
  const command = readCommand(pid);
  return command && !commandRunsScript(command.cmdline, command.cwd, script, realpathOrUndefined)
    ? undefined
    : pid;
}

/**
 * Stops the gateway that `file` names: SIGTERM, then waits until it has exited. Returns what
 * happened, for the operator; throws PidFileError when it must not or could not stop it.
 */
export async function stopGateway(
  file: string,
  script: string,
  timeoutMs = STOP_TIMEOUT_MS,
): Promise<string> {
  const pid = readPidFile(file);
  if (!isRunning(pid)) {
    rmSync(file, { force: true });
    return `process ${pid} named by ${file} is not running; removed the stale pid file`;
  }
  const command = readCommand(pid);
  if (command && !commandRunsScript(command.cmdline, command.cwd, script, realpathOrUndefined)) {
    const runs = command.cmdline.split('\0').join(' ').trim();
    throw new PidFileError(
      `${file}: process ${pid} is not a tes-gateway run from ${script} (it runs: ${runs}); not stopping it`,
    );
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch (err) {
    throw new PidFileError(`cannot signal process ${pid} named by ${file}: ${(err as Error).message}`);
  }
  const end = Date.now() + timeoutMs;
  while (isRunning(pid)) {
    if (Date.now() >= end) {
      throw new PidFileError(
        `process ${pid} named by ${file} is still running ${timeoutMs / 1000} s after SIGTERM ` +
          `(it finishes its current work first); kill -KILL ${pid} ends it at once`,
      );
    }
    await new Promise((r) => setTimeout(r, STOP_POLL_MS));
  }
  removePidFile(file, pid);
  return `stopped process ${pid}`;
}

import { Worker } from 'node:worker_threads';

/**
 * Runs programs from a thread of their own. Starting a process blocks the thread that starts it until
 * the child has exec'd; on a busy host that is tens to hundreds of milliseconds a call, during which
 * an event loop serving HTTP, leases and finalizations stands still. Slurm's programs, called every
 * reconciler cycle and for every burst, therefore start here, and the gateway's own event loop only
 * sends the request and reads the answer.
 */

export interface CommandRequest {
  file: string;
  args: readonly string[];
  /** The child's whole environment. */
  env: Record<string, string>;
  timeoutMs: number;
  maxBuffer: number;
}

export interface CommandResult {
  failed: boolean;
  /** Absent when the program did not start or was killed by a signal. */
  exitCode?: number | undefined;
  signal?: string | undefined;
  /** Without its final line break, as `$(...)` gives it. */
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Why the program could not run or was stopped (a start failure, a timeout, too much output). */
  shortMessage?: string | undefined;
}

/** Grace after SIGTERM (a timeout, too much output) before SIGKILL. */
const KILL_AFTER_MS = 5_000;

/**
 * The thread's code: plain JavaScript over node:child_process, so that it loads the same way from the
 * built program and from the tests' sources.
 */
const THREAD_CODE = `
const { parentPort } = require('node:worker_threads');
const { spawn } = require('node:child_process');
parentPort.on('message', ({ id, file, args, env, timeoutMs, maxBuffer }) => {
  const out = { stdout: [], stderr: [], bytes: 0 };
  let settled = false;
  let timedOut = false;
  let why;
  let killer;
  const finish = (result) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    clearTimeout(killer);
    parentPort.postMessage({
      id,
      stdout: Buffer.concat(out.stdout).toString('utf8').replace(/\\r?\\n$/, ''),
      stderr: Buffer.concat(out.stderr).toString('utf8').replace(/\\r?\\n$/, ''),
      timedOut,
      ...result,
    });
  };
  let child;
  try {
    child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    finish({ failed: true, shortMessage: 'Command failed to start: ' + file + ': ' + err.message });
    return;
  }
  const stop = (reason) => {
    why = why || reason;
    child.kill('SIGTERM');
    killer = setTimeout(() => child.kill('SIGKILL'), ${KILL_AFTER_MS});
  };
  const timer = setTimeout(() => {
    timedOut = true;
    stop('Command timed out after ' + timeoutMs + ' milliseconds: ' + file);
  }, timeoutMs);
  for (const stream of ['stdout', 'stderr']) {
    child[stream].on('data', (chunk) => {
      out.bytes += chunk.length;
      if (out.bytes > maxBuffer) {
        stop('Command produced more than ' + maxBuffer + ' bytes of output: ' + file);
        return;
      }
      out[stream].push(chunk);
    });
  }
  child.on('error', (err) => {
    finish({ failed: true, shortMessage: 'Command failed with ' + (err.code || 'an error') + ': ' + file + ': ' + err.message });
  });
  child.on('close', (code, signal) => {
    const failed = code !== 0 || signal !== null || why !== undefined;
    finish({
      failed,
      exitCode: code === null ? undefined : code,
      signal: signal === null ? undefined : signal,
      shortMessage: why || (failed ? 'Command failed with ' + (signal ? 'signal ' + signal : 'exit code ' + code) + ': ' + file : undefined),
    });
  });
});
`;

interface Pending {
  resolve: (result: CommandResult) => void;
  reject: (err: Error) => void;
}

export class CommandThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  run(request: CommandRequest): Promise<CommandResult> {
    const worker = this.started();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // The thread keeps the process alive only while it has work.
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ id, ...request, args: [...request.args] });
    });
  }

  /** Stops the thread; calls under way fail. */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    if (worker) await worker.terminate();
  }

  private started(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(THREAD_CODE, { eval: true });
    worker.unref();
    worker.on('message', (message: CommandResult & { id: number }) => {
      const { id, ...result } = message;
      const call = this.pending.get(id);
      if (!call) return;
      this.pending.delete(id);
      if (this.pending.size === 0) worker.unref();
      call.resolve(result);
    });
    const lost = (why: string): void => {
      if (this.worker === worker) this.worker = undefined;
      const calls = [...this.pending.values()];
      this.pending.clear();
      for (const call of calls) call.reject(new Error(`the thread that starts programs ${why}`));
    };
    worker.on('error', (err) => lost(`failed: ${err.message}`));
    worker.on('exit', (code) => lost(`exited (code ${code})`));
    this.worker = worker;
    return worker;
  }
}

/** The process's one thread for starting programs. */
export const commandThread = new CommandThread();

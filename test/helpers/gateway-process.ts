import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ROOT } from './gateway.js';
import { connect, dropPrefix, testPrefix } from './redis.js';

/**
 * A whole gateway (`tes-gateway serve`) in a process of its own, run from the TypeScript sources
 * (test/helpers/ts-register.mjs), configured like startTestGateway's. For attacks that may block
 * the gateway's event loop: in the test's own process they would stop jest's timers too, and the
 * test could never fail; here the test keeps its clock and kills the process when done.
 */
export interface GatewayProcess {
  url: string;
  base: string;
  workRoot: string;
  prefix: string;
  pid: number;
  /** The configuration file it was started with, for other commands of the same gateway. */
  configFile: string;
  /** The process's stderr so far (its last 16 KiB), for failure messages. */
  stderr(): string;
  /** Its log (stdout) so far, the last 16 KiB. */
  stdout(): string;
  /** How the process ended (`exit code 1`, `signal SIGKILL`), or undefined while it runs. */
  exitStatus(): string | undefined;
  close(): Promise<void>;
}

export const REGISTER = join(ROOT, 'test', 'helpers', 'ts-register.mjs');
export const MAIN = join(ROOT, 'src', 'main.ts');
const START_TIMEOUT_MS = 60_000;

export async function startGatewayProcess(
  name: string,
  overrides: Record<string, unknown> = {},
  env: Record<string, string> = {},
  /** Several processes of one gateway share a prefix and a work root; the last one drops the keys. */
  share: { prefix: string; workRoot: string; keepKeys?: boolean } | undefined = undefined,
  /** Runs the process as this Unix user (a service account) instead of the test's own. */
  as: { uid: number; gid: number } | undefined = undefined,
): Promise<GatewayProcess> {
  const prefix = share?.prefix ?? testPrefix(name);
  const workRoot =
    share?.workRoot ?? mkdtempSync(join(existsSync('/var/tmp') ? '/var/tmp' : '/tmp', `tesgw-${name}-`));
  const container = (overrides.container ?? {}) as Record<string, unknown>;
  const config = {
    server: { port: 0, host: '127.0.0.1' },
    redis: { prefix },
    workRoot,
    // info: the start line carries the port the process listens on
    log: { level: 'info' },
    reconciler: { pollIntervalMs: 500 },
    worker: { submitBackoffMs: 200 },
    // Tests run as root (CI does), as startTestGateway's gateways do.
    security: { allowRoot: true },
    ...overrides,
    container: { imageCacheDir: join(workRoot, '..', `${basename(workRoot)}-images`), ...container },
  };
  const file = join(workRoot, '..', `${basename(workRoot)}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(config));

  // Only the settings in the file count: TES_GATEWAY_* variables of the caller would override them.
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith('TES_GATEWAY_')) childEnv[k] = v;
  }
  const child = spawn(process.execPath, ['--import', REGISTER, MAIN, 'serve', '--config', file], {
    cwd: ROOT,
    env: { ...childEnv, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(as ? { uid: as.uid, gid: as.gid } : {}),
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-16_384);
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout = (stdout + chunk).slice(-16_384);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  let port: number;
  try {
    port = await readPort(child, () => stderr);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    await dropKeys(prefix);
    throw err;
  }
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    base: `${url}/ga4gh/tes/v1`,
    workRoot,
    prefix,
    configFile: file,
    pid: child.pid!,
    stderr: () => stderr,
    stdout: () => stdout,
    exitStatus: () =>
      child.exitCode !== null
        ? `exit code ${child.exitCode}`
        : child.signalCode !== null
          ? `signal ${child.signalCode}`
          : undefined,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        // A process whose event loop is blocked never runs its SIGTERM handler.
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      if (!share?.keepKeys) await dropKeys(prefix);
    },
  };
}

/** Waits for the `tes-gateway started` log line and returns its port; keeps draining stdout after. */
function readPort(child: ChildProcess, stderr: () => string): Promise<number> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    // The log lines before the start line: where a start that never finishes stopped.
    let seen = '';
    let found = false;
    const fail = (why: string): void => {
      clearTimeout(timer);
      reject(
        new Error(`the gateway process did not start: ${why}; stdout: ${seen + buffer}; stderr: ${stderr()}`),
      );
    };
    const timer = setTimeout(() => fail(`no start line in ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      if (found) return;
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        seen = (seen + line + '\n').slice(-8_192);
        const port = portOf(line);
        if (port !== undefined) {
          found = true;
          clearTimeout(timer);
          resolve(port);
          return;
        }
      }
    });
    child.once('exit', (code, signal) => {
      if (!found) fail(`it exited (${code ?? signal})`);
    });
  });
}

function portOf(line: string): number | undefined {
  try {
    const entry = JSON.parse(line) as { msg?: string; port?: number };
    return entry.msg === 'tes-gateway started' && typeof entry.port === 'number' ? entry.port : undefined;
  } catch {
    return undefined;
  }
}

async function dropKeys(prefix: string): Promise<void> {
  const redis = connect();
  try {
    await dropPrefix(redis, prefix);
  } finally {
    redis.disconnect();
  }
}

import { jest } from '@jest/globals';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

/** The built `tes-gateway` program (npm run build), as an operator runs it. */
jest.setTimeout(60_000);

const MAIN = join(process.cwd(), 'dist', 'src', 'main.js');

function config(extra: Record<string, unknown>): { file: string; prefix: string } {
  const prefix = testPrefix('cli');
  const file = join(mkdtempSync(join(tmpdir(), 'tesgw-cli-')), 'gateway.yaml');
  writeFileSync(file, JSON.stringify({ redis: { prefix }, log: { level: 'warn' }, ...extra }));
  return { file, prefix };
}

function children(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

async function waitUntil(check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out');
}

/** `tes-gateway ARGS` run to its end without blocking this process (which must reap the gateway). */
function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // The timeout turns a gateway that should have refused to start into a failure, not a hang.
    execFile(
      process.execPath,
      [MAIN, ...args],
      { encoding: 'utf8', timeout: 30_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

/** Whether the process has ended (a zombie its parent, this process, has not reaped yet has). */
function hasExited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) === 'Z';
  } catch {
    return true;
  }
}

/** Whether SIGTERM waits, undelivered, for the process (which SIGSTOP froze). */
function sigtermPending(pid: number): boolean {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const shared = /^ShdPnd:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  return (BigInt(`0x${shared}`) & (1n << 14n)) !== 0n;
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

beforeAll(() => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
});

describe('tes-gateway', () => {
  it('refuses a bad configuration listing every problem, with exit code 2', () => {
    const { file } = config({ server: { prot: 1 }, backend: 'pbs' });
    let stderr = '';
    let status = 0;
    try {
      execFileSync(process.execPath, [MAIN, 'api', '--config', file], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      stderr = String((err as { stderr: string }).stderr);
      status = (err as { status: number }).status;
    }
    expect(status).toBe(2);
    expect(stderr).toContain('server: unknown setting prot');
    expect(stderr).toMatch(/backend: Invalid enum value/);
  });

  it('refuses a trailing --config that lacks its file with exit code 2 and the usage', async () => {
    const trailing = await run('api', '--config');
    expect(trailing.code).toBe(2);
    expect(trailing.stderr).toBe(
      `tes-gateway: option '--config <value>' argument missing\n${(await run('--help')).stdout}`,
    );
    const unknown = await run('worker', '--config=x.yaml', '--verbose');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^tes-gateway: unknown option '--verbose'\nusage: tes-gateway/);
  });

  it('reads --config FILE and --config=FILE alike', async () => {
    const { file } = config({ server: { prot: 1 } });
    for (const args of [['--config', file], [`--config=${file}`]]) {
      const refused = await run('images', ...args);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain(`tes-gateway: invalid configuration in ${file}:\n`);
    }
  });

  it('refuses unsafe settings at start with exit code 2, naming each one and why', () => {
    const top = mkdtempSync(join(tmpdir(), 'tesgw-cli-unsafe-'));
    const { file } = config({
      backend: 'slurm',
      workRoot: join(top, 'tasks'),
      container: { imageCacheDir: join(top, 'images') },
      storage: { allowedRoots: [top] },
    });
    const run = spawnSync(process.execPath, [MAIN, 'serve', '--config', file], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain(`tes-gateway: invalid configuration in ${file}:\n`);
    expect(run.stderr).toContain(
      `  - storage.allowedRoots[0]: ${top} contains workRoot ${join(top, 'tasks')}, so through file:// ` +
        `inputs and outputs other tasks' files, their job scripts included, could be read and overwritten`,
    );
    // CI runs as root: the slurm backend then needs security.allowRoot, and says so.
    if (process.getuid?.() === 0) {
      expect(run.stderr).toContain(
        '  - security.allowRoot: the gateway runs as root (uid 0) with the slurm backend, so job scripts ' +
          'and output delivery would run as root',
      );
    }
  });

  it('runs several API processes on one port, replaces one that dies, and stops on SIGTERM', async () => {
    const port = 19_000 + Math.floor(Math.random() * 900);
    const { file, prefix } = config({ server: { port, host: '127.0.0.1', processes: 2 } });
    const primary = spawn(process.execPath, [MAIN, 'api', '--config', file], { stdio: 'ignore' });
    const url = `http://127.0.0.1:${port}/ga4gh/tes/v1/service-info`;
    try {
      await waitUntil(async () => (await fetch(url).catch(() => undefined))?.ok === true);
      await waitUntil(() => children(primary.pid!).length === 2);
      const [first] = children(primary.pid!);
      process.kill(first!, 'SIGKILL');
      await waitUntil(() => {
        const now = children(primary.pid!);
        return now.length === 2 && !now.includes(first!);
      });
      expect((await fetch(url)).status).toBe(200);
      const exited = new Promise<number | null>((resolve) => primary.once('exit', (code) => resolve(code)));
      primary.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (primary.exitCode === null) primary.kill('SIGKILL');
      const redis = connect();
      await dropPrefix(redis, prefix);
      redis.disconnect();
    }
  });

  describe('stop', () => {
    /** A `serve` gateway on the local backend that writes `pidFile`, once it has started. */
    async function serveWithPidFile(pidFile: string): Promise<{ child: ChildProcess; prefix: string }> {
      const { file, prefix } = config({
        server: { port: 0, host: '127.0.0.1' },
        backend: 'local',
        workRoot: mkdtempSync(join(tmpdir(), 'tesgw-cli-stop-')),
        container: { runtime: 'bwrap-host' },
        log: { level: 'info' },
      });
      const child = spawn(process.execPath, [MAIN, 'serve', '--config', file, '--pid-file', pidFile], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
      try {
        await waitUntil(() => out.includes('tes-gateway started') || child.exitCode !== null);
      } catch (err) {
        // Not left running: its open pipe would keep jest from ending.
        child.kill('SIGKILL');
        throw new Error(`the gateway did not start in time (${String(err)}); its log so far: ${out}`);
      }
      if (child.exitCode !== null) throw new Error(`the gateway exited with code ${child.exitCode}: ${out}`);
      return { child, prefix };
    }

    it('writes the pid file, refuses a second gateway on it, and stops the gateway cleanly', async () => {
      const pidFile = join(mkdtempSync(join(tmpdir(), 'tesgw-cli-pid-')), 'gateway.pid');
      const { child, prefix } = await serveWithPidFile(pidFile);
      try {
        expect(readFileSync(pidFile, 'utf8')).toBe(`${child.pid}\n`);

        const second = await run(
          'serve',
          '--config',
          config({ backend: 'local' }).file,
          '--pid-file',
          pidFile,
        );
        expect(second.code).toBe(2);
        expect(second.stderr).toContain(
          `tes-gateway: --pid-file ${pidFile}: a gateway already runs as process ${child.pid} ` +
            `(tes-gateway stop --pid-file ${pidFile} stops it)`,
        );
        expect(readFileSync(pidFile, 'utf8')).toBe(`${child.pid}\n`);

        // Frozen, the gateway holds the SIGTERM that stop sends: stop must wait for it, not return.
        const exited = exitOf(child);
        process.kill(child.pid!, 'SIGSTOP');
        let returned = false;
        const stopping = run('stop', '--pid-file', pidFile).finally(() => (returned = true));
        await waitUntil(() => sigtermPending(child.pid!));
        await new Promise((r) => setTimeout(r, 500));
        expect(returned).toBe(false);
        process.kill(child.pid!, 'SIGCONT');
        const stopped = await stopping;
        expect(stopped).toMatchObject({ code: 0, stdout: `tes-gateway: stopped process ${child.pid}\n` });
        // stop returns once the gateway has gone, after its own clean shutdown (exit code 0).
        expect(hasExited(child.pid!)).toBe(true);
        expect(await exited).toEqual({ code: 0, signal: null });
        expect(existsSync(pidFile)).toBe(false);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        const redis = connect();
        await dropPrefix(redis, prefix);
        redis.disconnect();
      }
    });

    it('does not signal a process that is not the gateway', async () => {
      const pidFile = join(mkdtempSync(join(tmpdir(), 'tesgw-cli-pid-')), 'gateway.pid');
      const other = spawn('sleep', ['60'], { stdio: 'ignore' });
      try {
        writeFileSync(pidFile, `${other.pid}\n`);
        const stopped = await run('stop', '--pid-file', pidFile);
        expect(stopped.code).toBe(1);
        expect(stopped.stderr).toContain(
          `tes-gateway: ${pidFile}: process ${other.pid} is not a tes-gateway run from ${MAIN} ` +
            `(it runs: sleep 60); not stopping it`,
        );
        expect(other.exitCode ?? other.signalCode).toBeNull();
        expect(readFileSync(pidFile, 'utf8')).toBe(`${other.pid}\n`);
      } finally {
        other.kill('SIGKILL');
      }
    });

    it('removes a pid file whose process has gone, and says when there is no pid file', async () => {
      const pidFile = join(mkdtempSync(join(tmpdir(), 'tesgw-cli-pid-')), 'gateway.pid');
      const gone = spawn('true', { stdio: 'ignore' });
      await exitOf(gone);
      writeFileSync(pidFile, `${gone.pid}\n`);

      const stale = await run('stop', '--pid-file', pidFile);
      expect(stale).toMatchObject({
        code: 0,
        stdout: `tes-gateway: process ${gone.pid} named by ${pidFile} is not running; removed the stale pid file\n`,
      });
      expect(existsSync(pidFile)).toBe(false);

      const missing = await run('stop', '--pid-file', pidFile);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toBe(
        `tes-gateway: ${pidFile}: no such file (is a gateway running with --pid-file ${pidFile}?)\n`,
      );
      expect((await run('stop')).stderr).toContain('tes-gateway: --pid-file FILE is required for stop');
    });
  });
});

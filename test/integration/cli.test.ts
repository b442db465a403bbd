import { jest } from '@jest/globals';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
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
});

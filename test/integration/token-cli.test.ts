import { jest } from '@jest/globals';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { TokenStore } from '../../src/identity/tokens.js';
import { Keys } from '../../src/store/keys.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';
import { MAIN, requireBuiltProgram, runProgram } from '../helpers/built-program.js';

/**
 * `tes-gateway token ...` as an operator runs it: the built program (npm run build) on real Redis.
 * Each run starts node afresh, which takes seconds on a loaded machine.
 */
jest.setTimeout(120_000);

function config(extra: Record<string, unknown> = {}): { file: string; prefix: string } {
  const prefix = testPrefix('token-cli');
  const file = join(mkdtempSync(join(tmpdir(), 'tesgw-token-cli-')), 'gateway.yaml');
  writeFileSync(file, JSON.stringify({ redis: { prefix }, log: { level: 'warn' }, ...extra }));
  return { file, prefix };
}

const run = (...args: string[]) => runProgram(args);

/** The JSON lines of stderr that are audit records. */
function auditLines(stderr: string): Record<string, unknown>[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.audit === true);
}

beforeAll(requireBuiltProgram);

describe('tes-gateway token', () => {
  let redis: Redis;
  const prefixes: string[] = [];
  beforeAll(() => {
    redis = connect();
  });
  afterAll(async () => {
    for (const prefix of prefixes) await dropPrefix(redis, prefix);
    redis.disconnect();
  });
  function setup(extra?: Record<string, unknown>): { file: string; key: string; store: TokenStore } {
    const { file, prefix } = config(extra);
    prefixes.push(prefix);
    const key = new Keys(prefix).tokens;
    return { file, key, store: new TokenStore(redis, key, { cacheTtlMs: 0 }) };
  }

  it('creates a token the store verifies, lists it without its secret, and revokes it once', async () => {
    const { file, store } = setup();
    const created = await run('token', 'create', '--user', 'alice', '--name', 'CI runner', '--config', file);
    expect(created.code).toBe(0);
    const [token, note, ...rest] = created.stdout.split('\n');
    expect(rest).toEqual(['']);
    expect(token).toMatch(/^tesgw_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    const verdict = await store.verify(token!);
    expect(verdict).toMatchObject({ ok: true, user: 'alice' });
    const tokenId = (verdict as { id: string }).id;
    expect(note).toMatch(
      new RegExp(
        `^shown once, keep it now \\(only its hash is stored\\): token ${tokenId} for alice \\(CI runner\\), ` +
          'expires \\d{4}-\\d\\d-\\d\\dT',
      ),
    );
    const [info] = await store.list();
    // The default lifetime, auth.tokens.defaultLifetime: 90 days.
    expect(Date.parse(info!.expiresAt) - Date.parse(info!.createdAt)).toBe(90 * 86_400_000);
    expect(auditLines(created.stderr)).toEqual([
      expect.objectContaining({
        audit: true,
        event: 'token created',
        user: 'alice',
        tokenId,
        by: expect.any(String),
        from: 'command line',
      }),
    ]);
    expect(created.stderr).not.toContain(token!.slice(23));

    const secret = token!.slice(23);
    const table = await run('token', 'list', '--config', file);
    expect(table.code).toBe(0);
    expect(table.stdout).not.toContain(secret);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+USER\s+LABEL\s+CREATED\s+LAST USED\s+EXPIRES$/);
    expect(lines[1]).toMatch(new RegExp(`^${tokenId}\\s+alice\\s+CI runner\\s+\\S+Z\\s+\\S+Z\\s+\\S+Z$`));
    const json = await run('token', 'list', '--json', '--user', 'alice', '--config', file);
    expect(json.stdout).not.toContain(secret);
    expect(JSON.parse(json.stdout)).toEqual([{ ...info, expired: false }]);
    expect(
      JSON.parse((await run('token', 'list', '--json', '--user', 'bob', '--config', file)).stdout),
    ).toEqual([]);

    const revoked = await run('token', 'revoke', tokenId, '--config', file);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toBe(`revoked token ${tokenId} of alice (CI runner)\n`);
    expect(auditLines(revoked.stderr)).toEqual([
      expect.objectContaining({ event: 'token revoked', user: 'alice', tokenId, from: 'command line' }),
    ]);
    expect(await store.verify(token!)).toEqual({
      ok: false,
      reason: 'the token was revoked or never existed',
    });

    const again = await run('token', 'revoke', tokenId, '--config', file);
    expect(again).toEqual({
      code: 1,
      stdout: '',
      stderr: `tes-gateway: no token ${tokenId} (token list shows the tokens there are)\n`,
    });
    expect((await run('token', 'list', '--config', file)).stdout).toBe('no tokens\n');
  });

  it('marks an expired token in the list', async () => {
    const { file, key } = setup();
    const past = new TokenStore(redis, key, {
      cacheTtlMs: 0,
      now: () => Date.now() - 2 * 3_600_000,
    });
    const { info } = await past.create({ user: 'alice', lifetimeMs: 3_600_000 });
    const table = await run('token', 'list', '--config', file);
    expect(table.stdout).toMatch(new RegExp(`^${info.id}\\s.*Z \\(expired\\)$`, 'm'));
    expect(JSON.parse((await run('token', 'list', '--json', '--config', file)).stdout)).toMatchObject([
      { id: info.id, expired: true },
    ]);
  });

  it('refuses a denied user and an invalid name with exit code 2, creating nothing', async () => {
    const { file, store } = setup();
    const root = await run('token', 'create', '--user', 'root', '--config', file);
    expect(root).toEqual({
      code: 2,
      stdout: '',
      stderr: 'tes-gateway: --user: the user root may not use this service (identity.denyUsers)\n',
    });
    const invalid = await run('token', 'create', '--user', 'Alice;x', '--config', file);
    expect(invalid.code).toBe(2);
    expect(invalid.stdout).toBe('');
    expect(invalid.stderr).toBe(
      'tes-gateway: --user: "Alice;x" is not a valid POSIX user name (a lower-case letter or _ first, ' +
        'then lower-case letters, digits, _ or -, at most 32)\n',
    );
    expect(await store.list()).toEqual([]);
  });

  it('lets a reader take the token alone and stop (| head -1) without an error', async () => {
    const { file, store } = setup();
    const out = await new Promise<string>((resolve) =>
      execFile(
        'bash',
        [
          '-c',
          `"$0" "$1" token create --user alice --config "$2" 2>&1 | head -1; echo "exit \${PIPESTATUS[0]}"`,
          process.execPath,
          MAIN,
          file,
        ],
        { encoding: 'utf8', timeout: 90_000 },
        (_err, stdout) => resolve(stdout),
      ),
    );
    const lines = out.split('\n').filter((l) => !l.startsWith('{'));
    expect(lines[0]).toMatch(/^tesgw_/);
    expect(out).toContain('exit 0');
    expect(out).not.toMatch(/EPIPE/);
    expect(await store.list()).toHaveLength(1);
  });

  it('refuses a lifetime beyond auth.tokens.maxLifetime, given or by default', async () => {
    const { file, store } = setup({ auth: { tokens: { maxLifetime: '30d' } } });
    const long = await run('token', 'create', '--user', 'alice', '--expires', '31d', '--config', file);
    expect(long).toEqual({
      code: 2,
      stdout: '',
      stderr: 'tes-gateway: --expires 31d is longer than auth.tokens.maxLifetime (30d) allows\n',
    });
    const byDefault = await run('token', 'create', '--user', 'alice', '--config', file);
    expect(byDefault.code).toBe(2);
    expect(byDefault.stderr).toBe(
      'tes-gateway: auth.tokens.defaultLifetime 90d is longer than auth.tokens.maxLifetime (30d) allows\n',
    );
    expect(await store.list()).toEqual([]);
    const ok = await run('token', 'create', '--user', 'alice', '--expires', '4w', '--config', file);
    expect({ code: ok.code, stderr: ok.stderr }).toEqual({ code: 0, stderr: expect.any(String) });
    const [info] = await store.list();
    expect(Date.parse(info!.expiresAt) - Date.parse(info!.createdAt)).toBe(28 * 86_400_000);
  });

  it('answers a usage error with exit code 2 and the usage', async () => {
    const usage = (await run('--help')).stdout;
    expect(usage).toContain('tes-gateway token create --user NAME');
    const noUser = await run('token', 'create');
    expect(noUser).toEqual({
      code: 2,
      stdout: '',
      stderr: `tes-gateway: token create needs --user NAME\n${usage}`,
    });
    const badExpiry = await run('token', 'create', '--user', 'alice', '--expires', 'forever');
    expect(badExpiry.code).toBe(2);
    expect(badExpiry.stderr).toMatch(/^tes-gateway: --expires: "forever" is not a duration/);
    const noId = await run('token', 'revoke');
    expect(noId.code).toBe(2);
    expect(noId.stderr).toContain('token revoke needs one token id');
  });
});

import { jest } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { parseDuration, TokenStore } from '../../src/identity/tokens.js';
import { Keys } from '../../src/store/keys.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const MINUTE = 60_000;

/** A clock the test moves by hand. */
function clock(start = T0): { now: () => number; at: (ms: number) => void } {
  let current = start;
  return { now: () => current, at: (ms) => (current = ms) };
}

/** The names of the Redis commands `redis` sends from now on (lower case), as Redis receives them. */
function recordCommands(redis: Redis): { names: () => string[]; stop: () => void } {
  const spy = jest.spyOn(redis, 'sendCommand');
  return {
    names: () => spy.mock.calls.map(([command]) => String((command as { name: string }).name).toLowerCase()),
    stop: () => spy.mockRestore(),
  };
}

function secretOf(token: string): string {
  return token.slice('tesgw_'.length + 17);
}

describe('TokenStore', () => {
  let redis: Redis;
  let prefix: string;
  let key: string;
  beforeEach(() => {
    redis = connect();
    prefix = testPrefix('tokens');
    key = new Keys(prefix).tokens;
  });
  afterEach(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
  });

  it('issues a token that verifies as its user, and lists it', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000 });
    const { token, info } = await store.create({
      user: 'alice',
      name: 'laptop',
      lifetimeMs: 90 * 86_400_000,
    });
    expect(token).toMatch(/^tesgw_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(token.slice(6, 22)).toBe(info.id);
    expect(Date.parse(info.expiresAt) - Date.parse(info.createdAt)).toBe(90 * 86_400_000);
    expect(await store.verify(token)).toEqual({ ok: true, id: info.id, user: 'alice' });
    expect(await store.list()).toEqual([{ ...info, lastUsedAt: expect.any(String) }]);
    expect(TokenStore.looksLikeToken(token)).toBe(true);
    expect(TokenStore.looksLikeToken('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln')).toBe(false);
  });

  it('stores only the SHA-256 of the secret, and no field holds the secret', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000 });
    const { token, info } = await store.create({ user: 'alice', lifetimeMs: MINUTE });
    const stored = await redis.hget(key, info.id);
    expect(stored).not.toBeNull();
    expect(stored).not.toContain(secretOf(token));
    const record = JSON.parse(stored!);
    expect(record.hash).toBe(createHash('sha256').update(secretOf(token)).digest('hex'));
    expect(record.hash).not.toBe(secretOf(token));
    const listed = JSON.stringify(await store.list());
    expect(listed).not.toContain(secretOf(token));
    expect(listed).not.toContain(record.hash);
  });

  it('refuses a wrong secret for a real id', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000 });
    const { info } = await store.create({ user: 'alice', lifetimeMs: MINUTE });
    const forged = `tesgw_${info.id}_${randomBytes(32).toString('base64url')}`;
    expect(await store.verify(forged)).toEqual({
      ok: false,
      reason: 'the token is not one this service issued',
    });
  });

  it('refuses text that is not a token without asking Redis', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000 });
    const { token } = await store.create({ user: 'alice', lifetimeMs: MINUTE });
    const commands = recordCommands(redis);
    try {
      for (const garbage of [
        '',
        'tesgw_',
        'tesgw_zzzz',
        `${token}x`,
        token.slice(0, -1),
        token.toUpperCase(),
        `Bearer ${token}`,
        'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln',
      ]) {
        expect(await store.verify(garbage)).toEqual({
          ok: false,
          reason: 'the token is not one this service issued',
        });
      }
      expect(commands.names()).toEqual([]);
    } finally {
      commands.stop();
    }
  });

  it('refuses a well-formed token whose id was never issued', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000 });
    const made = `tesgw_${randomBytes(8).toString('hex')}_${randomBytes(32).toString('base64url')}`;
    expect(await store.verify(made)).toEqual({ ok: false, reason: 'the token was revoked or never existed' });
  });

  it('refuses an expired token even while its record is cached', async () => {
    const time = clock();
    const store = new TokenStore(redis, key, { cacheTtlMs: 3_600_000, now: time.now });
    const { token, info } = await store.create({ user: 'alice', lifetimeMs: 30 * MINUTE });
    expect(info.expiresAt).toBe('2026-01-01T00:30:00.000Z');
    time.at(T0 + 30 * MINUTE - 1);
    expect(await store.verify(token)).toMatchObject({ ok: true });
    const commands = recordCommands(redis);
    try {
      time.at(T0 + 30 * MINUTE);
      expect(await store.verify(token)).toEqual({
        ok: false,
        reason: 'the token has expired (on 2026-01-01T00:30:00.000Z)',
      });
      expect(commands.names()).toEqual([]);
    } finally {
      commands.stop();
    }
  });

  it('sees a revocation by another process only once its cached record is cacheTtlMs old', async () => {
    const time = clock();
    const verifier = new TokenStore(redis, key, { cacheTtlMs: 5000, now: time.now });
    const other = connect();
    try {
      const { token, info } = await new TokenStore(other, key, { cacheTtlMs: 5000 }).create({
        user: 'alice',
        lifetimeMs: 60 * MINUTE,
      });
      expect(await verifier.verify(token)).toMatchObject({ ok: true });
      expect(await new TokenStore(other, key, { cacheTtlMs: 5000 }).revoke(info.id)).toMatchObject({
        id: info.id,
        user: 'alice',
      });

      const commands = recordCommands(redis);
      try {
        time.at(T0 + 4999);
        expect(await verifier.verify(token)).toEqual({ ok: true, id: info.id, user: 'alice' });
        expect(commands.names()).toEqual([]);
        time.at(T0 + 5000);
        expect(await verifier.verify(token)).toEqual({
          ok: false,
          reason: 'the token was revoked or never existed',
        });
        expect(commands.names()).toEqual(['hget']);
        // The absence is cached too.
        time.at(T0 + 9999);
        expect(await verifier.verify(token)).toMatchObject({ ok: false });
        expect(commands.names()).toEqual(['hget']);
      } finally {
        commands.stop();
      }
    } finally {
      other.disconnect();
    }
  });

  it('takes a revocation in its own process at once', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 60_000 });
    const { token, info } = await store.create({ user: 'alice', lifetimeMs: MINUTE });
    expect(await store.verify(token)).toMatchObject({ ok: true });
    await store.revoke(info.id);
    expect(await store.verify(token)).toMatchObject({ ok: false });
  });

  it('reads an uncached id once for concurrent verifies', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000 });
    const { token } = await new TokenStore(redis, key, { cacheTtlMs: 5000 }).create({
      user: 'alice',
      lifetimeMs: MINUTE,
    });
    const commands = recordCommands(redis);
    try {
      const verdicts = await Promise.all(Array.from({ length: 20 }, () => store.verify(token)));
      expect(verdicts.every((v) => v.ok)).toBe(true);
      expect(commands.names().filter((n) => n === 'hget')).toEqual(['hget']);
    } finally {
      commands.stop();
    }
  });

  it('keeps at most 10,000 records cached, dropping the oldest', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 60_000 });
    const made = (): string =>
      `tesgw_${randomBytes(8).toString('hex')}_${randomBytes(32).toString('base64url')}`;
    const first = made();
    const rest = Array.from({ length: 10_000 }, made);
    await store.verify(first);
    await Promise.all(rest.map((t) => store.verify(t)));
    const commands = recordCommands(redis);
    try {
      await store.verify(rest[rest.length - 1]!);
      expect(commands.names()).toEqual([]);
      await store.verify(first);
      expect(commands.names()).toEqual(['hget']);
    } finally {
      commands.stop();
    }
  });

  it('writes the last use at most once a minute', async () => {
    const time = clock();
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000, now: time.now });
    const { token, info } = await store.create({ user: 'alice', lifetimeMs: 60 * MINUTE });
    expect((await store.list())[0]!.lastUsedAt).toBeUndefined();
    // The write is not awaited, but one connection runs commands in order: a later read sees it.
    await store.verify(token);
    expect(await redis.hget(`${key}:used`, info.id)).toBe('2026-01-01T00:00:00.000Z');
    time.at(T0 + 59_999);
    await store.verify(token);
    expect((await store.list())[0]!.lastUsedAt).toBe('2026-01-01T00:00:00.000Z');
    time.at(T0 + MINUTE);
    await store.verify(token);
    expect((await store.list())[0]!.lastUsedAt).toBe('2026-01-01T00:01:00.000Z');
  });

  it('does not bring back a revoked token by writing its last use', async () => {
    const time = clock();
    // A long cache: the revoked token still verifies here, and its last use is due again.
    const store = new TokenStore(redis, key, { cacheTtlMs: 60 * MINUTE, now: time.now });
    const { token, info } = await store.create({ user: 'alice', lifetimeMs: 120 * MINUTE });
    await store.verify(token);
    await new TokenStore(redis, key, { cacheTtlMs: 0 }).revoke(info.id);
    expect(await redis.hexists(`${key}:used`, info.id)).toBe(0);
    time.at(T0 + 2 * MINUTE);
    expect(await store.verify(token)).toMatchObject({ ok: true });
    expect(await redis.hexists(`${key}:used`, info.id)).toBe(0);
    expect(await redis.hexists(key, info.id)).toBe(0);
    expect(await store.list()).toEqual([]);
  });

  it('lists oldest first, by user, and revokes once', async () => {
    const time = clock();
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000, now: time.now });
    const a = await store.create({ user: 'alice', name: 'first', lifetimeMs: MINUTE });
    time.at(T0 + 1000);
    const b = await store.create({ user: 'bob', lifetimeMs: MINUTE });
    time.at(T0 + 2000);
    const c = await store.create({ user: 'alice', name: 'third', lifetimeMs: MINUTE });
    expect((await store.list()).map((t) => t.id)).toEqual([a.info.id, b.info.id, c.info.id]);
    expect(await store.list('alice')).toEqual([a.info, c.info]);
    expect(await store.list('carol')).toEqual([]);
    expect(await store.revoke(b.info.id)).toEqual(b.info);
    expect(await store.revoke(b.info.id)).toBeUndefined();
    expect((await store.list()).map((t) => t.id)).toEqual([a.info.id, c.info.id]);
  });

  it('refuses a lifetime that is not a positive number of milliseconds', async () => {
    const store = new TokenStore(redis, key, { cacheTtlMs: 5000 });
    await expect(store.create({ user: 'alice', lifetimeMs: 0 })).rejects.toThrow(/positive/);
    await expect(store.create({ user: 'alice', lifetimeMs: 1.5 })).rejects.toThrow(/positive/);
  });
});

describe('parseDuration', () => {
  it('reads minutes, hours, days and weeks', () => {
    expect(parseDuration('30m')).toBe(30 * 60_000);
    expect(parseDuration('12h')).toBe(12 * 3_600_000);
    expect(parseDuration('90d')).toBe(90 * 86_400_000);
    expect(parseDuration('2w')).toBe(14 * 86_400_000);
  });

  it('refuses anything else, saying how to write one', () => {
    for (const text of ['', '0d', '1y', '10', 'd', '1.5h', '-1d', ' 1d', '1d ', '1000000d', '1D']) {
      expect(() => parseDuration(text)).toThrow(
        `${JSON.stringify(text)} is not a duration: write a number and a unit (m, h, d or w), as in 30m, 12h, 90d or 2w`,
      );
    }
  });
});

import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { DURATION } from '../config/schema.js';

/**
 * Personal access tokens: `tesgw_<id>_<secret>`. The id (16 hex digits) names the token in lists,
 * logs and revocations; the secret (32 random bytes, base64url) proves it. Redis keeps only the
 * SHA-256 of the secret: with 256 bits of entropy no guessing attack needs a slow hash to stop it,
 * and a leaked Redis dump holds nothing that authenticates.
 *
 * Storage: one hash, id -> JSON record, and beside it `<key>:used`, id -> last use (ISO), so that the
 * frequent last-use writes never rewrite the record, and one that races a revocation cannot bring the
 * token back (see TOUCH).
 */

const TOKEN_PREFIX = 'tesgw_';
const TOKEN = /^tesgw_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const TOKEN_ID = /^[0-9a-f]{16}$/;

/** Records cached at most; the oldest goes first. Bounds memory under a flood of made-up ids. */
const CACHE_ENTRIES = 10_000;
/** The least time between two writes of one token's last use. */
const LAST_USED_INTERVAL_MS = 60_000;
const LABEL_MAX_CHARS = 100;

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;

/**
 * Writes a token's last use only while the token exists. KEYS: tokens hash, last-use hash.
 * ARGV: id, ISO time. Returns 1 if written, 0 if the token is gone.
 */
const TOUCH = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
`;

/** What anyone may see of a token: never its secret nor the secret's hash. Times are ISO 8601. */
export interface TokenInfo {
  id: string;
  user: string;
  /** The label its creator gave it. */
  name?: string;
  createdAt: string;
  expiresAt: string;
  lastUsedAt?: string;
}

export type TokenVerdict = { ok: true; id: string; user: string } | { ok: false; reason: string };

/** The record stored under the token's id. */
interface StoredToken {
  user: string;
  name?: string;
  createdAt: string;
  expiresAt: string;
  /** SHA-256 of the secret, hex. */
  hash: string;
}

interface CacheEntry {
  /** undefined: Redis holds no such id (revoked or never issued). */
  record: StoredToken | undefined;
  /** The record's hash as bytes, decoded once per read rather than on every request. */
  hash?: Buffer | undefined;
  expiresAtMs: number;
  fetchedAtMs: number;
}

/** `30m`, `12h`, `90d` or `2w` in milliseconds. */
export function parseDuration(text: string): number {
  const match = DURATION.exec(text);
  if (!match) {
    throw new RangeError(
      `${JSON.stringify(text.slice(0, 40))} is not a duration: write a number and a unit (m, h, d or w), ` +
        'as in 30m, 12h, 90d or 2w',
    );
  }
  return Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
}

/** Why `label` cannot name a token, or undefined when it can: 1 to 100 printable characters. */
export function tokenLabelProblem(label: string): string | undefined {
  const chars = [...label].length;
  if (chars === 0) return 'a token label must not be empty';
  if (chars > LABEL_MAX_CHARS)
    return `a token label holds at most ${LABEL_MAX_CHARS} characters, not ${chars}`;
  if (/\p{C}/u.test(label)) return 'a token label holds only printable characters (no control characters)';
  return undefined;
}

/** Whether `text` is a token id as `token list` shows it. */
export function isTokenId(text: string): boolean {
  return TOKEN_ID.test(text);
}

/** Node's one-shot hash: on every request's path, it skips building a Hash object. */
function sha256(text: string): Buffer {
  return hash('sha256', text, 'buffer');
}

function toInfo(id: string, record: StoredToken, lastUsedAt: string | undefined): TokenInfo {
  return {
    id,
    user: record.user,
    ...(record.name !== undefined && { name: record.name }),
    createdAt: record.createdAt,
    expiresAt: record.expiresAt,
    ...(lastUsedAt !== undefined && { lastUsedAt }),
  };
}

/** The stored record, or undefined for one that is not a record (a bad record fails only itself). */
function parseRecord(json: string | null | undefined): StoredToken | undefined {
  if (!json) return undefined;
  try {
    const value = JSON.parse(json) as Partial<StoredToken>;
    const fields = [value.user, value.createdAt, value.expiresAt, value.hash];
    return fields.every((f) => typeof f === 'string') ? (value as StoredToken) : undefined;
  } catch {
    return undefined;
  }
}

/** Sets `key` as the newest entry of `map`, dropping the oldest beyond `max`. */
function remember<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value!);
}

/**
 * Issues, lists, revokes and verifies personal access tokens. verify() is on every request's path, so
 * it answers from a bounded in-process cache of records (found or not) for `cacheTtlMs`: a revocation
 * takes effect in other processes within that time. Expiry is checked on every call.
 */
export class TokenStore {
  private readonly usedKey: string;
  private readonly now: () => number;
  private readonly cacheTtlMs: number;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly reading = new Map<string, Promise<CacheEntry>>();
  /** id -> when this process last wrote its last use. */
  private readonly touched = new Map<string, number>();

  /**
   * @param key the Redis hash of the records (id -> JSON); their last uses live in `${key}:used`.
   */
  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    options: { cacheTtlMs: number; now?: () => number },
  ) {
    this.usedKey = `${key}:used`;
    this.cacheTtlMs = options.cacheTtlMs;
    this.now = options.now ?? Date.now;
  }

  /** Whether `text` has the shape of one of these tokens rather than, say, a JWT. */
  static looksLikeToken(text: string): boolean {
    return text.startsWith(TOKEN_PREFIX);
  }

  /** A new token for `user`; its text is returned here and never again. */
  async create(request: {
    user: string;
    name?: string;
    lifetimeMs: number;
  }): Promise<{ token: string; info: TokenInfo }> {
    if (!Number.isSafeInteger(request.lifetimeMs) || request.lifetimeMs <= 0) {
      throw new RangeError(
        `a token lifetime is a positive number of milliseconds, not ${request.lifetimeMs}`,
      );
    }
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = this.now();
    const record: StoredToken = {
      user: request.user,
      ...(request.name !== undefined && { name: request.name }),
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + request.lifetimeMs).toISOString(),
      hash: sha256(secret).toString('hex'),
    };
    // 64 random bits do not collide in practice; HSETNX makes sure that one never replaces a token.
    if ((await this.redis.hsetnx(this.key, id, JSON.stringify(record))) !== 1) {
      throw new Error(`token id ${id} is already taken; create the token again`);
    }
    return { token: `${TOKEN_PREFIX}${id}_${secret}`, info: toInfo(id, record, undefined) };
  }

  /** Every token (of `user` alone, if given), oldest first. */
  async list(user?: string): Promise<TokenInfo[]> {
    const [records, used] = await Promise.all([
      this.redis.hgetall(this.key),
      this.redis.hgetall(this.usedKey),
    ]);
    const infos: TokenInfo[] = [];
    for (const [id, json] of Object.entries(records)) {
      const record = parseRecord(json);
      if (record && (user === undefined || record.user === user)) infos.push(toInfo(id, record, used[id]));
    }
    return infos.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  /** Removes a token; returns what it was, or undefined if there was no such token. */
  async revoke(id: string): Promise<TokenInfo | undefined> {
    const replies = await this.redis
      .multi()
      .hget(this.key, id)
      .hget(this.usedKey, id)
      .hdel(this.key, id)
      .hdel(this.usedKey, id)
      .exec();
    this.cache.delete(id);
    this.touched.delete(id);
    const [record, used] = (replies ?? []).map(([err, value]) => {
      if (err) throw err;
      return value as string | null;
    });
    const parsed = parseRecord(record);
    return parsed && toInfo(id, parsed, used ?? undefined);
  }

  /**
   * Whether `text` is a live token, and whose. The reasons are for the client. Rejects only when
   * Redis cannot be read (the caller answers 503, not 401).
   */
  async verify(text: string): Promise<TokenVerdict> {
    const match = TOKEN.exec(text);
    if (!match) return { ok: false, reason: 'the token is not one this service issued' };
    const [, id, secret] = match as unknown as [string, string, string];
    const { record, hash: stored, expiresAtMs } = await this.lookup(id);
    if (!record || !stored) return { ok: false, reason: 'the token was revoked or never existed' };
    // Checked before expiry, so that only the token's holder learns when it expired.
    if (!timingSafeEqual(sha256(secret), stored)) {
      return { ok: false, reason: 'the token is not one this service issued' };
    }
    const now = this.now();
    if (!(now < expiresAtMs)) return { ok: false, reason: `the token has expired (on ${record.expiresAt})` };
    this.touch(id, now);
    return { ok: true, id, user: record.user };
  }

  /** The record of `id`, from the cache while it is fresh; concurrent misses share one read. */
  private async lookup(id: string): Promise<CacheEntry> {
    const cached = this.cache.get(id);
    if (cached && this.now() - cached.fetchedAtMs < this.cacheTtlMs) return cached;
    let pending = this.reading.get(id);
    if (!pending) {
      pending = this.read(id).finally(() => this.reading.delete(id));
      this.reading.set(id, pending);
    }
    return pending;
  }

  private async read(id: string): Promise<CacheEntry> {
    const record = parseRecord(await this.redis.hget(this.key, id));
    const expiresAtMs = record ? Date.parse(record.expiresAt) : NaN;
    // A record with no 32-byte hash or no expiry time can admit no one: treat it as absent.
    const usable = record && /^[0-9a-f]{64}$/.test(record.hash) && Number.isFinite(expiresAtMs);
    const entry: CacheEntry = {
      record: usable ? record : undefined,
      hash: usable ? Buffer.from(record.hash, 'hex') : undefined,
      expiresAtMs,
      fetchedAtMs: this.now(),
    };
    remember(this.cache, id, entry, CACHE_ENTRIES);
    return entry;
  }

  /**
   * Records the token's use at most once a minute per process, without waiting: the time is for
   * operators (token list), so a failed write costs nothing but that.
   */
  private touch(id: string, now: number): void {
    const last = this.touched.get(id);
    if (last !== undefined && now - last < LAST_USED_INTERVAL_MS) return;
    remember(this.touched, id, now, CACHE_ENTRIES);
    this.redis.eval(TOUCH, 2, this.key, this.usedKey, id, new Date(now).toISOString()).catch(() => {
      // The next use a minute on tries again.
      this.touched.delete(id);
    });
  }
}

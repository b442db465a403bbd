import { Redis } from 'ioredis';
import { isStoreConnectionError, openRedis } from '../../src/store/redis-connection.js';
import { REDIS_URL, testPrefix, unreachableRedis } from '../helpers/redis.js';
import { until } from '../helpers/until.js';

/**
 * Which failures of ioredis the gateway takes for Redis being away (the API answers 503 and the
 * client tries again) and which for Redis refusing the command, each produced for real against the
 * local Redis: a connection killed under auto-pipelined commands, a server nobody listens on, and a
 * command Redis answers with an error.
 */
describe('isStoreConnectionError', () => {
  const prefix = testPrefix('connection-errors');
  let redis: Redis;
  let admin: Redis;

  beforeEach(() => {
    redis = openRedis({ url: REDIS_URL });
    redis.on('error', () => undefined);
    admin = new Redis(REDIS_URL);
  });

  afterEach(async () => {
    await redis.quit().catch(() => redis.disconnect());
    await admin.del(`${prefix}set`, `${prefix}list`, `${prefix}string`);
    await admin.quit();
  });

  it('takes auto-pipelined commands cut off by a closing connection for Redis being away', async () => {
    const id = Number(await redis.client('ID'));
    // Sent in one turn, so in one write: SET is answered at once, BLPOP waits on an empty list.
    const set = redis.set(`${prefix}set`, '1');
    const blocked = redis.blpop(`${prefix}list`, 30).then(
      () => undefined,
      (err: unknown) => err,
    );
    await until('the connection blocking in BLPOP', 10_000, async () =>
      /\bcmd=blpop\b/.test(String(await admin.call('CLIENT', 'LIST', 'ID', String(id)))) ? true : undefined,
    );
    await admin.client('KILL', 'ID', String(id));
    const err = await blocked;
    expect((err as Error).message).toMatch(/aborted due to connection close/);
    expect(isStoreConnectionError(err)).toBe(true);
    // The command answered before the close keeps its answer.
    await expect(set).resolves.toBe('OK');
    // And the connection comes back for the next command.
    await expect(redis.get(`${prefix}set`)).resolves.toBe('1');
  });

  it('takes a server nobody listens on for Redis being away', async () => {
    const dead = await unreachableRedis();
    try {
      const err = await dead.get('anything').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect(isStoreConnectionError(err)).toBe(true);
    } finally {
      dead.disconnect();
    }
  });

  it("takes Redis's own refusal of a command for a refusal, not for Redis being away", async () => {
    await redis.set(`${prefix}string`, 'not a list');
    const err = await redis.lpush(`${prefix}string`, 'x').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).message).toMatch(/WRONGTYPE/);
    expect(isStoreConnectionError(err)).toBe(false);
  });
});

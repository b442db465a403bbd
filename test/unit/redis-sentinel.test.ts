import { loadConfig } from '../../src/config/load-config.js';
import { ConfigError } from '../../src/errors.js';
import { redisOptions } from '../../src/store/redis-connection.js';
import { countHealthyReplicas } from '../../src/store/replica-acks.js';

function problemsOf(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('the configuration was accepted');
}

describe('redis.sentinel', () => {
  it('keeps the local url when neither form is set', () => {
    const c = loadConfig({ env: {} });
    expect(c.redis).toEqual({ url: 'redis://127.0.0.1:6379', prefix: 'tesgw:' });
  });

  it('reads the master name and the sentinels in both address forms', () => {
    const c = loadConfig({
      env: {},
      overrides: {
        redis: {
          sentinel: { name: 'mymaster', sentinels: [{ host: 'a', port: 26380 }, 'b:26381', { host: 'c' }] },
        },
      },
    });
    expect(c.redis.url).toBeUndefined();
    expect(c.redis.sentinel).toEqual({
      name: 'mymaster',
      sentinels: [
        { host: 'a', port: 26380 },
        { host: 'b', port: 26381 },
        { host: 'c', port: 26379 },
      ],
      db: 0,
      tls: false,
      acceptReplicas: 1,
      acceptTimeoutMs: 1000,
    });
  });

  it('takes the sentinels and passwords from the environment', () => {
    const c = loadConfig({
      env: {
        TES_GATEWAY_REDIS_SENTINEL_NAME: 'm',
        TES_GATEWAY_REDIS_SENTINELS: 's1:26379, s2:26379',
        TES_GATEWAY_REDIS_PASSWORD: 'data-secret',
        TES_GATEWAY_REDIS_SENTINEL_PASSWORD: 'sentinel-secret',
      },
    });
    expect(c.redis.sentinel).toMatchObject({
      name: 'm',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26379 },
      ],
      password: 'data-secret',
      sentinelPassword: 'sentinel-secret',
    });
  });

  it('refuses a url beside a sentinel, naming both', () => {
    const problems = problemsOf(() =>
      loadConfig({
        env: { TES_GATEWAY_REDIS_URL: 'redis://r:6379' },
        overrides: { redis: { sentinel: { name: 'm', sentinels: ['s:26379'] } } },
      }),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^redis\.sentinel: redis\.url and redis\.sentinel both/),
    ]);
  });

  it('refuses a sentinel without a name or with a bad address', () => {
    const problems = problemsOf(() =>
      loadConfig({ env: {}, overrides: { redis: { sentinel: { sentinels: ['nocolon', 'h:70000'] } } } }),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^redis\.sentinel\.name: /),
        'redis.sentinel.sentinels.0: must be host:port, or { host, port }',
        expect.stringMatching(/^redis\.sentinel\.sentinels\.1\.port: /),
      ]),
    );
  });

  it('gives ioredis the sentinels, the master name and the passwords', () => {
    const c = loadConfig({
      env: {},
      overrides: {
        redis: { sentinel: { name: 'm', sentinels: ['s:26379'], password: 'p', sentinelPassword: 'sp' } },
      },
    });
    expect(redisOptions(c.redis)).toMatchObject({
      name: 'm',
      sentinels: [{ host: 's', port: 26379 }],
      role: 'master',
      password: 'p',
      sentinelPassword: 'sp',
      failoverDetector: true,
      maxRetriesPerRequest: 1,
    });
    expect(redisOptions(loadConfig({ env: {} }).redis)).not.toHaveProperty('sentinels');
  });
});

describe('countHealthyReplicas', () => {
  it('counts replicas online that acknowledged lately', () => {
    const info = [
      '# Replication',
      'role:master',
      'connected_slaves:4',
      'slave0:ip=10.0.0.2,port=6379,state=online,offset=1234,lag=0',
      'slave1:ip=10.0.0.3,port=6379,state=online,offset=1234,lag=1',
      'slave2:ip=10.0.0.4,port=6379,state=wait_bgsave,offset=0,lag=0',
      'slave3:ip=10.0.0.5,port=6379,state=online,offset=1000,lag=9',
      'master_repl_offset:1234',
    ].join('\r\n');
    expect(countHealthyReplicas(info)).toBe(2);
    expect(countHealthyReplicas('# Replication\r\nrole:master\r\nconnected_slaves:0\r\n')).toBe(0);
  });
});

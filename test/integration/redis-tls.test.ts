import { jest } from '@jest/globals';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { loadConfig } from '../../src/config/load-config.js';
import { openRedis, tlsOptions } from '../../src/store/redis-connection.js';
import { createTask, startTestGateway, waitFor, type TestGateway } from '../helpers/gateway.js';
import { testPrefix } from '../helpers/redis.js';
import { freePort } from '../helpers/free-port.js';
import { until } from '../helpers/until.js';

/**
 * Redis over TLS only, with client certificates required (`tls-auth-clients yes`): one server reached
 * by url, and a master, its replica and three sentinels that all speak TLS alone. A whole gateway
 * (local backend) runs tasks through each, and through a failover behind the sentinels. The
 * certificates are made here with openssl, from a CA of the test's own.
 */
jest.setTimeout(120_000);

const MASTER_NAME = 'tlsmaster';
const children: ChildProcess[] = [];
process.once('exit', () => children.forEach((c) => c.kill('SIGKILL')));
let dir: string;
let pem: { ca: string; cert: string; key: string };
const gateways: TestGateway[] = [];

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A CA, and one certificate it signed for 127.0.0.1, used by servers and the gateway alike. */
function makeCertificates(): void {
  openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=test CA',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
  );
  openssl(
    'req',
    '-new',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    'tls.key',
    '-out',
    'tls.csr',
  );
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(
    'x509',
    '-req',
    '-in',
    'tls.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    'san.ext',
    '-out',
    'tls.pem',
  );
  pem = { ca: join(dir, 'ca.pem'), cert: join(dir, 'tls.pem'), key: join(dir, 'tls.key') };
}

/** The server settings for TLS alone: no plain port, client certificates required, TLS to masters. */
function tlsSettings(port: number): string[] {
  return [
    'port 0',
    `tls-port ${port}`,
    `tls-cert-file ${pem.cert}`,
    `tls-key-file ${pem.key}`,
    `tls-ca-cert-file ${pem.ca}`,
    'tls-auth-clients yes',
    'tls-replication yes',
    'bind 127.0.0.1',
    `dir ${dir}`,
  ];
}

function start(program: string, lines: string[], label: string): void {
  const conf = join(dir, `${label}.conf`);
  writeFileSync(conf, `${lines.join('\n')}\n`);
  const child = spawn(program, [conf], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.on('exit', (code) => {
    if (code !== null && code !== 0) process.stderr.write(`${label} exited ${code}: ${stderr}\n`);
  });
  children.push(child);
}

/** A client of the test's own, over TLS with the same certificate. */
function client(port: number): Redis {
  return new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, tls: tlsOptions(pem) });
}

async function ask<T>(port: number, run: (r: Redis) => Promise<T>): Promise<T> {
  const r = client(port);
  try {
    return await run(r);
  } finally {
    r.disconnect();
  }
}

async function gatewayWith(name: string, redis: Record<string, unknown>): Promise<TestGateway> {
  const gw = await startTestGateway(name, {
    backend: 'local',
    container: { runtime: 'bwrap-host' },
    redis: { prefix: testPrefix(name), ...redis },
  });
  gateways.push(gw);
  return gw;
}

async function runsATask(gw: TestGateway): Promise<void> {
  const id = await createTask(gw.base, {
    executors: [{ image: 'alpine', command: ['sh', '-c', 'echo over tls'] }],
  });
  const task = await waitFor(gw.base, id, undefined, 60_000);
  expect(task.state).toBe('COMPLETE');
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tesgw-redis-tls-'));
  makeCertificates();
});

afterAll(async () => {
  try {
    for (const gw of gateways) {
      await Promise.race([gw.gateway.close(), new Promise((r) => setTimeout(r, 15_000).unref())]);
    }
  } finally {
    for (const child of children) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('Redis over TLS', () => {
  it('runs tasks through a server that speaks only TLS and asks for client certificates', async () => {
    const port = await freePort();
    start('redis-server', [...tlsSettings(port), 'save ""', 'appendonly no'], 'single');
    await until('the TLS server answering', 15_000, async () =>
      (await ask(port, (r) => r.ping())) === 'PONG' ? true : undefined,
    );
    // Without a client certificate the server hangs up: the gateway's files are what let it in.
    const bare = new Redis({
      host: '127.0.0.1',
      port,
      maxRetriesPerRequest: 0,
      tls: tlsOptions({ ca: pem.ca }),
      retryStrategy: () => null,
    });
    bare.on('error', () => undefined);
    await expect(bare.ping()).rejects.toThrow();
    bare.disconnect();

    const gw = await gatewayWith('redis-tls', { url: `redis://127.0.0.1:${port}`, tls: pem });
    await runsATask(gw);
  });

  it('finds the master through sentinels that speak only TLS, across a failover', async () => {
    const [master, replica, ...sentinels] = await Promise.all([1, 2, 3, 4, 5].map(() => freePort()));
    start('redis-server', [...tlsSettings(master!), 'save ""', 'appendonly no'], 'master');
    start(
      'redis-server',
      [...tlsSettings(replica!), 'save ""', 'appendonly no', `replicaof 127.0.0.1 ${master}`],
      'replica',
    );
    for (const port of sentinels) {
      start(
        'redis-sentinel',
        [
          ...tlsSettings(port),
          `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${master} 2`,
          `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
          `sentinel failover-timeout ${MASTER_NAME} 10000`,
        ],
        `sentinel-${port}`,
      );
    }
    await until('the replica syncing over TLS', 20_000, () =>
      ask(replica!, async (r) =>
        (await r.info('replication')).includes('master_link_status:up') ? true : undefined,
      ),
    );
    await until('the sentinels meeting over TLS', 30_000, async () => {
      for (const port of sentinels) {
        const [m] = await ask(port, (s) => s.call('SENTINEL', 'masters') as Promise<string[][]>);
        const field = (name: string): string | undefined => m?.[m.indexOf(name) + 1];
        if (field('num-slaves') !== '1' || field('num-other-sentinels') !== '2') return undefined;
      }
      return true;
    });

    const gw = await gatewayWith('redis-tls-sentinel', {
      sentinel: {
        name: MASTER_NAME,
        sentinels: sentinels.map((port) => ({ host: '127.0.0.1', port })),
        tls: true,
      },
      tls: pem,
    });
    await runsATask(gw);

    await ask(sentinels[0]!, (s) => s.call('SENTINEL', 'FAILOVER', MASTER_NAME));
    await until('the sentinels naming the replica', 30_000, async () => {
      for (const port of sentinels) {
        const addr = await ask(
          port,
          (s) => s.call('SENTINEL', 'get-master-addr-by-name', MASTER_NAME) as Promise<string[]>,
        );
        if (addr[1] !== String(replica)) return undefined;
      }
      return true;
    });
    // Creations wait for a replica in sync: the old master, once it has joined the new one.
    await until('the old master syncing with the new one', 30_000, () =>
      ask(master!, async (r) =>
        (await r.info('replication')).includes('master_link_status:up') ? true : undefined,
      ),
    );
    await until('a creation accepted after the failover', 30_000, async () => {
      await runsATask(gw);
      return true;
    });
    // The gateway's connection is to the new master now.
    const role = await ask(replica!, (r) => r.call('ROLE') as Promise<unknown[]>);
    expect(role[0]).toBe('master');
  });

  it('names a TLS file it cannot read, and refuses half a client certificate or TLS to sentinels alone', () => {
    expect(() => openRedis({ url: 'redis://127.0.0.1:1', tls: { ca: join(dir, 'missing.pem') } })).toThrow(
      `redis.tls.ca: cannot read ${join(dir, 'missing.pem')}`,
    );
    expect(() => loadConfig({ env: {}, overrides: { redis: { tls: { cert: pem.cert } } } })).toThrow(
      /redis\.tls\.key.*a client certificate needs both cert and key/s,
    );
    expect(() =>
      loadConfig({
        env: {},
        overrides: { redis: { sentinel: { name: 'm', sentinels: ['127.0.0.1:26379'], tls: true } } },
      }),
    ).toThrow(/redis\.sentinel\.tls.*needs redis\.tls/s);
  });
});

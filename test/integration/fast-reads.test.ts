import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTask, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { connect, dropPrefix, testPrefix, unreachableRedis } from '../helpers/redis.js';
import { loadSpec } from '../helpers/request-fuzzer.js';
import { schemaValidator } from '../helpers/spec-validator.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';
import { specPath } from '../../src/app.js';
import { fastTaskReads, type FastPath } from '../../src/api/fast-reads.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { createLogger } from '../../src/logger.js';
import { TokenStore } from '../../src/identity/tokens.js';
import { OWNER_TAG } from '../../src/tes/types.js';
import { requestIdentifier } from '../../src/api/authenticate.js';
import { createAudit } from '../../src/api/audit.js';
import { policyFor } from '../../src/identity/policy.js';
import { loadConfig } from '../../src/config/load-config.js';

/**
 * GET /tasks/{id} before Express (src/api/fast-reads.ts): the answer is the app's byte for byte and
 * the spec's, and everything the fast path does not fully understand reaches the app untouched.
 */

const spec = loadSpec(specPath());
const API_ONLY = { roles: { api: true, worker: false } };
const SCHEMA = { MINIMAL: 'tesTaskMinimal', BASIC: 'tesTaskBasic', FULL: 'tesTaskFull' } as const;
const TASK = {
  name: 'fast read',
  tags: { run: 'r1' },
  inputs: [{ path: '/data/in.txt', content: 'hello' }],
  executors: [{ image: 'alpine', command: ['echo', 'hello'], env: { A: '1' } }],
};

describe('a GET of one task through the real gateway', () => {
  let gw: TestGateway;
  let id: string;
  beforeAll(async () => {
    gw = await startTestGateway('fast-reads', {}, API_ONLY);
    id = await createTask(gw.base, TASK);
  });
  afterAll(async () => {
    await gw.close();
  });

  it.each([
    ['/ga4gh/tes/v1', ''],
    ['/ga4gh/tes/v1', '?view=MINIMAL'],
    ['/ga4gh/tes/v1', '?view=BASIC'],
    ['/ga4gh/tes/v1', '?view=FULL'],
    ['/v1', '?view=FULL'],
  ])('answers %s/tasks/{id}%s as the app does, and as the spec says', async (base, query) => {
    const fast = await fetch(`${gw.url}${base}/tasks/${id}${query}`, {
      headers: { 'x-request-id': 'poll-1' },
    });
    // An unknown parameter is ignored by the app, and sends the request its whole way.
    const viaApp = await fetch(`${gw.url}${base}/tasks/${id}${query ? `${query}&` : '?'}client=x`, {
      headers: { 'x-request-id': 'poll-1' },
    });
    expect(fast.status).toBe(200);
    expect(viaApp.status).toBe(200);
    const text = await fast.text();
    expect(text).toBe(await viaApp.text());
    for (const header of ['content-type', 'content-length', 'cache-control', 'x-request-id']) {
      expect([header, fast.headers.get(header)]).toEqual([header, viaApp.headers.get(header)]);
    }
    expect(fast.headers.get('x-request-id')).toBe('poll-1');
    const view = (/view=(\w+)/.exec(query)?.[1] ?? 'MINIMAL') as keyof typeof SCHEMA;
    const validate = schemaValidator(spec, SCHEMA[view]);
    expect([validate(JSON.parse(text)), validate.errors]).toEqual([true, null]);
  });

  it('counts its answers in the HTTP metrics under the route template', async () => {
    const count = async (): Promise<number> => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      const m = parsePrometheusText(text);
      return (
        sampleValue(m, 'tes_gateway_http_request_duration_seconds_count', {
          route: '/ga4gh/tes/v1/tasks/{id}',
          method: 'GET',
          status: '200',
        }) ?? 0
      );
    };
    const before = await count();
    for (let i = 0; i < 3; i++) expect((await fetch(`${gw.base}/tasks/${id}`)).status).toBe(200);
    expect((await count()) - before).toBe(3);
  });

  it('leaves a missing task, a bad id and a bad view to the app, which refuses them as always', async () => {
    const other = id.slice(0, -1) + (id.endsWith('0') ? '1' : '0');
    const missing = await fetch(`${gw.base}/tasks/${other}`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ message: `task ${other} does not exist` });
    expect((await fetch(`${gw.base}/tasks/${id}?view=ALL`)).status).toBe(400);
    expect((await fetch(`${gw.base}/tasks/${id}?view=FULL&view=BASIC`)).status).toBe(400);
  });
});

describe('a GET of one task with token authentication on', () => {
  let gw: TestGateway;
  const tokens: Record<string, string> = {};
  let id: string;
  const as = (user: string) => ({ authorization: `Bearer ${tokens[user]}` });
  beforeAll(async () => {
    gw = await startTestGateway('fast-reads-auth', { auth: { mode: 'tokens' } }, API_ONLY);
    const store = new TokenStore(gw.gateway.store.redis, gw.gateway.store.keys.tokens, { cacheTtlMs: 0 });
    for (const user of ['alice', 'bob']) {
      tokens[user] = (await store.create({ user, lifetimeMs: 3_600_000 })).token;
    }
    const res = await fetch(`${gw.base}/tasks`, {
      method: 'POST',
      headers: { ...as('alice'), 'content-type': 'application/json' },
      body: JSON.stringify(TASK),
    });
    id = ((await res.json()) as { id: string }).id;
  });
  afterAll(async () => {
    await gw.close();
  });

  it("answers the owner as the app does, with the owner's tag", async () => {
    for (const query of ['', '?view=FULL']) {
      const fast = await fetch(`${gw.base}/tasks/${id}${query}`, { headers: as('alice') });
      const viaApp = await fetch(`${gw.base}/tasks/${id}${query ? `${query}&` : '?'}client=x`, {
        headers: as('alice'),
      });
      expect(fast.status).toBe(200);
      const text = await fast.text();
      expect(text).toBe(await viaApp.text());
      if (query) expect(JSON.parse(text)).toMatchObject({ tags: { [OWNER_TAG]: 'alice' } });
    }
  });

  it('leaves another user, no credentials and a bad token to the app, which refuses them', async () => {
    const other = await fetch(`${gw.base}/tasks/${id}`, { headers: as('bob') });
    expect(other.status).toBe(404);
    const none = await fetch(`${gw.base}/tasks/${id}`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Basic realm=.*Bearer realm=/);
    const bad = await fetch(`${gw.base}/tasks/${id}`, {
      headers: { authorization: 'Bearer tesgw_nonsense' },
    });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toContain('error="invalid_token"');
  });
});

describe('what the fast path takes, and what it hands to the app', () => {
  const prefix = testPrefix('fast-path');
  const redis = connect();
  const store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000 });
  let id: string;
  let server: Server;
  let url: string;
  /** Requests the stand-in app received: each one the fast path declined. */
  let toApp: string[];
  let fast: FastPath;
  const silent = createLogger('silent');

  beforeAll(async () => {
    id = (await store.create({ executors: [{ image: 'alpine', command: ['true'] }] }, {})).id;
    fast = fastTaskReads({ store, logger: silent });
    server = createServer((req, res) =>
      fast(req, res, () => {
        toApp.push(`${req.method} ${req.url}`);
        res.writeHead(418).end();
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  beforeEach(() => {
    toApp = [];
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await dropPrefix(redis, prefix);
    redis.disconnect();
  });

  it('takes GET of an existing task with no query or one view, on both base paths', async () => {
    for (const path of [
      `/ga4gh/tes/v1/tasks/${id}`,
      `/ga4gh/tes/v1/tasks/${id}?view=BASIC`,
      `/v1/tasks/${id}?view=MINIMAL`,
    ]) {
      expect([path, (await fetch(`${url}${path}`)).status]).toEqual([path, 200]);
    }
    expect(toApp).toEqual([]);
  });

  it('hands over every other request untouched', async () => {
    const other = id.slice(0, -1) + (id.endsWith('0') ? '1' : '0');
    const declined = [
      ['HEAD', `/ga4gh/tes/v1/tasks/${id}`],
      ['POST', `/ga4gh/tes/v1/tasks/${id}`],
      ['GET', `/ga4gh/tes/v1/tasks/${other}`],
      ['GET', `/ga4gh/tes/v1/tasks/${id.toUpperCase()}`],
      ['GET', `/ga4gh/tes/v1/tasks/${id}?view=ALL`],
      ['GET', `/ga4gh/tes/v1/tasks/${id}?view=FULL&x=1`],
      ['GET', `/ga4gh/tes/v1/tasks/${id}/`],
      ['GET', `/ga4gh/tes/v1//tasks/${id}`],
      ['GET', `/ga4gh/tes/v2/tasks/${id}`],
      ['GET', `/ga4gh/tes/v1/tasks/${id}%00`],
    ];
    for (const [method, path] of declined) {
      expect([method, path, (await fetch(`${url}${path}`, { method })).status]).toEqual([method, path, 418]);
    }
    expect(toApp).toEqual(declined.map(([method, path]) => `${method} ${path}`));
  });

  it("takes an owner's read with auth on, and hands over anyone else's", async () => {
    const tokens = new TokenStore(redis, `${prefix}tokens`, { cacheTtlMs: 0 });
    const alice = (await tokens.create({ user: 'alice', lifetimeMs: 3_600_000 })).token;
    const bob = (await tokens.create({ user: 'bob', lifetimeMs: 3_600_000 })).token;
    const owned = (
      await store.create(
        { executors: [{ image: 'alpine', command: ['true'] }] },
        { owner: { user: 'alice', groups: [] } },
      )
    ).id;
    const config = loadConfig({ env: {}, overrides: { auth: { mode: 'tokens' } } });
    fast = fastTaskReads({
      store,
      logger: silent,
      identify: requestIdentifier({
        realm: 'test',
        apiKeyParamName: 'apikey',
        tokens,
        policy: policyFor(config),
        denyUsers: [],
        audit: createAudit(silent),
        publicPaths: [],
      }),
    });
    try {
      const get = async (token?: string) =>
        (
          await fetch(`${url}/ga4gh/tes/v1/tasks/${owned}`, {
            headers: token ? { authorization: `Bearer ${token}` } : {},
          })
        ).status;
      expect(await get(alice)).toBe(200);
      expect(await get(bob)).toBe(418);
      expect(await get()).toBe(418);
      expect(await get('tesgw_nonsense')).toBe(418);
    } finally {
      fast = fastTaskReads({ store, logger: silent });
    }
    expect(toApp).toHaveLength(3);
  });

  it('hands the request to the app when Redis fails, and with debug logging on', async () => {
    const dead = await unreachableRedis();
    const deadStore = new RedisTaskStore(dead, { prefix, maxBacklog: 10 });
    fast = fastTaskReads({ store: deadStore, logger: silent });
    try {
      expect((await fetch(`${url}/ga4gh/tes/v1/tasks/${id}`)).status).toBe(418);
      fast = fastTaskReads({ store, logger: createLogger('debug') });
      expect((await fetch(`${url}/ga4gh/tes/v1/tasks/${id}`)).status).toBe(418);
    } finally {
      dead.disconnect();
      fast = fastTaskReads({ store, logger: silent });
    }
    expect(toApp).toHaveLength(2);
  });
});

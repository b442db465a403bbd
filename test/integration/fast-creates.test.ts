import { Agent, createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { pino } from 'pino';
import express from 'express';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTestApi } from '../helpers/api.js';
import { connect, dropPrefix, testPrefix, unreachableRedis } from '../helpers/redis.js';
import { loadSpec, mutatedTaskText, Rng, TaskGenerator } from '../helpers/request-fuzzer.js';
import { parsePrometheusText, sampleValue } from '../helpers/prometheus-text.js';
import { specPath } from '../../src/app.js';
import { answerFailedBeforeApp, fastTaskCreates } from '../../src/api/fast-creates.js';
import { compileTaskBodyCheck } from '../../src/api/task-body-check.js';
import { taskCreation } from '../../src/api/handlers/tasks.js';
import type { FastPath } from '../../src/api/fast-reads.js';
import { createAudit } from '../../src/api/audit.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { TaskQueues } from '../../src/queue/producer.js';
import { TokenStore } from '../../src/identity/tokens.js';
import { policyFor } from '../../src/identity/policy.js';
import { taskRulesFor } from '../../src/tes/validate-task.js';
import { loadConfig } from '../../src/config/load-config.js';
import { createLogger } from '../../src/logger.js';
import { OWNER_TAG } from '../../src/tes/types.js';
import type { Identity } from '../../src/identity/identity.js';

/**
 * POST /tasks before Express (src/api/fast-creates.ts): it answers only what the app would accept,
 * as the app would; everything else reaches the app with its body intact, and is answered by it.
 */

const spec = loadSpec(specPath());
const API_ONLY = { roles: { api: true, worker: false } };
const TASK = {
  name: 'fast create',
  tags: { run: 'r1' },
  inputs: [{ path: '/data/in.txt', content: 'hello' }],
  executors: [{ image: 'alpine', command: ['echo', 'hello'], env: { A: '1' } }],
};

interface Answer {
  status: number;
  headers: Record<string, string>;
  text: string;
}

/** One request, its body sent exactly as given (bytes or text), over a fresh connection unless `agent`. */
function send(
  url: string,
  body: string | Buffer,
  headers: Record<string, string> = { 'content-type': 'application/json' },
  agent?: Agent,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers, agent: agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers as Record<string, string>,
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A stored task as GET FULL shows it, without what differs between two creations of the same body. */
async function storedAs(base: string, id: string): Promise<unknown> {
  const task = (await (await fetch(`${base}/tasks/${id}?view=FULL`)).json()) as Record<string, unknown>;
  delete task.id;
  delete task.creation_time;
  return task;
}

describe('POST /tasks through the real gateway, fast and through the app', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(
      'fast-creates',
      { storage: { allowedRoots: [{ path: '/shared', writable: true }] } },
      API_ONLY,
    );
  });
  afterAll(async () => {
    await gw.close();
  });

  it('answers a task as the app does, with the same headers, and stores the same task', async () => {
    const body = JSON.stringify(TASK);
    const headers = { 'content-type': 'application/json', 'x-request-id': 'create-1' };
    const fast = await send(`${gw.base}/tasks`, body, headers);
    // An unknown query parameter is ignored by the app, and sends the request its whole way.
    const viaApp = await send(`${gw.base}/tasks?client=x`, body, headers);
    expect([fast.status, viaApp.status]).toEqual([200, 200]);
    for (const header of ['content-type', 'content-length', 'x-request-id', 'cache-control', 'connection']) {
      expect([header, fast.headers[header]]).toEqual([header, viaApp.headers[header]]);
    }
    expect(fast.headers['x-request-id']).toBe('create-1');
    const fastId = (JSON.parse(fast.text) as { id: string }).id;
    const appId = (JSON.parse(viaApp.text) as { id: string }).id;
    expect(Object.keys(JSON.parse(fast.text) as object)).toEqual(['id']);
    expect(await storedAs(gw.base, fastId)).toEqual(await storedAs(gw.base, appId));
  });

  it("gives the fuzzer's bodies the app's answers, and stores what both accept alike", async () => {
    const generator = new TaskGenerator(spec);
    const seed = 20261202;
    let created = 0;
    for (let i = 0; i < 300; i++) {
      const rng = Rng.forRequest(seed, i);
      const body = i % 3 === 0 ? JSON.stringify(generator.task(rng)) : mutatedTaskText(rng, generator);
      const fast = await send(`${gw.base}/tasks`, body);
      const viaApp = await send(`${gw.base}/tasks?client=x`, body);
      const what = `body ${i} of seed ${seed}: ${body.slice(0, 300)}`;
      expect([what, fast.status]).toEqual([what, viaApp.status]);
      if (fast.status !== 200) {
        expect([what, fast.text]).toEqual([what, viaApp.text]);
        continue;
      }
      created++;
      const [a, b] = [fast, viaApp].map((r) => (JSON.parse(r.text) as { id: string }).id);
      expect([what, await storedAs(gw.base, a!)]).toEqual([what, await storedAs(gw.base, b!)]);
    }
    // Both kinds were there: the comparison judged acceptances as well as refusals.
    expect(created).toBeGreaterThan(50);
    expect(created).toBeLessThan(250);
  });

  it('answers what it does not take as the app does, whichever check refuses', async () => {
    const bodies: Array<[string, string | Buffer, Record<string, string>?]> = [
      ['not JSON', '{"executors": ['],
      ['nested too deep', `${'['.repeat(100)}${']'.repeat(100)}`],
      ['off the schema', JSON.stringify({ executors: [{ image: 7, command: ['true'] }] })],
      ['against the rules', JSON.stringify({ ...TASK, inputs: [{ path: '/data/../x', content: 'x' }] })],
      ['no executors', '{}'],
      ['a JSON string', '"task"'],
      ['empty', ''],
      [
        'latin1',
        Buffer.from(JSON.stringify(TASK), 'latin1'),
        { 'content-type': 'application/json; charset=latin1' },
      ],
      [
        'gzip',
        gzipSync(JSON.stringify(TASK)),
        { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      ],
      ['text/plain', JSON.stringify(TASK), { 'content-type': 'text/plain' }],
    ];
    for (const [what, body, headers] of bodies) {
      const fast = await send(`${gw.base}/tasks`, body, headers);
      const viaApp = await send(`${gw.base}/tasks?client=x`, body, headers);
      expect([what, fast.status]).toEqual([what, viaApp.status]);
      if (fast.status !== 200) expect([what, fast.text]).toEqual([what, viaApp.text]);
    }
  });

  it('keeps the connection for the next request', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    let sockets = 0;
    const created = agent.createConnection.bind(agent);
    agent.createConnection = (...args: Parameters<typeof created>) => {
      sockets++;
      return created(...args);
    };
    try {
      const body = JSON.stringify(TASK);
      const answers = await Promise.all(
        Array.from({ length: 40 }, () =>
          send(`${gw.base}/tasks`, body, { 'content-type': 'application/json' }, agent),
        ),
      );
      expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
      expect(new Set(answers.map((a) => a.text)).size).toBe(40);
      expect(sockets).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  it('counts its answers in the HTTP metrics under the route template', async () => {
    const count = async (): Promise<number> => {
      const m = parsePrometheusText(await (await fetch(`${gw.url}/metrics`)).text());
      return (
        sampleValue(m, 'tes_gateway_http_request_duration_seconds_count', {
          route: '/ga4gh/tes/v1/tasks',
          method: 'POST',
          status: '200',
        }) ?? 0
      );
    };
    const before = await count();
    for (let i = 0; i < 3; i++)
      expect((await send(`${gw.base}/tasks`, JSON.stringify(TASK))).status).toBe(200);
    expect((await count()) - before).toBe(3);
  });
});

describe('POST /tasks with token authentication on', () => {
  let gw: TestGateway;
  const tokens: Record<string, string> = {};
  beforeAll(async () => {
    gw = await startTestGateway('fast-creates-auth', { auth: { mode: 'tokens' } }, API_ONLY);
    const store = new TokenStore(gw.gateway.store.redis, gw.gateway.store.keys.tokens, { cacheTtlMs: 0 });
    tokens.alice = (await store.create({ user: 'alice', lifetimeMs: 3_600_000 })).token;
  });
  afterAll(async () => {
    await gw.close();
  });

  it("creates the caller's task, and leaves a request without credentials to the app", async () => {
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${tokens.alice}` };
    const made = await send(`${gw.base}/tasks`, JSON.stringify(TASK), headers);
    expect(made.status).toBe(200);
    const id = (JSON.parse(made.text) as { id: string }).id;
    const task = (await (
      await fetch(`${gw.base}/tasks/${id}?view=BASIC`, { headers: { authorization: headers.authorization } })
    ).json()) as { tags: Record<string, string> };
    expect(task.tags[OWNER_TAG]).toBe('alice');
    const none = await send(`${gw.base}/tasks`, JSON.stringify(TASK));
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toMatch(/Bearer realm=/);
  });
});

describe('the audit line of a creation', () => {
  it('is the same whether the fast path or the app created the task', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    const api = await startTestApi(
      'fast-creates-audit',
      { auth: { mode: 'tokens' } },
      { logger: pino({ level: 'info' }, sink), fastPaths: true },
    );
    try {
      const tokens = new TokenStore(api.redis, api.store.keys.tokens, { cacheTtlMs: 0 });
      const token = (await tokens.create({ user: 'alice', lifetimeMs: 3_600_000 })).token;
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
      const ids: string[] = [];
      for (const path of ['/tasks', '/tasks?client=x']) {
        const made = await send(`${api.base}${path}`, JSON.stringify(TASK), {
          ...headers,
          'x-request-id': 'r',
        });
        expect(made.status).toBe(200);
        ids.push((JSON.parse(made.text) as { id: string }).id);
      }
      const audit = lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.audit === true && l.event === 'task created');
      expect(audit.map((l) => l.taskId)).toEqual(ids);
      const [fast, viaApp] = audit.map(({ time: _t, taskId: _id, ...rest }) => rest);
      expect(fast).toEqual(viaApp);
      expect(fast).toMatchObject({ user: 'alice', client: '127.0.0.1', reqId: 'r', method: 'POST' });
    } finally {
      await api.close();
    }
  });
});

describe('a full backlog, met by the fast path', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway('fast-creates-full', { server: { maxBacklog: 2 } }, API_ONLY);
  });
  afterAll(async () => {
    await gw.close();
  });

  it("is answered by the app's error handler, as the app answers it", async () => {
    const body = JSON.stringify(TASK);
    for (let i = 0; i < 2; i++) expect((await send(`${gw.base}/tasks`, body)).status).toBe(200);
    const fast = await send(`${gw.base}/tasks`, body);
    const viaApp = await send(`${gw.base}/tasks?client=x`, body);
    expect(fast.status).toBe(429);
    expect([fast.text, fast.headers['retry-after']]).toEqual([viaApp.text, viaApp.headers['retry-after']]);
  });
});

describe('what the fast path takes, and what it hands to the app', () => {
  const prefix = testPrefix('fast-create-path');
  const redis = connect();
  const silent = createLogger('silent');
  const config = loadConfig({ env: {}, overrides: {} });
  const store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000 });
  const queues = new TaskQueues(redis, `${prefix}bull`, { submitAttempts: 1, submitBackoffMs: 1000 });
  const specCheck = compileTaskBodyCheck(specPath());
  const creationWith = (taskStore: RedisTaskStore) =>
    taskCreation({
      store: taskStore,
      queues,
      rules: taskRulesFor(config, []),
      policy: policyFor(config),
      audit: createAudit(silent),
    });
  const fastWith = (
    taskStore: RedisTaskStore,
    logger = silent,
    identify?: Parameters<typeof fastTaskCreates>[0]['identify'],
  ): FastPath =>
    fastTaskCreates({
      creation: creationWith(taskStore),
      specCheck,
      bodyLimitBytes: 1024 * 1024,
      logger,
      identify,
    });
  let fast = fastWith(store);
  let server: Server;
  let url: string;
  /** What the stand-in app received: each request the fast path declined, with the body it read. */
  let toApp: string[];
  /** Errors the fast path handed to the app to answer. */
  let failures: string[];

  beforeAll(async () => {
    const app = express();
    app.use(answerFailedBeforeApp);
    app.use(express.raw({ type: () => true, limit: '2mb' }));
    app.use((req, res) => {
      const body = Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '';
      toApp.push(`${req.method} ${req.url} ${body}`);
      res.status(418).end();
    });
    app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      failures.push(err.message);
      res.status(503).end();
    });
    server = createServer((req, res) => fast(req, res, () => void app(req, res)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  beforeEach(() => {
    toApp = [];
    failures = [];
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await queues.close();
    await dropPrefix(redis, prefix);
    redis.disconnect();
  });

  it('takes a task on both base paths, stores it and queues its submission', async () => {
    for (const [path, type] of [
      ['/ga4gh/tes/v1/tasks', 'application/json'],
      ['/v1/tasks', 'application/json; charset=utf-8'],
      ['/ga4gh/tes/v1/tasks', 'Application/JSON; charset="UTF-8"'],
    ] as const) {
      const answer = await send(`${url}${path}`, JSON.stringify(TASK), { 'content-type': type });
      expect([path, type, answer.status]).toEqual([path, type, 200]);
      const id = (JSON.parse(answer.text) as { id: string }).id;
      expect((await store.get(id))?.request.executors).toEqual(TASK.executors);
      expect(await queues.queue('submit').getJob(`submit-${id}`)).toBeDefined();
    }
    expect(toApp).toEqual([]);
  });

  it('hands over, with its body as sent, every request it does not take', async () => {
    const task = JSON.stringify(TASK);
    const json = { 'content-type': 'application/json' };
    const declined: Array<[string, string, Record<string, string>]> = [
      ['/ga4gh/tes/v1/tasks?x=1', task, json],
      ['/ga4gh/tes/v1/tasks/', task, json],
      ['/ga4gh/tes/v1//tasks', task, json],
      ['/ga4gh/tes/v2/tasks', task, json],
      ['/ga4gh/tes/v1/tasks', task, { 'content-type': 'text/plain' }],
      ['/ga4gh/tes/v1/tasks', task, { 'content-type': 'application/vnd.tes+json' }],
      ['/ga4gh/tes/v1/tasks', task, { 'content-type': 'application/json; charset=latin1' }],
      ['/ga4gh/tes/v1/tasks', task, { ...json, expect: '100-continue' }],
      ['/ga4gh/tes/v1/tasks', task, { ...json, 'transfer-encoding': 'chunked' }],
      ['/ga4gh/tes/v1/tasks', 'x'.repeat(1024 * 1024 + 1), json],
      // Read, then judged: the bytes go back into the stream for the app.
      ['/ga4gh/tes/v1/tasks', '{"executors": [', json],
      ['/ga4gh/tes/v1/tasks', `${'['.repeat(100)}${']'.repeat(100)}`, json],
      ['/ga4gh/tes/v1/tasks', JSON.stringify({ executors: [{ image: 7, command: ['true'] }] }), json],
      ['/ga4gh/tes/v1/tasks', JSON.stringify({ ...TASK, resources: { cpu_cores: 2 ** 40 } }), json],
      ['/ga4gh/tes/v1/tasks', JSON.stringify({ ...TASK, inputs: [{ path: '../x', content: 'x' }] }), json],
      ['/ga4gh/tes/v1/tasks', JSON.stringify({ ...TASK, é: 'ü'.repeat(70_000) }).slice(0, -1), json],
    ];
    for (const [path, body, headers] of declined) {
      const answer = await send(`${url}${path}`, body, headers);
      expect([path, body.slice(0, 40), answer.status]).toEqual([path, body.slice(0, 40), 418]);
    }
    expect(toApp).toEqual(declined.map(([path, body]) => `POST ${path} ${body}`));
  });

  it('hands over a body that arrived whole while the credentials were checked, with its bytes', async () => {
    // The credentials' check takes a while: the body and its end are in the stream before it is read.
    const identity: Identity = {
      user: 'alice',
      groups: [],
      admin: false,
      via: { kind: 'token', tokenId: 't' },
    };
    fast = fastWith(store, silent, async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      return { identity };
    });
    const refused = JSON.stringify({ ...TASK, inputs: [{ path: '../x', content: 'x' }] });
    try {
      expect((await send(`${url}/ga4gh/tes/v1/tasks`, refused)).status).toBe(418);
      const made = await send(`${url}/ga4gh/tes/v1/tasks`, JSON.stringify(TASK));
      expect(made.status).toBe(200);
      const id = (JSON.parse(made.text) as { id: string }).id;
      expect((await store.get(id))?.owner?.user).toBe('alice');
    } finally {
      fast = fastWith(store);
    }
    expect(toApp).toEqual([`POST /ga4gh/tes/v1/tasks ${refused}`]);
  });

  it('hands over everything with debug logging on', async () => {
    fast = fastWith(store, createLogger('debug'));
    try {
      expect((await send(`${url}/ga4gh/tes/v1/tasks`, JSON.stringify(TASK))).status).toBe(418);
    } finally {
      fast = fastWith(store);
    }
  });

  it('hands a failure to store the task to the app to answer, with nothing to read again', async () => {
    const dead = await unreachableRedis();
    fast = fastWith(new RedisTaskStore(dead, { prefix, maxBacklog: 10 }));
    try {
      expect((await send(`${url}/ga4gh/tes/v1/tasks`, JSON.stringify(TASK))).status).toBe(503);
    } finally {
      dead.disconnect();
      fast = fastWith(store);
    }
    expect(failures).toHaveLength(1);
    expect(toApp).toEqual([]);
  });
});

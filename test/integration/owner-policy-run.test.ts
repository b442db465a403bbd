import { jest } from '@jest/globals';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestGateway, waitFor, type TestGateway } from '../helpers/gateway.js';
import { TokenStore } from '../../src/identity/tokens.js';
import type { LaunchRequest } from '../../src/compute/driver.js';

/**
 * A whole gateway (API, workers, local backend with real sandboxed executors) with token auth and a
 * per-user policy: the worker stages and delivers with the owner's roots, and the job carries the
 * owner's default account. The local launcher runs no sbatch: what it is handed (each task's sbatch
 * arguments among it) is watched on its way in.
 */
jest.setTimeout(60_000);

let gw: TestGateway;
let data: string;
const tokens: Record<string, string> = {};
const launched = new Map<string, LaunchRequest>();

beforeAll(async () => {
  data = mkdtempSync('/var/tmp/tesgw-owner-data-');
  for (const user of ['alice', 'bob']) mkdirSync(join(data, 'home', user), { recursive: true });
  gw = await startTestGateway('owner-run', {
    backend: 'local',
    container: { runtime: 'bwrap-host' },
    auth: { mode: 'tokens' },
    identity: {
      policy: {
        everyone: { roots: [{ path: join(data, 'home', '{user}'), writable: false }] },
        users: { alice: { defaultAccount: 'lab-a' } },
      },
    },
  });
  const driver = gw.gateway.driver;
  const submit = driver.submit.bind(driver);
  driver.submit = (request) => {
    launched.set(request.taskId, request);
    return submit(request);
  };
  const store = new TokenStore(gw.gateway.store.redis, gw.gateway.store.keys.tokens, { cacheTtlMs: 0 });
  for (const user of ['alice', 'bob'])
    tokens[user] = (await store.create({ user, lifetimeMs: 3_600_000 })).token;
});
afterAll(async () => {
  await gw.close();
});

async function create(user: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${gw.base}/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens[user]}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

it("runs a task with its owner's roots and default account, end to end", async () => {
  const out = join(data, 'home', 'alice', 'result.txt');
  const made = await create('alice', {
    outputs: [{ path: '/out/result.txt', url: `file://${out}` }],
    executors: [{ image: 'alpine', command: ['sh', '-c', 'echo mine > /out/result.txt'] }],
  });
  expect(made.status).toBe(200);
  const task = await waitFor(gw.base, made.body.id, undefined, 30_000, {
    authorization: `Bearer ${tokens.alice}`,
  });
  expect(task.state).toBe('COMPLETE');
  expect(readFileSync(out, 'utf8')).toBe('mine\n');
  expect(launched.get(made.body.id)?.args).toContain('--account=lab-a');
});

it("refuses at creation an output into another user's root", async () => {
  const made = await create('bob', {
    outputs: [{ path: '/out/x', url: `file://${join(data, 'home', 'alice', 'from-bob.txt')}` }],
    executors: [{ image: 'alpine', command: ['sh', '-c', 'echo x > /out/x'] }],
  });
  expect(made.status).toBe(400);
  expect(made.body.errors[0]).toMatchObject({ path: 'outputs[0].url' });
});

it("judges a task's files by its owner's roots again at run time (a task stored before a policy change)", async () => {
  const target = join(data, 'home', 'alice', 'from-bob.txt');
  const record = await gw.gateway.store.create(
    {
      inputs: [{ path: '/in/x', url: `file://${join(data, 'home', 'alice', 'result.txt')}` }],
      outputs: [{ path: '/out/x', url: `file://${target}` }],
      executors: [{ image: 'alpine', command: ['sh', '-c', 'echo x > /out/x'] }],
    },
    { owner: { user: 'bob' } },
  );
  await gw.gateway.queues.enqueue('submit', { taskId: record.id });
  const task = await waitFor(gw.base, record.id, undefined, 30_000, {
    authorization: `Bearer ${tokens.bob}`,
  });
  expect(task.state).toBe('SYSTEM_ERROR');
  expect(task.logs[0].system_logs.join('\n')).toMatch(/inputs\[0\].*outside the allowed roots/);
  expect(existsSync(target)).toBe(false);
});

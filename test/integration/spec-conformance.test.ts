import { jest } from '@jest/globals';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { parse as parseYaml } from 'yaml';
import { createApp, specPath } from '../../src/app.js';
import { createLogger } from '../../src/logger.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { getJson, postJson, SIMPLE_TASK, startTestApi, type TestApi } from '../helpers/api.js';

/** Each test pins one row of spec/PATCHES.md: the titles are the ones that file names. */

let api: TestApi;
const spec = parseYaml(readFileSync(specPath(), 'utf8'));

beforeAll(async () => {
  api = await startTestApi('spec');
});
afterAll(async () => {
  await api.close();
});

async function create(body: unknown = SIMPLE_TASK): Promise<string> {
  const res = await postJson(`${api.base}/tasks`, body);
  expect(res.status).toBe(200);
  return res.body.id;
}

/** A task whose logs carry everything a view may hide. */
async function taskWithLogs(): Promise<string> {
  const id = await create({
    inputs: [{ path: '/in/a.txt', content: 'content here' }],
    executors: [{ image: 'alpine', command: ['cat', '/in/a.txt'] }],
  });
  await api.store.transition(id, 'COMPLETE', {
    logs: [
      {
        logs: [{ exit_code: 0, stdout: 'out', stderr: 'err', start_time: '2026-01-01T00:00:00Z' }],
        outputs: [],
        system_logs: ['a note'],
        start_time: '2026-01-01T00:00:00Z',
      },
    ],
  });
  return id;
}

function refs(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) node.forEach((n) => refs(n, out));
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else refs(v, out);
    }
  }
  return out;
}

const props = (schema: string): string[] => Object.keys(spec.components.schemas[schema].properties);

describe('the spec and its deviations (spec/PATCHES.md)', () => {
  it('loads a spec that has no external $ref', () => {
    const all = refs(spec);
    expect(all.length).toBeGreaterThan(10);
    expect(all.filter((r) => !r.startsWith('#/'))).toEqual([]);
  });

  it('returns service-info with id, name, type, organization and version', async () => {
    const res = await getJson(`${api.base}/service-info`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      id: expect.any(String),
      name: expect.any(String),
      type: { group: 'org.ga4gh', artifact: 'tes', version: '1.1.0' },
      organization: { name: expect.any(String), url: expect.any(String) },
      version: expect.any(String),
    });
  });

  it('lists the allowed roots in service-info storage as file:// prefixes after the schemes', async () => {
    const roots = await startTestApi('spec-roots', {
      storage: { allowedRoots: ['/shared/ref', { path: '/shared/projects/', writable: true }] },
    });
    try {
      const { body } = await getJson(`${roots.base}/service-info`);
      expect(body.storage).toEqual(['file', 'file:///shared/ref/', 'file:///shared/projects/']);
      // What Toil asks before it mounts its file job store into a task (the bare scheme name `file`
      // is a prefix of every file:// URL too).
      const jobStore = 'file:///shared/projects/run-1/jobstore';
      const prefixes = body.storage.filter((s: string) => s.includes('://'));
      expect(prefixes.filter((s: string) => jobStore.startsWith(s))).toEqual(['file:///shared/projects/']);
      expect(prefixes.filter((s: string) => 'file:///shared/projects2/js'.startsWith(s))).toEqual([]);
      // Only the spec's fields: py-tes 1.x parses service-info strictly.
      expect(Object.keys(body).filter((k) => !props('tesServiceInfo').includes(k))).toEqual([]);
    } finally {
      await roots.close();
    }
  });

  it('serves every operation under both /ga4gh/tes/v1 and /v1', async () => {
    for (const prefix of ['/ga4gh/tes/v1', '/v1']) {
      const base = `${api.url}${prefix}`;
      expect((await getJson(`${base}/service-info`)).status).toBe(200);
      const created = await postJson(`${base}/tasks`, SIMPLE_TASK);
      expect(created.status).toBe(200);
      expect((await getJson(`${base}/tasks/${created.body.id}`)).status).toBe(200);
      expect((await getJson(`${base}/tasks`)).status).toBe(200);
      expect((await postJson(`${base}/tasks/${created.body.id}:cancel`, {})).status).toBe(200);
    }
  });

  it('answers GET /v1/tasks/service-info with the service-info document, not a task lookup', async () => {
    const res = await getJson(`${api.url}/v1/tasks/service-info`);
    expect(res.status).toBe(200);
    expect(res.body.type.artifact).toBe('tes');
  });

  it('accepts a state filter on the task list', async () => {
    const res = await getJson(`${api.base}/tasks?state=QUEUED`);
    expect(res.status).toBe(200);
    expect(res.body.tasks.every((t: { state: string }) => t.state === 'QUEUED')).toBe(true);
  });

  it('lists tasks in every state when no state filter is given', async () => {
    const done = await create();
    await api.store.transition(done, 'COMPLETE');
    await create();
    const res = await getJson(`${api.base}/tasks?page_size=2047`);
    expect(res.status).toBe(200);
    const states = new Set(res.body.tasks.map((t: { state: string }) => t.state));
    expect(states.has('COMPLETE')).toBe(true);
    expect(states.has('QUEUED')).toBe(true);
  });

  it('accepts repeated tag_key and an empty tag_value on the task list', async () => {
    const id = await create({ ...SIMPLE_TASK, tags: { a: '1', b: '2' } });
    const res = await getJson(`${api.base}/tasks?tag_key=a&tag_value=1&tag_key=b&tag_value=`);
    expect(res.status).toBe(200);
    expect(res.body.tasks.map((t: { id: string }) => t.id)).toEqual([id]);
  });

  it('accepts unencoded reserved characters in tag_key and tag_value', async () => {
    const id = await create({ ...SIMPLE_TASK, tags: { 'wf:run': 'a/b*c' } });
    const res = await getJson(`${api.base}/tasks?tag_key=wf:run&tag_value=a/b*c`);
    expect(res.status).toBe(200);
    expect(res.body.tasks.map((t: { id: string }) => t.id)).toEqual([id]);
  });

  it('accepts a name_prefix with + for spaces and parentheses', async () => {
    const id = await create({ ...SIMPLE_TASK, name: 'wf.task (1)' });
    const res = await getJson(`${api.base}/tasks?name_prefix=wf.task+(1`);
    expect(res.status).toBe(200);
    expect(res.body.tasks.map((t: { id: string }) => t.id)).toEqual([id]);
  });

  it('treats an empty page_token as the first page', async () => {
    const first = await getJson(`${api.base}/tasks?page_size=1`);
    const empty = await getJson(`${api.base}/tasks?page_size=1&page_token=`);
    expect(empty.status).toBe(200);
    expect(empty.body.tasks).toEqual(first.body.tasks);
  });

  it('accepts page_size=2047 and rejects page_size=2048 with 400', async () => {
    expect((await getJson(`${api.base}/tasks?page_size=2047`)).status).toBe(200);
    const res = await getJson(`${api.base}/tasks?page_size=2048`);
    expect(res.status).toBe(400);
    expect(res.body.errors[0].path).toBe('page_size');
  });

  it('rejects page_size=0 with 400', async () => {
    expect((await getJson(`${api.base}/tasks?page_size=0`)).status).toBe(400);
  });

  it('treats an empty view parameter as MINIMAL', async () => {
    const id = await create();
    const res = await getJson(`${api.base}/tasks/${id}?view=`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id, state: 'QUEUED' });
  });

  it('returns only id and state for a task read without a view', async () => {
    const id = await taskWithLogs();
    expect((await getJson(`${api.base}/tasks/${id}`)).body).toEqual({ id, state: 'COMPLETE' });
  });

  it('omits inputs content, executor stdout and stderr and system_logs in the BASIC view', async () => {
    const id = await taskWithLogs();
    const { body } = await getJson(`${api.base}/tasks/${id}?view=BASIC`);
    expect(body.inputs[0].content).toBeUndefined();
    expect(body.logs[0].logs[0]).toEqual({ exit_code: 0, start_time: '2026-01-01T00:00:00Z' });
    expect(body.logs[0].system_logs).toBeUndefined();
  });

  it('returns inputs content, executor stdout and stderr and system_logs in the FULL view', async () => {
    const id = await taskWithLogs();
    const { body } = await getJson(`${api.base}/tasks/${id}?view=FULL`);
    expect(body.inputs[0].content).toBe('content here');
    expect(body.logs[0].logs[0]).toMatchObject({ stdout: 'out', stderr: 'err' });
    expect(body.logs[0].system_logs).toEqual(['a note']);
  });

  it('returns each listed task in the requested view', async () => {
    const id = await taskWithLogs();
    for (const view of ['MINIMAL', 'BASIC', 'FULL']) {
      const { body } = await getJson(`${api.base}/tasks?state=COMPLETE&view=${view}&page_size=2047`);
      const task = body.tasks.find((t: { id: string }) => t.id === id);
      const single = (await getJson(`${api.base}/tasks/${id}?view=${view}`)).body;
      expect(task).toEqual(single);
    }
  });

  it('returns no fields outside the TES schema in task, list and service-info responses', async () => {
    const id = await taskWithLogs();
    const full = (await getJson(`${api.base}/tasks/${id}?view=FULL`)).body;
    for (const key of Object.keys(full)) expect(props('tesTaskFull')).toContain(key);
    for (const key of Object.keys(full.logs[0])) expect(props('tesTaskLog')).toContain(key);
    const list = (await getJson(`${api.base}/tasks?view=FULL`)).body;
    for (const key of Object.keys(list)) expect(props('tesListTasksResponse')).toContain(key);
    const info = (await getJson(`${api.base}/service-info`)).body;
    for (const key of Object.keys(info)) expect(props('tesServiceInfo')).toContain(key);
  });

  it('answers cancel with an empty object', async () => {
    const id = await create();
    const res = await postJson(`${api.base}/tasks/${id}:cancel`, {});
    expect(res.status).toBe(200);
    expect(res.body).toEqual({});
  });

  it('cancels with no body, an empty object or a JSON null body', async () => {
    const bodies: Array<RequestInit> = [
      { method: 'POST' },
      { method: 'POST', headers: { 'content-type': 'application/json' } },
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' },
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'null' },
    ];
    for (const init of bodies) {
      const id = await create();
      const res = await fetch(`${api.base}/tasks/${id}:cancel`, init);
      expect(res.status).toBe(200);
      expect((await api.store.get(id))?.state).toBe('CANCELED');
    }
  });

  it('answers an unknown task id with 404 and an error body', async () => {
    const res = await getJson(`${api.base}/tasks/01jd0000000000000000000000`);
    expect(res.status).toBe(404);
    expect(res.body).toEqual({ status: 404, message: 'task 01jd0000000000000000000000 does not exist' });
  });

  it('answers an invalid task with 400 listing every problem with its field path', async () => {
    const res = await postJson(`${api.base}/tasks`, {
      executors: [{ image: 'alpine', command: [] }, { command: ['x'] }],
      inputs: [{ path: 'rel', url: '/x' }],
    });
    expect(res.status).toBe(400);
    expect(res.body.errors).toEqual(
      expect.arrayContaining([
        { path: 'executors[1].image', message: expect.any(String) },
        { path: 'executors[0].command', message: 'must not be empty' },
        { path: 'inputs[0].path', message: 'must be an absolute path' },
      ]),
    );
  });

  it('answers a create request that is not JSON with 415', async () => {
    const res = await fetch(`${api.base}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'a=b',
    });
    expect(res.status).toBe(415);
  });

  it('answers an oversized create request with 413', async () => {
    const res = await postJson(`${api.base}/tasks`, {
      executors: [{ image: 'a', command: ['x'.repeat(9 * 1024 * 1024)] }],
    });
    expect(res.status).toBe(413);
    expect(res.body.status).toBe(413);
  });

  it('sends Cache-Control: no-store on task reads', async () => {
    const id = await create();
    expect((await fetch(`${api.base}/tasks/${id}`)).headers.get('cache-control')).toBe('no-store');
    expect((await fetch(`${api.base}/tasks`)).headers.get('cache-control')).toBe('no-store');
  });

  it('sends Retry-After with a 503', async () => {
    // A store whose Redis is gone: reads fail fast and say when to come back.
    const dead = new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    const app = createApp({
      config: api.config,
      store: new RedisTaskStore(dead, { prefix: api.prefix, maxBacklog: 10 }),
      queues: api.queues,
      logger: createLogger('silent'),
      backendParameters: [],
      storage: ['file'],
      validateResponses: true,
    });
    const server: Server = await new Promise((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    try {
      const { port } = server.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}/v1/tasks/01jd0000000000000000000000`);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('5');
      expect(((await res.json()) as { message: string }).message).toMatch(/^the task store is unavailable/);
    } finally {
      server.close();
      dead.disconnect();
    }
  });

  it('does not add backend_parameters_strict to a task that did not send it', async () => {
    const id = await create({ ...SIMPLE_TASK, resources: { cpu_cores: 1 } });
    const { body } = await getJson(`${api.base}/tasks/${id}?view=FULL`);
    expect(body.resources).toEqual({ cpu_cores: 1 });
  });

  it('loads the spec without unknown-format warnings', async () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      const fresh = await startTestApi('spec-fresh');
      await getJson(`${fresh.base}/service-info`);
      await fresh.close();
      const printed = [...warn.mock.calls, ...log.mock.calls].flat().join('\n');
      expect(printed).not.toMatch(/unknown format/);
    } finally {
      warn.mockRestore();
      log.mockRestore();
    }
  });
});

import { getJson, postJson, SIMPLE_TASK, startTestApi, type TestApi } from '../helpers/api.js';

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi('api');
});
afterAll(async () => {
  await api.close();
});

async function create(body: unknown = SIMPLE_TASK): Promise<string> {
  const res = await postJson(`${api.base}/tasks`, body);
  expect(res.status).toBe(200);
  return res.body.id as string;
}

describe('service-info', () => {
  it.each([
    '/ga4gh/tes/v1/service-info',
    '/v1/service-info',
    '/v1/tasks/service-info',
    '/ga4gh/tes/v1/tasks/service-info',
  ])('answers on %s', async (path) => {
    const res = await getJson(`${api.url}${path}`);
    expect(res.status).toBe(200);
    expect(res.body.type).toEqual({ group: 'org.ga4gh', artifact: 'tes', version: '1.1.0' });
    expect(res.body.storage).toEqual(['file']);
    expect(res.body.tesResources_backend_parameters).toContain('partition');
  });
});

describe('POST /tasks', () => {
  it('stores the task, enqueues its submission and answers with its id', async () => {
    const id = await create();
    expect(id).toMatch(/^[0-9a-z]{26}$/);
    const job = await api.queues.queue('submit').getJob(`submit-${id}`);
    expect(job?.data).toEqual({ taskId: id });
    const stored = await api.store.get(id);
    expect(stored?.state).toBe('QUEUED');
  });

  it('answers on the /v1 prefix too', async () => {
    const res = await postJson(`${api.url}/v1/tasks`, SIMPLE_TASK);
    expect(res.status).toBe(200);
  });

  it('carries a request id on every answer', async () => {
    const res = await postJson(`${api.base}/tasks`, SIMPLE_TASK, { 'x-request-id': 'abc-123' });
    expect(res.headers.get('x-request-id')).toBe('abc-123');
  });
});

describe('GET /tasks/{id}', () => {
  const body = {
    name: 'viewed',
    inputs: [{ path: '/data/in.txt', content: 'secret-ish content' }],
    executors: [{ image: 'alpine', command: ['cat', '/data/in.txt'] }],
  };

  it('gives MINIMAL by default', async () => {
    const id = await create(body);
    const res = await getJson(`${api.base}/tasks/${id}`);
    expect(res.body).toEqual({ id, state: 'QUEUED' });
    expect(res.headers.get('cache-control')).toBe('no-store');
  });

  it('gives BASIC without input contents', async () => {
    const id = await create(body);
    const res = await getJson(`${api.base}/tasks/${id}?view=BASIC`);
    expect(res.body).toEqual({
      id,
      state: 'QUEUED',
      name: 'viewed',
      inputs: [{ path: '/data/in.txt', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['cat', '/data/in.txt'] }],
      creation_time: expect.any(String),
    });
  });

  it('gives FULL with everything, and no defaults the client did not send', async () => {
    const id = await create(body);
    const res = await getJson(`${api.base}/tasks/${id}?view=FULL`);
    expect(res.body.inputs[0].content).toBe('secret-ish content');
    expect(res.body.executors[0]).toEqual({ image: 'alpine', command: ['cat', '/data/in.txt'] });
    expect(res.body.resources).toBeUndefined();
  });

  it('answers 404 for an unknown task', async () => {
    for (const id of ['01jd0000000000000000000000', 'not-an-id', '..%2F..%2Fetc']) {
      const res = await getJson(`${api.base}/tasks/${id}`);
      expect(res.status).toBe(404);
      expect(res.body.status).toBe(404);
      expect(res.body.message).toMatch(/does not exist/);
    }
  });
});

describe('tolerant input', () => {
  // A gateway whose allowed roots hold the task's file URLs, which are refused at create otherwise.
  let rooted: TestApi;
  beforeAll(async () => {
    rooted = await startTestApi('api-rooted', {
      storage: { allowedRoots: [{ path: '/data', writable: true }] },
    });
  });
  afterAll(async () => {
    await rooted.close();
  });

  it('accepts nulls, camelCase and echoed read-only fields', async () => {
    const res = await postJson(`${rooted.base}/tasks`, {
      id: 'mine',
      state: 'COMPLETE',
      creation_time: 'yesterday',
      logs: null,
      name: null,
      tags: { run: 'r1', empty: null },
      resources: { cpuCores: 2, ramGb: 1.5, backendParameters: { partition: 'debug' } },
      inputs: [{ path: '/in', url: 'file:///data/in' }],
      outputs: [{ path: '/out/*.txt', url: 'file:///data/out/', pathPrefix: '/out/' }],
      executors: [{ image: 'alpine', command: ['true'], ignoreError: true, env: null }],
    });
    expect(res.status).toBe(200);
    const full = await getJson(`${rooted.base}/tasks/${res.body.id}?view=FULL`);
    expect(full.body).toMatchObject({
      state: 'QUEUED',
      tags: { run: 'r1' },
      resources: { cpu_cores: 2, ram_gb: 1.5, backend_parameters: { partition: 'debug' } },
      inputs: [{ path: '/in', url: 'file:///data/in', type: 'FILE' }],
      outputs: [{ path: '/out/*.txt', url: 'file:///data/out/', path_prefix: '/out/', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'], ignore_error: true }],
    });
    expect(full.body.id).not.toBe('mine');
    expect(full.body.creation_time).not.toBe('yesterday');
  });
});

describe('bad input', () => {
  it('reports every problem at once with field paths', async () => {
    const res = await postJson(`${api.base}/tasks`, {
      inputs: [{ path: 'relative', url: 'file:///x', content: 'y' }],
      executors: [{ image: 'alpine', command: [], workdir: 'rel' }],
      resources: { cpu_cores: 'two' },
    });
    expect(res.status).toBe(400);
    const paths = res.body.errors.map((e: { path: string }) => e.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'resources.cpu_cores',
        'executors[0].command',
        'executors[0].workdir',
        'inputs[0].path',
        'inputs[0]',
      ]),
    );
    expect(res.body.message).toMatch(/^invalid request: /);
  });

  it('requires executors', async () => {
    const res = await postJson(`${api.base}/tasks`, { name: 'x' });
    expect(res.status).toBe(400);
    expect(res.body.errors.map((e: { path: string }) => e.path)).toContain('executors');
  });

  it('answers 400 for malformed JSON', async () => {
    const res = await postJson(`${api.base}/tasks`, '{"executors": [');
    expect(res.status).toBe(400);
    expect(res.body.message).toMatch(/not valid JSON/);
  });

  it('answers 415 for a body that is not JSON', async () => {
    const res = await fetch(`${api.base}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'hello',
    });
    expect(res.status).toBe(415);
    expect(((await res.json()) as { message: string }).message).toMatch(/must be JSON/);
  });

  it('answers 413 for a body over the limit', async () => {
    const big = {
      executors: [{ image: 'alpine', command: ['echo', 'x'.repeat(api.config.server.bodyLimitBytes)] }],
    };
    const res = await postJson(`${api.base}/tasks`, big);
    expect(res.status).toBe(413);
  });

  it('refuses unsupported backend_parameters when strict, naming them', async () => {
    const res = await postJson(`${api.base}/tasks`, {
      ...SIMPLE_TASK,
      resources: {
        backend_parameters: { partition: 'debug', flavour: 'large' },
        backend_parameters_strict: true,
      },
    });
    expect(res.status).toBe(400);
    expect(res.body.errors).toEqual([
      { path: 'resources.backend_parameters', message: expect.stringMatching(/^unsupported key flavour/) },
    ]);
  });

  it('ignores unsupported backend_parameters when not strict and notes it in the system logs', async () => {
    const id = await create({ ...SIMPLE_TASK, resources: { backend_parameters: { flavour: 'large' } } });
    const full = await getJson(`${api.base}/tasks/${id}?view=FULL`);
    expect(full.body.logs[0].system_logs).toEqual([
      'backend_parameters ignored (not supported by this gateway): flavour',
    ]);
  });

  it('keeps serving after bad requests', async () => {
    const res = await getJson(`${api.base}/service-info`);
    expect(res.status).toBe(200);
  });

  it('answers 404 with a JSON body for an unknown endpoint', async () => {
    const res = await getJson(`${api.base}/nope`);
    expect(res.status).toBe(404);
    expect(res.body.status).toBe(404);
  });
});

describe('POST /tasks/{id}:cancel', () => {
  it.each([
    ['no body', undefined],
    ['{}', '{}'],
    ['a JSON null', 'null'],
  ])('cancels a queued task at once, with %s', async (_label, body) => {
    const id = await create();
    const init: RequestInit = { method: 'POST' };
    if (body !== undefined) init.body = body;
    if (body !== undefined) init.headers = { 'content-type': 'application/json' };
    const res = await fetch(`${api.base}/tasks/${id}:cancel`, init);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    expect((await api.store.get(id))?.state).toBe('CANCELED');
  });

  it('moves a task on the cluster to CANCELING and enqueues the cancel', async () => {
    const id = await create();
    await api.store.setJob(id, '4242', { workDir: '/w' });
    const res = await postJson(`${api.url}/v1/tasks/${id}:cancel`, {});
    expect(res.status).toBe(200);
    expect((await api.store.get(id))?.state).toBe('CANCELING');
    expect(await api.queues.queue('cancel').getJob(`cancel-${id}`)).toBeDefined();
  });

  it('leaves a finished task as it is', async () => {
    const id = await create();
    await api.store.transition(id, 'COMPLETE');
    const res = await postJson(`${api.base}/tasks/${id}:cancel`, {});
    expect(res.status).toBe(200);
    expect(res.body).toEqual({});
    expect((await api.store.get(id))?.state).toBe('COMPLETE');
  });

  it('answers 404 for an unknown task', async () => {
    const res = await postJson(`${api.base}/tasks/01jd0000000000000000000000:cancel`, {});
    expect(res.status).toBe(404);
  });
});

import * as zlib from 'node:zlib';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { sendRaw, type RawRequest, type RawResponse } from '../helpers/raw-http.js';

/**
 * Each class of malformed request the issue-7 fuzzer found, against a real API process (api role
 * only), sent byte for byte: every one gets a JSON 4xx with the spec's error shape, never a 5xx, a
 * reset or a stored task.
 */

const TASK = { executors: [{ image: 'alpine', command: ['echo', 'hi'] }] };
const BASE = '/ga4gh/tes/v1';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway('malformed', {}, { roles: { api: true, worker: false } });
});
afterAll(async () => {
  await gw.close();
});

function send(request: RawRequest): Promise<RawResponse> {
  return sendRaw(gw.url, request);
}

function postJson(
  target: string,
  body: string | Buffer,
  headers: Array<[string, string]> = [],
): Promise<RawResponse> {
  return send({ method: 'POST', target, headers: [['Content-Type', 'application/json'], ...headers], body });
}

/** The answer as the JSON error it must be: `{status, message, errors?}` with the HTTP status. */
function errorOf(r: RawResponse): {
  status: number;
  message: string;
  errors?: Array<{ path: string; message: string }>;
} {
  expect({ error: r.error, contentType: r.headers['content-type'] }).toEqual({
    error: undefined,
    contentType: 'application/json; charset=utf-8',
  });
  const body = JSON.parse(r.body) as { status: number; message: string };
  expect(body.status).toBe(r.status);
  expect(typeof body.message).toBe('string');
  return body;
}

async function storedCount(): Promise<number> {
  return gw.gateway.store.redis.zcard(gw.gateway.store.keys.all);
}

async function storedRequest(id: string): Promise<unknown> {
  return (await gw.gateway.store.get(id))?.request;
}

describe('Content-Encoding', () => {
  // Node's zlib decodes zstd from 22.15 on, and the body parser then accepts it; before, it cannot.
  const zstd = 'createZstdDecompress' in zlib ? ['zstd'] : [];
  it.each(['gzip', 'deflate', 'br', 'GZIP', ...zstd])(
    'answers 400 naming %s when the body is not encoded so',
    async (encoding) => {
      const r = await postJson(`${BASE}/tasks`, JSON.stringify(TASK), [['Content-Encoding', encoding]]);
      expect(r.status).toBe(400);
      expect(errorOf(r).message).toContain(`not valid ${encoding.toLowerCase()} data`);
    },
  );

  it.each(['compress', ...(zstd.length > 0 ? [] : ['zstd']), 'gzip, br'])(
    'answers 415 for the unsupported encoding %s',
    async (encoding) => {
      const r = await postJson(`${BASE}/tasks`, JSON.stringify(TASK), [['Content-Encoding', encoding]]);
      expect(r.status).toBe(415);
      expect(errorOf(r).message).toContain(encoding);
    },
  );

  it('accepts a body that is encoded as declared', async () => {
    const gzip = await postJson(`${BASE}/tasks`, gzipSync(JSON.stringify(TASK)), [
      ['Content-Encoding', 'gzip'],
    ]);
    expect(gzip.status).toBe(200);
    const br = await postJson(`${BASE}/tasks`, brotliCompressSync(JSON.stringify(TASK)), [
      ['Content-Encoding', 'br'],
    ]);
    expect(br.status).toBe(200);
  });
});

describe('nesting', () => {
  it('answers 400 for JSON nested 10,000 deep, in arrays or objects', async () => {
    for (const nested of [
      `${'['.repeat(10_000)}${']'.repeat(10_000)}`,
      `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`,
    ]) {
      const r = await postJson(
        `${BASE}/tasks`,
        `{"executors":[{"image":"a","command":["b"]}],"x":${nested}}`,
      );
      expect(r.status).toBe(400);
      expect(errorOf(r).errors).toEqual([{ path: 'body', message: 'nested deeper than 64 levels' }]);
    }
  });

  it('refuses deep JSON before parsing it, on every endpoint that reads a body', async () => {
    const created = await postJson(`${BASE}/tasks`, JSON.stringify(TASK));
    const id = (JSON.parse(created.body) as { id: string }).id;
    const r = await postJson(`${BASE}/tasks/${id}:cancel`, `${'['.repeat(100_000)}${']'.repeat(100_000)}`);
    expect(r.status).toBe(400);
    expect(errorOf(r).errors).toEqual([{ path: 'body', message: 'nested deeper than 64 levels' }]);
  });

  it('accepts a body nested 64 levels deep', async () => {
    const nested = `${'['.repeat(62)}${']'.repeat(62)}`;
    const r = await postJson(`${BASE}/tasks`, `{"executors":[{"image":"a","command":["b"]}],"x":${nested}}`);
    expect(r.status).toBe(200);
  });
});

describe('page_size', () => {
  it.each([
    '1e999',
    'Infinity',
    '-1',
    '0',
    '2.5',
    '1e3',
    '0x10',
    '%205',
    '',
    'NaN',
    '2048',
    '99999999999999999999',
  ])('answers 400 naming page_size and its range for page_size=%s', async (value) => {
    const r = await send({ method: 'GET', target: `${BASE}/tasks?page_size=${value}` });
    expect(r.status).toBe(400);
    expect(errorOf(r).errors).toEqual([
      { path: 'page_size', message: "must be a whole number from 1 to 2047 (the spec's limit)" },
    ]);
  });

  it.each(['1', '2047', '0100'])('accepts page_size=%s', async (value) => {
    const r = await send({ method: 'GET', target: `${BASE}/tasks?page_size=${value}` });
    expect(r.status).toBe(200);
  });
});

describe('request size', () => {
  it('answers a request target of about 100 KB with a JSON 414', async () => {
    const r = await send({ method: 'GET', target: `${BASE}/tasks?name_prefix=${'a'.repeat(100_000)}` });
    expect(r.status).toBe(414);
    expect(errorOf(r).message).toContain('request target');
  });

  it('answers a request target over 8 KiB with a JSON 414', async () => {
    const r = await send({ method: 'GET', target: `${BASE}/tasks?name_prefix=${'a'.repeat(9000)}` });
    expect(r.status).toBe(414);
    expect(errorOf(r).message).toContain('at most 8192');
  });

  it('answers headers over 16 KiB with a JSON 431', async () => {
    const r = await send({
      method: 'GET',
      target: `${BASE}/tasks`,
      headers: [['X-Big', 'a'.repeat(20_000)]],
    });
    expect(r.status).toBe(431);
    errorOf(r);
  });

  it('answers a task body over the limit with a JSON 413', async () => {
    const r = await postJson(`${BASE}/tasks`, JSON.stringify({ ...TASK, name: 'x'.repeat(9 * 1024 * 1024) }));
    expect(r.status).toBe(413);
    errorOf(r);
  });
});

describe('routing', () => {
  it('refuses a # in the request target instead of storing a task without executors', async () => {
    const before = await storedCount();
    const r = await postJson(`${BASE}/tasks/#:cancel`, '{}');
    expect(r.status).toBe(400);
    expect(errorOf(r).errors).toEqual([
      {
        path: 'request target',
        message: "must not contain '#' (a fragment is never sent; encode it as %23)",
      },
    ]);
    expect(await storedCount()).toBe(before);
  });

  it.each([
    ['/tasks#', 400],
    ['/tasks?#', 400],
    ['/tasks/?:cancel', 400],
    ['/tasks/%23:cancel', 404],
    ['/tasks/x%3Acancel', 405],
    ['/tasks/%2F:cancel', 404],
    ['//tasks', 404],
    ['/tasks;x', 404],
    ['/tasks/..%2Ftasks', 405],
    ['/tasks/../tasks', 404],
    ['/tasks/x/..', 404],
    ['/tasks/:cancel', 405],
    ['/tasks\\', 404],
    ['/tasks/\\:cancel', 404],
    ['/tasks/%zz:cancel', 400],
  ])('answers POST %s {} with a JSON %i and stores nothing', async (path, status) => {
    const before = await storedCount();
    const r = await postJson(`${BASE}${path}`, '{}');
    expect(r.status).toBe(status);
    errorOf(r);
    expect(await storedCount()).toBe(before);
  });

  it('treats a trailing slash and another case as the same endpoint, validated as such', async () => {
    for (const path of [`${BASE}/tasks/`, `${BASE.toUpperCase()}/TASKS`]) {
      const invalid = await postJson(path, '{}');
      expect(invalid.status).toBe(400);
      expect(errorOf(invalid).errors).toEqual([
        { path: 'executors', message: "must have required property 'executors'" },
      ]);
      const valid = await postJson(path, JSON.stringify({ ...TASK, extra: 1 }));
      expect(valid.status).toBe(200);
      expect(await storedRequest((JSON.parse(valid.body) as { id: string }).id)).toEqual(TASK);
    }
  });

  it.each(['*', 'http://example.org/ga4gh/tes/v1/tasks'])(
    'answers the request target %s with a JSON 400',
    async (target) => {
      const r = await postJson(target, JSON.stringify(TASK));
      expect(r.status).toBe(400);
      expect(errorOf(r).errors?.[0]?.path).toBe('request target');
    },
  );
});

describe('methods', () => {
  it.each([
    ['OPTIONS', `${BASE}/tasks`, 405],
    ['OPTIONS', `${BASE}/tasks/x:cancel`, 405],
    ['PUT', `${BASE}/tasks/x`, 405],
    ['FOO', `${BASE}/tasks`, 400],
    ['get', `${BASE}/tasks`, 400],
    ['CONNECT', 'example.org:443', 405],
  ])('answers %s %s with a JSON %i', async (method, target, status) => {
    const r = await send({ method, target });
    expect(r.status).toBe(status);
    errorOf(r);
  });
});

describe('unknown fields', () => {
  it('stores only the fields the spec knows, at every level, and echoes nothing else', async () => {
    const body =
      '{"executors":[{"image":"a","command":["b"],"zzz":1,"ignoreError":true}],"toString":1,"constructor":2,' +
      '"__proto__":{"name":"inherited"},"cpuCores":3,"unknown":{"x":1},' +
      '"inputs":[{"path":"/i","url":"http://example.org/i","extra":{}}],"resources":{"cpuCores":2,"gpus":1}}';
    const r = await postJson(`${BASE}/tasks`, body);
    expect(r.status).toBe(200);
    const id = (JSON.parse(r.body) as { id: string }).id;
    const expected = {
      executors: [{ image: 'a', command: ['b'], ignore_error: true }],
      inputs: [{ path: '/i', url: 'http://example.org/i', type: 'FILE' }],
      resources: { cpu_cores: 2 },
    };
    expect(await storedRequest(id)).toEqual(expected);
    const full = await send({ method: 'GET', target: `${BASE}/tasks/${id}?view=FULL` });
    expect(JSON.parse(full.body)).toEqual({
      id,
      state: 'QUEUED',
      creation_time: expect.any(String),
      ...expected,
    });
    // The name never came from the prototype the body tried to set.
    expect(await gw.gateway.store.redis.zcard(gw.gateway.store.keys.names)).toBe(0);
  });

  it.each(['__proto__', 'constructor', 'prototype'])('answers 400 naming the key %s in tags', async (key) => {
    const r = await postJson(
      `${BASE}/tasks`,
      `{"executors":[{"image":"a","command":["b"]}],"tags":{"${key}":"x"}}`,
    );
    expect(r.status).toBe(400);
    expect(errorOf(r).errors).toEqual([
      { path: `tags.${key}`, message: 'is a reserved name and cannot be used as a key' },
    ]);
  });
});

describe('query parameters', () => {
  it('ignores unknown query parameters on every endpoint', async () => {
    const created = await postJson(`${BASE}/tasks?project=p&apikey=k`, JSON.stringify(TASK));
    expect(created.status).toBe(200);
    const id = (JSON.parse(created.body) as { id: string }).id;
    for (const [method, path] of [
      ['GET', '/service-info'],
      ['GET', '/tasks/service-info'],
      ['GET', '/tasks'],
      ['GET', `/tasks/${id}`],
      ['POST', `/tasks/${id}:cancel`],
    ] as const) {
      const r = await send({ method, target: `${BASE}${path}?apikey=k&project=p&__proto__=x&constructor=y` });
      expect({ method, path, status: r.status }).toEqual({ method, path, status: 200 });
    }
  });

  it('still validates the known ones strictly', async () => {
    for (const target of [
      `${BASE}/tasks?view=full`,
      `${BASE}/tasks?state=bogus&apikey=k`,
      `${BASE}/tasks/x?view=ALL`,
    ]) {
      const r = await send({ method: 'GET', target });
      expect({ target, status: r.status }).toEqual({ target, status: 400 });
      errorOf(r);
    }
  });
});

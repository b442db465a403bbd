import type { Redis } from 'ioredis';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { getJson, postJson, startTestApi, type TestApi } from '../helpers/api.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

let api: TestApi;
const ids: Record<string, string> = {};

beforeAll(async () => {
  api = await startTestApi('list');
  const specs: Array<[string, Record<string, string>]> = [
    ['align-1', { run: 'r1', kind: 'align' }],
    ['align-2', { run: 'r1', kind: 'align' }],
    ['call-1', { run: 'r1', kind: 'call' }],
    ['align-3', { run: 'r2', kind: 'align' }],
    ['other', {}],
  ];
  for (const [name, tags] of specs) {
    const res = await postJson(`${api.base}/tasks`, {
      name,
      tags,
      executors: [{ image: 'alpine', command: ['true'] }],
    });
    ids[name] = res.body.id;
  }
  await api.store.transition(ids['align-2']!, 'RUNNING');
  await api.store.transition(ids['call-1']!, 'RUNNING');
});
afterAll(async () => {
  await api.close();
});

async function list(query: string): Promise<{ names: string[]; body: any; status: number }> {
  const res = await getJson(`${api.base}/tasks?${query}`);
  const names = (res.body?.tasks ?? []).map((t: { id: string }) =>
    Object.keys(ids).find((k) => ids[k] === t.id),
  );
  return { names, body: res.body, status: res.status };
}

describe('GET /tasks', () => {
  it('lists newest first in the MINIMAL view by default', async () => {
    const { names, body } = await list('');
    expect(names).toEqual(['other', 'align-3', 'call-1', 'align-2', 'align-1']);
    expect(body.tasks[0]).toEqual({ id: ids.other, state: 'QUEUED' });
    expect(body.next_page_token).toBeUndefined();
  });

  it('filters by name prefix', async () => {
    expect((await list('name_prefix=align')).names).toEqual(['align-3', 'align-2', 'align-1']);
  });

  it('filters by state', async () => {
    expect((await list('state=RUNNING')).names).toEqual(['call-1', 'align-2']);
  });

  it('filters by tag key and value', async () => {
    expect((await list('tag_key=run&tag_value=r1')).names).toEqual(['call-1', 'align-2', 'align-1']);
  });

  it('matches any value of a tag key when the value is empty or missing', async () => {
    expect((await list('tag_key=kind&tag_value=')).names).toEqual([
      'align-3',
      'call-1',
      'align-2',
      'align-1',
    ]);
    expect((await list('tag_key=kind')).names).toEqual(['align-3', 'call-1', 'align-2', 'align-1']);
  });

  it('combines filters', async () => {
    expect((await list('tag_key=run&tag_value=r1&tag_key=kind&tag_value=align&state=QUEUED')).names).toEqual([
      'align-1',
    ]);
    expect((await list('name_prefix=align&state=RUNNING&tag_key=run&tag_value=r1')).names).toEqual([
      'align-2',
    ]);
    expect((await list('name_prefix=call&tag_key=kind&tag_value=align')).names).toEqual([]);
  });

  it('gives BASIC and FULL views in lists too', async () => {
    const { body } = await list('view=BASIC&name_prefix=other');
    expect(body.tasks[0]).toMatchObject({
      name: 'other',
      executors: [{ image: 'alpine', command: ['true'] }],
    });
  });

  it('pages with an opaque token, without overlap or gap', async () => {
    const seen: string[] = [];
    let token = '';
    for (let i = 0; i < 10; i++) {
      const { body } = await list(`page_size=2${token ? `&page_token=${encodeURIComponent(token)}` : ''}`);
      seen.push(...body.tasks.map((t: { id: string }) => t.id));
      if (!body.next_page_token) break;
      token = body.next_page_token;
    }
    expect(seen).toEqual([ids.other, ids['align-3'], ids['call-1'], ids['align-2'], ids['align-1']]);
  });

  it('keeps pages stable while tasks are being created', async () => {
    const first = await list('page_size=2');
    await postJson(`${api.base}/tasks`, {
      name: 'late',
      executors: [{ image: 'alpine', command: ['true'] }],
    });
    const second = await list(`page_size=10&page_token=${first.body.next_page_token}`);
    expect([...first.names, ...second.names]).toEqual(['other', 'align-3', 'call-1', 'align-2', 'align-1']);
  });

  it('accepts page_size up to 2047 and refuses more', async () => {
    expect((await list('page_size=2047')).status).toBe(200);
    const res = await list('page_size=2048');
    expect(res.status).toBe(400);
    expect(res.body.errors[0].path).toBe('page_size');
  });

  it('refuses a page token it did not issue', async () => {
    const res = await list('page_token=bogus');
    expect(res.status).toBe(400);
    expect(res.body.errors).toEqual([
      { path: 'page_token', message: 'is not a page token this service issued' },
    ]);
  });

  it('refuses an unknown state filter', async () => {
    const res = await list('state=DONE');
    expect(res.status).toBe(400);
    expect(res.body.errors[0].path).toBe('state');
  });
});

describe('GET /tasks with large tasks', () => {
  const LIMIT = 64 * 1024;
  let big: TestApi;
  const created: string[] = [];
  beforeAll(async () => {
    big = await startTestApi('list-bytes', { limits: { listPageMaxBytes: LIMIT } });
    // Newest first: 25 KiB each, two fit a page and three do not; the fourth alone is larger than one.
    for (const size of [25, 100, 25, 25, 25]) {
      // Ids order by the millisecond of creation: one each, so the order is known.
      await new Promise((r) => setTimeout(r, 2));
      const res = await postJson(`${big.base}/tasks`, {
        description: 'd'.repeat(size * 1024),
        executors: [{ image: 'alpine', command: ['true'] }],
      });
      created.unshift(res.body.id);
    }
  });
  afterAll(async () => {
    await big.close();
  });

  async function walk(query: string): Promise<string[][]> {
    const pages: string[][] = [];
    let token = '';
    for (let i = 0; i < 20; i++) {
      const res = await getJson(`${big.base}/tasks?${query}${token ? `&page_token=${token}` : ''}`);
      expect(res.status).toBe(200);
      pages.push(res.body.tasks.map((t: { id: string }) => t.id));
      if (!res.body.next_page_token) break;
      token = res.body.next_page_token;
    }
    return pages;
  }

  it('ends a FULL page early at limits.listPageMaxBytes and carries on with the next token', async () => {
    const pages = await walk('view=FULL&page_size=2047');
    expect(pages.map((p) => p.length)).toEqual([2, 1, 1, 1]);
    expect(pages.flat()).toEqual(created);
  });

  it('keeps BASIC pages under the same limit', async () => {
    expect((await walk('view=BASIC')).flat()).toEqual(created);
    expect((await walk('view=BASIC'))[0]).toHaveLength(2);
  });

  it('gives a MINIMAL page whole, since it carries no task documents', async () => {
    expect(await walk('')).toEqual([created]);
  });
});

describe('the name_prefix filter', () => {
  const prefix = testPrefix('list-names');
  let redis: Redis;
  let store: RedisTaskStore;
  const named: string[] = [];
  const byName = new Map<string, string>();
  beforeAll(async () => {
    redis = connect();
    // A budget of 10 entries per call: the 30 names of the prefix do not fit it.
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000, listScanBudget: 10 });
    for (let i = 0; i < 60; i++) {
      const name = i % 2 === 0 ? `sample-${i}` : `other-${i}`;
      const t = await store.create({ name, executors: [{ image: 'alpine', command: ['true'] }] });
      if (i % 2 === 0) named.push(t.id);
      byName.set(name, t.id);
    }
    // Newest first is descending id order (ids made within one millisecond order at random).
    named.sort().reverse();
  });
  afterAll(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
  });

  it('walks a name range larger than the scan budget page by page, without gap or overlap', async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    let calls = 0;
    do {
      const page = await store.list({
        namePrefix: 'sample-',
        tags: [],
        pageSize: 100,
        cursor,
        view: 'MINIMAL',
      });
      seen.push(...page.records.map((r) => r.id));
      cursor = page.nextCursor;
      calls++;
    } while (cursor && calls < 50);
    expect(seen).toEqual(named);
    // Each call inspects at most 10 entries of the 60.
    expect(calls).toBeGreaterThanOrEqual(6);
  });

  it('still reads a small name range through the name index', async () => {
    const page = await store.list({ namePrefix: 'sample-58', tags: [], pageSize: 100, view: 'MINIMAL' });
    expect(page.records.map((r) => r.id)).toEqual([byName.get('sample-58')]);
    expect(page.nextCursor).toBeUndefined();
  });
});

describe('the owner filter', () => {
  const prefix = testPrefix('list-owners');
  let redis: Redis;
  let store: RedisTaskStore;
  const alices: string[] = [];
  beforeAll(async () => {
    redis = connect();
    // A budget of 10 entries per call, and 100 of bob's tasks newer than alice's 3.
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000, listScanBudget: 10 });
    const task = { executors: [{ image: 'alpine', command: ['true'] }] };
    for (let i = 0; i < 3; i++) alices.push((await store.create(task, { owner: { user: 'alice' } })).id);
    for (let i = 0; i < 100; i++) await store.create(task, { owner: { user: 'bob', groups: ['lab'] } });
    alices.sort().reverse();
  });
  afterAll(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
  });

  it("walks only the owner's index: one call finds all of alice's tasks past bob's hundred", async () => {
    const page = await store.list({ owner: 'alice', tags: [], pageSize: 100, view: 'BASIC' });
    expect(page.records.map((r) => r.id)).toEqual(alices);
    expect(page.records.every((r) => r.owner?.user === 'alice')).toBe(true);
    expect(page.nextCursor).toBeUndefined();
  });

  it('keeps the owner and their groups with the task', async () => {
    const page = await store.list({ owner: 'bob', tags: [], pageSize: 1, view: 'FULL' });
    expect(page.records[0]!.owner).toEqual({ user: 'bob' });
    const full = await store.get(page.records[0]!.id);
    expect(full?.owner).toEqual({ user: 'bob', groups: ['lab'] });
    expect(await store.getHead(page.records[0]!.id)).toEqual({ state: 'QUEUED', owner: 'bob' });
  });
});

import { postJson, startTestApi, type TestApi } from '../helpers/api.js';

/** The limits and defence-in-depth rules as a client meets them: one 400 listing every problem. */

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi('limits', {
    limits: { maxExecutors: 3, maxStringBytes: 8192 },
    container: { imageRoots: ['/srv/images'] },
  });
});
afterAll(async () => {
  await api.close();
});

const ex = (extra: Record<string, unknown> = {}) => ({ image: 'alpine', command: ['true'], ...extra });

async function refused(body: unknown): Promise<Array<{ path: string; message: string }>> {
  const res = await postJson(`${api.base}/tasks`, body);
  expect(res.status).toBe(400);
  expect(res.body.message).toMatch(/^invalid request: /);
  return res.body.errors;
}

describe('POST /tasks limits', () => {
  it('refuses a task over a configured limit, naming the field and the limit', async () => {
    expect(await refused({ executors: [ex(), ex(), ex(), ex()] })).toEqual([
      { path: 'executors', message: 'has 4 executors; at most 3 are accepted (limits.maxExecutors)' },
    ]);
    expect(await refused({ name: 'n'.repeat(8193), executors: [ex()] })).toEqual([
      { path: 'name', message: 'is 8193 bytes; at most 8192 are accepted (limits.maxStringBytes)' },
    ]);
  });

  it('stores nothing for a refused task', async () => {
    await refused({ executors: [ex({ command: ['a\u0000'] })] });
    expect(await api.redis.zcard(api.store.keys.all)).toBe(0);
  });

  it('gives the rules and the schema problems in one answer', async () => {
    const errors = await refused({
      name: 'a\u0000b',
      executors: [{ image: 'docker-archive:///tmp/x.tar' }, ex(), ex(), ex()],
      volumes: ['/proc'],
    });
    expect(errors).toEqual(
      expect.arrayContaining([
        { path: 'executors[0].command', message: expect.stringMatching(/required/) },
        { path: 'executors', message: 'has 4 executors; at most 3 are accepted (limits.maxExecutors)' },
        { path: 'volumes[0]', message: 'must not be at or under /proc: the container runtime provides it' },
        { path: 'name', message: 'must not contain a NUL character' },
      ]),
    );
  });

  it.each(['/', '/proc', '/dev', '/sys'])('refuses a writable volume at %s', async (volume) => {
    const errors = await refused({ volumes: [volume], executors: [ex()] });
    expect(errors).toHaveLength(1);
    expect(errors[0]!.path).toBe('volumes[0]');
  });

  it.each([
    ['docker-archive:///var/tmp/x.tar', /uses docker-archive:\/\//],
    ['/etc', /is a local image file outside the image roots \(\/srv\/images\)/],
  ])('refuses the image %s', async (image, message) => {
    const errors = await refused({ executors: [ex({ image })] });
    expect(errors).toEqual([{ path: 'executors[0].image', message: expect.stringMatching(message) }]);
  });

  it('refuses a partition list, which would skip the partition limits', async () => {
    const errors = await refused({
      executors: [ex()],
      resources: { backend_parameters: { partition: 'debug,big' } },
    });
    expect(errors).toEqual([
      {
        path: 'resources.backend_parameters.partition',
        message: expect.stringMatching(/^must be one partition name/),
      },
    ]);
  });

  it('accepts a task within every limit', async () => {
    const res = await postJson(`${api.base}/tasks`, {
      executors: [ex({ image: '/srv/images/tool.sif', env: { A: 'x'.repeat(8000) } })],
      volumes: ['/scratch'],
      resources: { backend_parameters: { partition: 'debug', gres: 'gpu:1,mps:10' } },
    });
    expect(res.status).toBe(200);
  });
});

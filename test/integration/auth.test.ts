import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { postJson, startTestApi, type TestApi } from '../helpers/api.js';
import { startOidcProvider, type OidcProvider } from '../helpers/oidc-provider.js';
import { TokenStore } from '../../src/identity/tokens.js';
import { OWNER_TAG } from '../../src/tes/types.js';
import { redactUrl } from '../../src/staging/url-redaction.js';
import { SHARED_CLIENTS } from '../clients/real-clients.js';

/**
 * Who is asking, over real HTTP against the real Redis: each authentication mode, two users and an
 * admin, and every shape of credentials the TES clients send.
 */

const DAY = 86_400_000;
const TASK = { executors: [{ image: 'alpine', command: ['true'] }] };

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

function basic(user: string, password: string): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` };
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

async function tokenFor(api: TestApi, user: string, lifetimeMs = DAY): Promise<string> {
  const tokens = new TokenStore(api.redis, api.store.keys.tokens, { cacheTtlMs: 0 });
  return (await tokens.create({ user, lifetimeMs })).token;
}

/** The ids in a full walk of the listing as this caller sees it. */
async function listedIds(api: TestApi, headers: Record<string, string>, query = ''): Promise<string[]> {
  const res = await get(`${api.base}/tasks?page_size=100${query}`, headers);
  expect(res.status).toBe(200);
  return (res.body.tasks as Array<{ id: string }>).map((t) => t.id);
}

function expectUnauthorized(res: { status: number; headers: Headers; body: any }, reason: RegExp): void {
  expect(res.status).toBe(401);
  expect(res.headers.get('www-authenticate')).toMatch(/Bearer realm="tes-gateway"/);
  expect(res.body).toEqual({ status: 401, message: expect.stringMatching(reason) });
}

describe('auth.mode none', () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await startTestApi('auth-none');
  });
  afterAll(() => api.close());

  it("ignores stray credentials such as py-tes 0.4's Basic None:None, and records no owner", async () => {
    const created = await postJson(`${api.base}/tasks`, TASK, basic('None', 'None'));
    expect(created.status).toBe(200);
    const full = await get(`${api.base}/tasks/${created.body.id}?view=FULL`, basic('None', 'None'));
    expect(full.status).toBe(200);
    expect(full.body.tags).toBeUndefined();
  });
});

describe('auth.mode tokens', () => {
  let api: TestApi;
  let alice: string;
  let bob: string;
  let carol: string;
  let aliceTask: string;
  let bobTask: string;
  const logLines: string[] = [];

  beforeAll(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    api = await startTestApi(
      'auth-tokens',
      {
        auth: { mode: 'tokens', tokens: { cacheTtlMs: 300 } },
        identity: { admins: { users: ['carol'] } },
      },
      { logger: pino({ level: 'debug' }, sink) },
    );
    alice = await tokenFor(api, 'alice');
    bob = await tokenFor(api, 'bob');
    carol = await tokenFor(api, 'carol');
    aliceTask = (await postJson(`${api.base}/tasks`, { ...TASK, name: 'a' }, bearer(alice))).body.id;
    bobTask = (await postJson(`${api.base}/tasks`, { ...TASK, name: 'b' }, bearer(bob))).body.id;
  });
  afterAll(() => api.close());

  it('answers a request without credentials 401, with a challenge per scheme and a JSON body', async () => {
    for (const res of [
      await get(`${api.base}/tasks`),
      await get(`${api.base}/tasks/${aliceTask}`),
      await postJson(`${api.base}/tasks`, TASK),
      await postJson(`${api.base}/tasks/${aliceTask}:cancel`, {}),
      await get(`${api.url}/v1/tasks`),
      await get(`${api.base}/no-such-endpoint`),
    ]) {
      expectUnauthorized(res, /no credentials/);
      expect(res.headers.get('www-authenticate')).toBe(
        'Basic realm="tes-gateway", Bearer realm="tes-gateway"',
      );
    }
    expect(await api.store.getState(aliceTask)).toBe('QUEUED');
  });

  it('serves service-info without credentials', async () => {
    for (const path of [
      '/ga4gh/tes/v1/service-info',
      '/ga4gh/tes/v1/tasks/service-info',
      '/v1/service-info',
    ]) {
      expect((await get(`${api.url}${path}`)).status).toBe(200);
    }
  });

  it('refuses bad, unknown, expired and revoked tokens, and Basic None:None, with 401', async () => {
    const revoked = new TokenStore(api.redis, api.store.keys.tokens, { cacheTtlMs: 0 });
    const { token: doomed, info } = await revoked.create({ user: 'alice', lifetimeMs: DAY });
    expect((await get(`${api.base}/tasks`, bearer(doomed))).status).toBe(200);
    await revoked.revoke(info.id);
    // The API trusts what it verified for auth.tokens.cacheTtlMs (300 ms here), no longer.
    await new Promise((r) => setTimeout(r, 400));
    const expired = await revoked.create({ user: 'alice', lifetimeMs: 50 });
    await new Promise((r) => setTimeout(r, 100));
    const cases: Array<[Record<string, string>, RegExp]> = [
      [bearer(doomed), /revoked|never existed/],
      [bearer(expired.token), /expired/],
      [bearer(`${alice.slice(0, -4)}AAAA`), /not one this service issued|revoked|never existed/],
      [bearer('tesgw_nonsense'), /not one this service issued/],
      [bearer('eyJhbGciOiJSUzI1NiJ9.e30.c2ln'), /not a personal access token/],
      [basic('None', 'None'), /Basic password is not a personal access token/],
      [{ authorization: 'Digest username="alice"' }, /must be Bearer TOKEN or Basic/],
    ];
    for (const [headers, reason] of cases) {
      const res = await get(`${api.base}/tasks`, headers);
      expectUnauthorized(res, reason);
      expect(res.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
    }
  });

  it("keeps each user's tasks from the others: 404 on get and cancel, absent from the list", async () => {
    for (const view of ['MINIMAL', 'BASIC', 'FULL']) {
      const res = await get(`${api.base}/tasks/${aliceTask}?view=${view}`, bearer(bob));
      expect(res.status).toBe(404);
      expect(res.body.message).toBe(`task ${aliceTask} does not exist`);
    }
    expect((await postJson(`${api.base}/tasks/${aliceTask}:cancel`, {}, bearer(bob))).status).toBe(404);
    expect(await api.store.getState(aliceTask)).toBe('QUEUED');
    expect(await listedIds(api, bearer(bob))).toEqual([bobTask]);
    expect(await listedIds(api, bearer(alice))).toEqual([aliceTask]);
    expect(await listedIds(api, bearer(bob), `&tag_key=${OWNER_TAG}&tag_value=alice`)).toEqual([]);
    // An id that exists answers exactly as one that does not.
    const missing = await get(`${api.base}/tasks/${aliceTask.replace(/.$/, '0')}`, bearer(bob));
    expect(missing.status).toBe(404);
  });

  it('shows the owner as a tag in BASIC and FULL, and lets no client set that tag', async () => {
    const basicView = await get(`${api.base}/tasks/${aliceTask}?view=BASIC`, bearer(alice));
    expect(basicView.body.tags).toEqual({ [OWNER_TAG]: 'alice' });
    const refused = await postJson(
      `${api.base}/tasks`,
      { ...TASK, tags: { [OWNER_TAG]: 'bob' } },
      bearer(alice),
    );
    expect(refused.status).toBe(400);
    expect(refused.body.errors).toEqual([
      { path: `tags.${OWNER_TAG}`, message: expect.stringMatching(/own tag/) },
    ]);
  });

  it('lets an admin see, filter by owner and cancel every task', async () => {
    const all = await listedIds(api, bearer(carol));
    expect(all).toEqual(expect.arrayContaining([aliceTask, bobTask]));
    expect(await listedIds(api, bearer(carol), `&tag_key=${OWNER_TAG}&tag_value=bob`)).toEqual([bobTask]);
    expect((await get(`${api.base}/tasks/${aliceTask}?view=FULL`, bearer(carol))).body.tags).toEqual({
      [OWNER_TAG]: 'alice',
    });
    const extra = (await postJson(`${api.base}/tasks`, TASK, bearer(bob))).body.id;
    expect((await postJson(`${api.base}/tasks/${extra}:cancel`, {}, bearer(carol))).status).toBe(200);
    expect(await api.store.getState(extra)).toBe('CANCELED');
  });

  it("takes the token as Basic auth's password and as Nextflow's API key, in the query or a header", async () => {
    expect(await listedIds(api, basic('alice', alice))).toEqual([aliceTask]);
    expect(await listedIds(api, basic('', alice))).toEqual([aliceTask]);
    const inQuery = await get(`${api.base}/tasks/${aliceTask}?apiKey=${encodeURIComponent(alice)}`);
    expect(inQuery.body).toEqual({ id: aliceTask, state: 'QUEUED' });
    const inHeader = await get(`${api.base}/tasks/${aliceTask}`, { apiKey: alice });
    expect(inHeader.body).toEqual({ id: aliceTask, state: 'QUEUED' });
    const both = await get(`${api.base}/tasks?apiKey=${encodeURIComponent(alice)}`, bearer(alice));
    expect(both.status).toBe(401);
  });

  it('keeps API keys out of the logs', async () => {
    await get(`${api.base}/tasks/nope?view=FULL&apiKey=${encodeURIComponent(bob)}`);
    const text = logLines.join('\n');
    expect(text).toContain('apiKey=***');
    for (const token of [alice, bob, carol]) expect(text).not.toContain(token.slice(-20));
  });

  it('audits creations, cancels and refusals as JSON with the user, the task and the client address', async () => {
    const audit = logLines.map((l) => JSON.parse(l)).filter((l) => l.audit === true);
    expect(audit).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          event: 'task created',
          user: 'alice',
          taskId: aliceTask,
          client: '127.0.0.1',
        }),
        expect.objectContaining({ event: 'task canceled', user: 'carol', admin: true, owner: 'bob' }),
        expect.objectContaining({
          event: 'refused',
          client: '127.0.0.1',
          reason: expect.stringMatching(/no credentials/),
        }),
      ]),
    );
  });

  it("authenticates py-tes's Basic credentials and Bearer token (the real client)", async () => {
    const script = [
      'import sys, tes',
      'url, user, token = sys.argv[1:4]',
      "task = tes.Task(executors=[tes.Executor(image='alpine', command=['true'])])",
      'basic = tes.HTTPClient(url, user=user, password=token)',
      'bearer = tes.HTTPClient(url, token=token)',
      'made = basic.create_task(task)',
      "print(made, bearer.get_task(made, view='MINIMAL').state, len(basic.list_tasks().tasks))",
      'try:',
      '    tes.HTTPClient(url).list_tasks()',
      'except Exception as e:',
      "    print('refused', type(e).__name__)",
    ].join('\n');
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        'python3',
        ['-c', script, api.url, 'bob', bob],
        { env: { ...process.env, PYTHONPATH: join(SHARED_CLIENTS, 'py-tes') }, timeout: 60_000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      ),
    );
    const [line, refusal] = out.trim().split('\n');
    const [id, state, count] = line!.split(' ');
    expect(state).toBe('QUEUED');
    expect((await api.store.get(id!))?.owner).toEqual({ user: 'bob' });
    expect(Number(count)).toBeGreaterThanOrEqual(2);
    expect(refusal).toMatch(/^refused /);
  });

  it('refuses tokens of users who may not use the service (identity.denyUsers)', async () => {
    const root = await tokenFor(api, 'root');
    expectUnauthorized(await get(`${api.base}/tasks`, bearer(root)), /root may not use this service/);
  });
});

describe('auth.apiKeyParamName', () => {
  it('takes the API key under the name the operator chose', async () => {
    const api = await startTestApi('auth-apikey', { auth: { mode: 'tokens', apiKeyParamName: 'tes_key' } });
    try {
      const token = await tokenFor(api, 'alice');
      expect((await get(`${api.base}/tasks?tes_key=${encodeURIComponent(token)}`)).status).toBe(200);
      expect((await get(`${api.base}/tasks`, { tes_key: token })).status).toBe(200);
      expect((await get(`${api.base}/tasks?apiKey=${encodeURIComponent(token)}`)).status).toBe(401);
    } finally {
      await api.close();
    }
  });
});

describe('auth.mode oidc and tokens+oidc', () => {
  let provider: OidcProvider;
  let api: TestApi;

  beforeAll(async () => {
    provider = await startOidcProvider();
    api = await startTestApi('auth-oidc', {
      auth: {
        mode: 'tokens+oidc',
        oidc: {
          issuer: provider.issuer,
          audience: provider.audience,
          userClaim: 'email',
          userPattern: '^([a-z0-9_-]+)@uni\\.example$',
          jwksCooldownMs: 0,
          jwksCacheMaxAgeMs: 1000,
        },
      },
      identity: { admins: { groups: ['hpc-admins'] } },
    });
  });
  afterAll(async () => {
    await api.close();
    await provider.stop();
  });

  const jwt = (user: string, groups: string[] = [], expiresIn: string | number = '5m') =>
    provider.sign({ sub: `id-${user}`, email: `${user}@uni.example`, groups }, { expiresIn });

  it('maps OIDC users through the claim and pattern, keeps them apart, and makes group admins', async () => {
    const a = await jwt('alice');
    const b = await jwt('bob');
    const admin = await jwt('dana', ['hpc-admins']);
    const aliceTask = (await postJson(`${api.base}/tasks`, TASK, bearer(a))).body.id;
    const bobTask = (await postJson(`${api.base}/tasks`, TASK, bearer(b))).body.id;
    expect((await get(`${api.base}/tasks/${aliceTask}`, bearer(b))).status).toBe(404);
    expect((await postJson(`${api.base}/tasks/${aliceTask}:cancel`, {}, bearer(b))).status).toBe(404);
    expect(await listedIds(api, bearer(a))).toEqual([aliceTask]);
    expect(await listedIds(api, bearer(admin))).toEqual(expect.arrayContaining([aliceTask, bobTask]));
    // A personal access token of the same user sees the same tasks.
    expect(await listedIds(api, bearer(await tokenFor(api, 'alice')))).toEqual([aliceTask]);
  });

  it('refuses expired tokens, other audiences, impostor keys and unmapped users with 401', async () => {
    const cases: Array<[string, RegExp]> = [
      [await jwt('alice', [], Math.floor(Date.now() / 1000) - 600), /expired/],
      [await provider.sign({ sub: 'x', email: 'alice@uni.example' }, { audience: 'someone-else' }), /aud/],
      [
        await provider.sign({ sub: 'x', email: 'alice@uni.example' }, { key: await provider.foreignKey() }),
        /./,
      ],
      [await provider.sign({ sub: 'x', email: 'alice@elsewhere.example' }), /userPattern|does not match/],
      [await provider.sign({ sub: 'x', email: 'root@uni.example' }), /root may not use this service/],
    ];
    for (const [token, reason] of cases)
      expectUnauthorized(await get(`${api.base}/tasks`, bearer(token)), reason);
  });

  it('follows a key rotation: new keys are fetched, dropped keys stop working', async () => {
    const before = await jwt('alice');
    expect((await get(`${api.base}/tasks`, bearer(before))).status).toBe(200);
    await provider.rotate({ keepOld: false });
    expect((await get(`${api.base}/tasks`, bearer(await jwt('alice')))).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1200));
    expectUnauthorized(await get(`${api.base}/tasks`, bearer(before)), /./);
  });
});

describe('an identity provider that cannot be reached', () => {
  it('answers 503 with Retry-After, since the token may well be good', async () => {
    const provider = await startOidcProvider();
    const token = await provider.sign({ sub: 'x', preferred_username: 'alice' });
    await provider.stop();
    const api = await startTestApi('auth-oidc-down', {
      auth: { mode: 'oidc', oidc: { issuer: provider.issuer, audience: provider.audience, timeoutMs: 1000 } },
    });
    try {
      const res = await get(`${api.base}/tasks`, bearer(token));
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('5');
      expect(res.body.message).toMatch(/identity provider .* cannot be reached.*retry later/);
      // A token that cannot be one is still the client's mistake.
      expectUnauthorized(await get(`${api.base}/tasks`, bearer('a.b.c')), /./);
    } finally {
      await api.close();
    }
  });
});

describe('identity.policy at creation', () => {
  let api: TestApi;
  let alice: string;
  let bob: string;
  const base = mkdtempSync('/tmp/tesgw-policy-');

  beforeAll(async () => {
    for (const d of ['home/alice', 'home/bob', 'projects/genomics', 'site'])
      mkdirSync(join(base, d), { recursive: true });
    api = await startTestApi('auth-policy', {
      auth: { mode: 'tokens' },
      storage: { allowedRoots: [join(base, 'site')] },
      identity: {
        policy: {
          everyone: { roots: [join(base, 'home/{user}')], accounts: ['general'], qos: ['normal'] },
          groups: {
            genomics: {
              members: ['alice'],
              roots: [{ path: join(base, 'projects/{group}'), writable: true }],
              accounts: ['gen'],
            },
          },
          users: { bob: { partitions: ['short'] } },
        },
      },
    });
    alice = await tokenFor(api, 'alice');
    bob = await tokenFor(api, 'bob');
  });
  afterAll(() => api.close());

  const withFiles = (input: string, output: string, bp: Record<string, string> = {}) => ({
    ...TASK,
    inputs: [{ url: `file://${input}`, path: '/in/x' }],
    outputs: [{ url: output, path: '/out/y' }],
    resources: { backend_parameters: bp },
  });

  it('lets each user name their own places, their groups and the site roots', async () => {
    const ok = [
      [alice, withFiles(join(base, 'home/alice/x'), join(base, 'projects/genomics/y'), { account: 'gen' })],
      [
        alice,
        withFiles(join(base, 'site/x'), `file://${join(base, 'home/alice/y')}`, { account: 'general' }),
      ],
      [
        bob,
        withFiles(join(base, 'home/bob/x'), join(base, 'home/bob/y'), { partition: 'short', qos: 'normal' }),
      ],
    ] as const;
    for (const [token, task] of ok) {
      const res = await postJson(`${api.base}/tasks`, task, bearer(token));
      expect([res.status, res.body]).toEqual([200, { id: expect.any(String) }]);
    }
  });

  it("refuses another user's places and Slurm choices outside the policy with a 400 naming each", async () => {
    const before = await api.store.countInState('QUEUED');
    const res = await postJson(
      `${api.base}/tasks`,
      withFiles(join(base, 'home/alice/x'), join(base, 'projects/genomics/../../home/alice/y'), {
        account: 'gen',
        partition: 'long',
        qos: 'high',
      }),
      bearer(bob),
    );
    expect(res.status).toBe(400);
    expect(res.body.errors.map((e: { path: string }) => e.path).sort()).toEqual([
      'inputs[0].url',
      'outputs[0].url',
      'resources.backend_parameters.account',
      'resources.backend_parameters.partition',
      'resources.backend_parameters.qos',
    ]);
    expect(res.body.message).toMatch(/bob may not use the account "gen"; allowed: general/);
    expect(await api.store.countInState('QUEUED')).toBe(before);
  });
});

describe('redactUrl with the API key parameter', () => {
  it('hides it however it is spelt, and leaves the other parameters', () => {
    expect(redactUrl('/v1/tasks?view=FULL&tes_k=s3cret&x=1', ['tes_k'])).toBe(
      '/v1/tasks?view=FULL&tes_k=***&x=1',
    );
    expect(redactUrl('/v1/tasks?tes%5Fk=s3cret', ['tes_k'])).toBe('/v1/tasks?tes%5Fk=***');
    expect(redactUrl('/v1/tasks', ['tes_k'])).toBe('/v1/tasks');
  });
});

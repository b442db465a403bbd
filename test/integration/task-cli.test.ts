import { jest } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TokenStore } from '../../src/identity/tokens.js';
import { Keys } from '../../src/store/keys.js';
import { MAIN, requireBuiltProgram, type ProgramRun } from '../helpers/built-program.js';
import { freePort } from '../helpers/free-port.js';
import { startTestGateway, waitFor, type TestGateway } from '../helpers/gateway.js';
import { connect } from '../helpers/redis.js';

/**
 * `tes-gateway task ...` as a user runs it: the built program (npm run build) against a real gateway
 * (local backend, real executors) and against a TES server of another shape written here from the
 * spec, so that the command depends on TES only, not on this gateway's ways.
 */
jest.setTimeout(180_000);

beforeAll(requireBuiltProgram);

/** `tes-gateway task ARGS` with standard input `stdin`; TES_URL and TES_TOKEN only as `env` sets them. */
function task(
  args: readonly string[],
  options: { env?: Record<string, string>; stdin?: string } = {},
): Promise<ProgramRun> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && k !== 'TES_URL' && k !== 'TES_TOKEN') env[k] = v;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'task', ...args], {
      env: { ...env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.end(options.stdin ?? '');
  });
}

function taskFile(body: unknown): string {
  const file = join(mkdtempSync(join(tmpdir(), 'tesgw-task-cli-')), 'task.json');
  writeFileSync(file, JSON.stringify(body));
  return file;
}

describe('tes-gateway task, against the gateway', () => {
  let gw: TestGateway;
  // Each run's own names and tags, so the filters see only this run's tasks.
  const run = `cli${Date.now().toString(36)}`;
  let ok: string;
  let failing: string;

  beforeAll(async () => {
    gw = await startTestGateway('task-cli', {
      backend: 'local',
      container: { runtime: 'bwrap-host' },
      local: { maxConcurrentTasks: 4 },
    });
  });
  afterAll(async () => {
    await gw.close();
  });

  it('creates tasks from a file and from standard input, and waits with their outcome as exit code', async () => {
    // The server's root: the command finds the API below it, at /ga4gh/tes/v1.
    const url = ['--url', gw.url];
    const created = await task([
      'create',
      taskFile({
        name: `${run}-ok`,
        tags: { run, kind: 'ok' },
        executors: [{ image: 'alpine', command: ['sh', '-c', 'echo out-line; echo err-line >&2'] }],
      }),
      ...url,
    ]);
    expect(created).toMatchObject({ code: 0, stderr: '' });
    expect(created.stdout).toMatch(/^\S+\n$/);
    ok = created.stdout.trim();

    const fromStdin = await task(['create', '-', '--json'], {
      env: { TES_URL: gw.base },
      stdin: JSON.stringify({
        name: `${run}-failing`,
        tags: { run, kind: 'failing' },
        executors: [{ image: 'alpine', command: ['sh', '-c', 'exit 3'] }],
      }),
    });
    expect(fromStdin.code).toBe(0);
    failing = (JSON.parse(fromStdin.stdout) as { id: string }).id;
    expect((await waitFor(gw.base, failing)).state).toBe('EXECUTOR_ERROR');

    const waited = await task(['wait', ok, ...url]);
    expect(waited.code).toBe(0);
    const lines = waited.stdout.trimEnd().split('\n');
    for (const line of lines)
      expect(line).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\S+Z  ${ok}  [A-Z_]+$`));
    expect(lines.at(-1)).toMatch(/ COMPLETE$/);

    expect(await task(['wait', failing, ...url])).toMatchObject({ code: 1 });
    const both = await task(['wait', ok, failing, '--json', ...url]);
    expect(both.code).toBe(1);
    expect(JSON.parse(both.stdout)).toEqual([
      { id: ok, state: 'COMPLETE' },
      { id: failing, state: 'EXECUTOR_ERROR' },
    ]);
  });

  it('lists tasks filtered by name prefix, state and tags, as a table and as JSON', async () => {
    const url = ['--url', gw.base];
    const table = await task(['list', '--name-prefix', `${run}-`, ...url]);
    expect(table.code).toBe(0);
    const rows = table.stdout.trimEnd().split('\n');
    expect(rows[0]).toMatch(/^ID\s+STATE\s+CREATED\s+NAME\s+TAGS$/);
    // Newest first.
    expect(rows.slice(1)).toEqual([
      expect.stringMatching(
        new RegExp(`^${failing}  EXECUTOR_ERROR  \\S+Z\\s+${run}-failing\\s+run=${run} kind=failing`),
      ),
      expect.stringMatching(new RegExp(`^${ok}\\s+COMPLETE\\s+\\S+Z\\s+${run}-ok\\s+run=${run} kind=ok`)),
    ]);

    const ids = async (...args: string[]): Promise<string[]> => {
      const listed = await task(['list', '--json', ...args, ...url]);
      expect(listed.code).toBe(0);
      return (JSON.parse(listed.stdout) as { tasks: { id: string }[] }).tasks.map((t) => t.id);
    };
    expect(await ids('--name-prefix', `${run}-`, '--state', 'complete')).toEqual([ok]);
    expect(await ids('--tag', `run=${run}`, '--tag', 'kind=failing')).toEqual([failing]);
    expect(await ids('--tag', `run=${run}`, '--tag', 'kind')).toEqual([failing, ok]);
    expect(await ids('--tag', `run=${run}`, '--page-size', '1', '--all')).toEqual([failing, ok]);
    const firstPage = await task(['list', '--tag', `run=${run}`, '--page-size', '1', ...url]);
    expect(firstPage.stdout.trimEnd().split('\n')).toHaveLength(2);
    expect(firstPage.stderr).toMatch(
      /^tes-gateway: more tasks follow: --all lists them all, --page-token \S+ the next page\n$/,
    );
  });

  it('shows a task, its logs, and the server message for an unknown one', async () => {
    const url = ['--url', gw.base];
    const shown = await task(['get', ok, ...url]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(`id          ${ok}\nstate       COMPLETE\nname        ${run}-ok\n`);
    expect(shown.stdout).toMatch(
      /\nexecutor 0  alpine  sh -c 'echo out-line; echo err-line >&2'\n  exit      0 \(/,
    );

    const full = await task(['get', ok, '--view', 'FULL', '--json', ...url]);
    expect(JSON.parse(full.stdout)).toMatchObject({
      id: ok,
      state: 'COMPLETE',
      logs: [{ logs: [{ exit_code: 0, stdout: 'out-line\n', stderr: 'err-line\n' }] }],
    });

    const logs = await task(['logs', ok, ...url]);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toMatch(
      /^==> executor 0 stdout <==\nout-line\n\n==> executor 0 stderr <==\nerr-line\n\n==> system logs <==\n(.+\n)+$/,
    );
    expect(logs.stdout).toContain('container images ignored (alpine)');

    const missing = await task(['get', 'no-such-task', ...url]);
    expect(missing.code).toBe(4);
    const answer = await fetch(`${gw.base}/tasks/no-such-task?view=BASIC`);
    const { message } = (await answer.json()) as { message: string };
    expect(missing.stderr).toBe(
      `tes-gateway: GET ${gw.base}/tasks/no-such-task?view=BASIC: the server answered 404 Not Found: ${message}\n`,
    );
  });

  it('cancels a running task (wait exits 3), answers as the server does for an ended one, and follows logs', async () => {
    const url = ['--url', gw.base];
    const long = (
      await task(['create', taskFile({ executors: [{ image: 'alpine', command: ['sleep', '60'] }] }), ...url])
    ).stdout.trim();
    await waitFor(gw.base, long, ['RUNNING'], 30_000);
    const canceled = await task(['cancel', long, ...url]);
    expect(canceled.code).toBe(0);
    expect(canceled.stdout).toMatch(new RegExp(`^TASK\\s+STATE\\n${long}  (CANCELING|CANCELED)\\n$`));
    expect(await task(['wait', long, ...url])).toMatchObject({ code: 3 });

    // TES servers answer 200 to the cancel of an ended task, and change nothing.
    const again = await task(['cancel', ok, '--json', ...url]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual([{ id: ok, state: 'COMPLETE' }]);

    const slow = (
      await task([
        'create',
        taskFile({
          executors: [{ image: 'alpine', command: ['sh', '-c', 'echo first; sleep 2; echo second; exit 5'] }],
        }),
        ...url,
      ])
    ).stdout.trim();
    const followed = await task(['logs', slow, '--follow', ...url]);
    expect(followed.code).toBe(1);
    // The gateway shows executor output once the task has ended; its system logs grow before.
    expect(followed.stdout).toMatch(
      /(^|\n)==> executor 0 stdout <==\nfirst\nsecond\n\n==> system logs <==\n/,
    );
    expect(followed.stdout.match(/first/g)).toHaveLength(1);
    expect(followed.stdout).toMatch(/\nexecutor 0 exited 5\n$/);
    expect(followed.stderr).toBe(`tes-gateway: task ${slow} ended EXECUTOR_ERROR\n`);

    const asJson = await task(['logs', slow, '--follow', '--json', ...url]);
    const lines = asJson.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.filter((l) => l.stream === 'stdout')).toEqual([
      { label: 'executor 0 stdout', attempt: 0, executor: 0, stream: 'stdout', text: 'first\nsecond\n' },
    ]);
    expect(lines.at(-1)).toEqual({ id: slow, state: 'EXECUTOR_ERROR' });
  });

  it('names the URL it cannot reach, with its own exit code', async () => {
    const url = `http://127.0.0.1:${await freePort()}/ga4gh/tes/v1`;
    const refused = await task(['list', '--url', url]);
    expect(refused.code).toBe(5);
    expect(refused.stderr).toMatch(
      new RegExp(
        `^tes-gateway: GET ${url}/tasks\\?view=BASIC: cannot reach the server: connect ECONNREFUSED`,
      ),
    );
  });

  it('refuses a task file that is not JSON, with the usage exit code', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'tesgw-task-cli-')), 'bad.json');
    writeFileSync(file, '{"executors": [');
    const bad = await task(['create', file, '--url', gw.base]);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(new RegExp(`^tes-gateway: the task in ${file} is not JSON: `));
    const none = await task(['create', '/nonexistent/task.json', '--url', gw.base]);
    expect(none).toMatchObject({
      code: 64,
      stderr: expect.stringContaining('cannot read the task from /nonexistent/task.json: ENOENT'),
    });
  });
});

describe('tes-gateway task, against the gateway with tokens', () => {
  let gw: TestGateway;
  let token: string;

  beforeAll(async () => {
    gw = await startTestGateway('task-cli-auth', {
      backend: 'local',
      container: { runtime: 'bwrap-host' },
      auth: { mode: 'tokens', tokens: { cacheTtlMs: 0 } },
    });
    const redis = connect();
    try {
      const store = new TokenStore(redis, new Keys(gw.prefix).tokens, { cacheTtlMs: 0 });
      token = (await store.create({ user: 'alice', lifetimeMs: 86_400_000 })).token;
    } finally {
      redis.disconnect();
    }
  });
  afterAll(async () => {
    await gw.close();
  });

  it('sends the token as a bearer token, and shows the server message for a wrong one without the token', async () => {
    const created = await task(['create', '-'], {
      env: { TES_URL: gw.url, TES_TOKEN: token },
      stdin: JSON.stringify({ executors: [{ image: 'alpine', command: ['true'] }] }),
    });
    expect(created.code).toBe(0);
    const id = created.stdout.trim();
    const shown = await task(['get', id, '--json', '--view', 'BASIC'], {
      env: { TES_URL: gw.url, TES_TOKEN: token },
    });
    expect(JSON.parse(shown.stdout)).toMatchObject({ id, tags: { 'tes-gateway/owner': 'alice' } });

    const wrong = `${token.slice(0, -4)}AAAA`;
    const refused = await task(['list', '--url', gw.base, '--token', wrong]);
    expect(refused.code).toBe(4);
    const answer = await fetch(`${gw.base}/tasks?view=BASIC`, {
      headers: { authorization: `Bearer ${wrong}` },
    });
    expect(answer.status).toBe(401);
    const { message } = (await answer.json()) as { message: string };
    expect(refused.stderr).toBe(
      `tes-gateway: GET ${gw.base}/tasks?view=BASIC: the server answered 401 Unauthorized: ${message}\n`,
    );
    expect(refused.stderr + refused.stdout).not.toContain(wrong.slice(10));

    const anonymous = await task(['list', '--url', gw.base]);
    expect(anonymous.code).toBe(4);
    expect(anonymous.stderr).toContain('the server answered 401 Unauthorized: ');
  });
});

/** One step of a stub task's life: each GET of the task shows the next one, the last one for ever. */
interface Step {
  state?: string;
  stdout?: string;
}

/** How a stub task lives, chosen by its name's first word. */
const LIVES: Record<string, Step[]> = {
  ok: [{ state: 'QUEUED' }, { state: 'RUNNING' }, { state: 'COMPLETE' }],
  crash: [{ state: 'RUNNING' }, { state: 'SYSTEM_ERROR' }],
  canceled: [{ state: 'CANCELED' }],
  preempted: [{ state: 'RUNNING' }, { state: 'PREEMPTED' }],
  forever: [{ state: 'RUNNING' }],
  // A server may leave the state out (Funnel does for UNKNOWN).
  stateless: [{}],
  follow: [
    { state: 'RUNNING', stdout: '' },
    { state: 'RUNNING', stdout: 'a\n' },
    { state: 'RUNNING', stdout: 'a\nb\n' },
    // A server that keeps only a tail has dropped the start.
    { state: 'COMPLETE', stdout: 'b\nc\n' },
  ],
};

interface StubTask {
  id: string;
  name?: string;
  tags?: Record<string, string>;
  executors: unknown[];
  gets: number;
}

/**
 * A TES 1.1 server written from the spec alone, unlike the gateway in every optional way: its API
 * is at /api/tes, its tasks have no creation_time, no optional field it need not send, pages of two
 * by default; its errors say `msg`, and the proxy in front of it answers an HTML 502 for
 * /tasks/broken; it answers 503 twice for /tasks/flaky before it shows that task; it refuses to
 * cancel an ended task with 400.
 */
class StubTes {
  readonly tasks: StubTask[] = [];
  readonly requests: { method: string; url: string; authorization?: string }[] = [];
  private server!: Server;
  private flaky = 0;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c: string) => (body += c));
      req.on('end', () => this.answer(req, res, body));
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/api/tes`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  add(name: string, tags?: Record<string, string>): string {
    const id = `stub-${this.tasks.length + 1}`;
    this.tasks.unshift({
      id,
      name,
      ...(tags && { tags }),
      executors: [{ image: 'alpine', command: ['true'] }],
      gets: 0,
    });
    return id;
  }

  private step(t: StubTask, advance: boolean): Step {
    const life = LIVES[(t.name ?? '').split('-')[0]!] ?? [{ state: 'QUEUED' }];
    const step = life[Math.min(t.gets, life.length - 1)]!;
    if (advance) t.gets++;
    return step;
  }

  private shape(t: StubTask, view: string | null, advance: boolean): Record<string, unknown> {
    const step = this.step(t, advance);
    const minimal = { id: t.id, ...(step.state !== undefined && { state: step.state }) };
    if (view === null || view === 'MINIMAL') return minimal;
    const basic = {
      ...minimal,
      ...(t.name !== undefined && { name: t.name }),
      ...(t.tags !== undefined && { tags: t.tags }),
      executors: t.executors,
    };
    if (view === 'BASIC' || step.stdout === undefined) return basic;
    return { ...basic, logs: [{ logs: [{ exit_code: 0, stdout: step.stdout }] }] };
  }

  private answer(req: IncomingMessage, res: ServerResponse, body: string): void {
    const url = new URL(req.url!, 'http://stub');
    this.requests.push({
      method: req.method!,
      url: `${url.pathname}${url.search}`,
      ...(req.headers.authorization !== undefined && { authorization: req.headers.authorization }),
    });
    const json = (status: number, value: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
    };
    const path = url.pathname.startsWith('/api/tes/') ? url.pathname.slice('/api/tes'.length) : undefined;
    const view = url.searchParams.get('view');
    if (req.method === 'GET' && path === '/service-info') {
      return json(200, {
        id: 'org.example.stub',
        name: 'stub',
        type: { group: 'org.ga4gh', artifact: 'tes', version: '1.1.0' },
      });
    }
    if (req.method === 'POST' && path === '/tasks') {
      const task = JSON.parse(body) as { name?: string; tags?: Record<string, string> };
      return json(200, { id: this.add(task.name ?? 'ok', task.tags) });
    }
    if (req.method === 'GET' && path === '/tasks') return json(200, this.page(url.searchParams, view));
    const match = /^\/tasks\/([^/:]+)(:cancel)?$/.exec(path ?? '');
    const id = match && decodeURIComponent(match[1]!);
    if (id === 'broken') {
      res.writeHead(502, { 'content-type': 'text/html' });
      return void res.end(
        '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n',
      );
    }
    if (id === 'flaky' && this.flaky++ < 2) return json(503, { msg: 'busy, try later' });
    const t =
      this.tasks.find((x) => x.id === id) ?? (id === 'flaky' ? this.named('flaky', 'ok-flaky') : undefined);
    if (!match || !t) return json(404, { msg: `task ${id ?? '?'} not found`, status_code: 404 });
    if (req.method === 'GET' && !match[2]) return json(200, this.shape(t, view, true));
    if (req.method === 'POST' && match[2]) {
      const state = this.step(t, false).state;
      if (['COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR', 'CANCELED', 'PREEMPTED'].includes(state ?? '')) {
        return json(400, { msg: `task ${t.id} is already ${state}`, status_code: 400 });
      }
      return json(200, {});
    }
    json(405, { msg: 'method not allowed' });
  }

  private named(id: string, name: string): StubTask {
    const t: StubTask = { id, name, executors: [], gets: 0 };
    this.tasks.push(t);
    return t;
  }

  private page(q: URLSearchParams, view: string | null): Record<string, unknown> {
    // Broken cursors: one that comes back the same, one that never ends.
    if (q.get('name_prefix') === 'loop') return { tasks: [], next_page_token: 'again' };
    if (q.get('name_prefix') === 'endless') {
      return { tasks: [], next_page_token: `e${Number((q.get('page_token') ?? 'e0').slice(1)) + 1}` };
    }
    const keys = q.getAll('tag_key');
    const values = q.getAll('tag_value');
    const matching = this.tasks.filter(
      (t) =>
        (!q.get('name_prefix') || (t.name ?? '').startsWith(q.get('name_prefix')!)) &&
        (!q.get('state') || this.step(t, false).state === q.get('state')) &&
        keys.every((k, i) => t.tags?.[k] !== undefined && (!values[i] || t.tags[k] === values[i])),
    );
    const size = Number(q.get('page_size') ?? 2);
    const offset = Number((q.get('page_token') ?? 'p0').slice(1));
    const tasks = matching.slice(offset, offset + size).map((t) => this.shape(t, view, false));
    return offset + size < matching.length ? { tasks, next_page_token: `p${offset + size}` } : { tasks };
  }
}

describe('tes-gateway task, against a TES server of another shape', () => {
  const stub = new StubTes();
  const auth = { TES_TOKEN: 'stub-token' };
  beforeAll(async () => {
    await stub.start();
  });
  afterAll(async () => {
    await stub.close();
  });
  const tes = (args: readonly string[], stdin?: string): Promise<ProgramRun> =>
    task(args, { env: { TES_URL: stub.url, ...auth }, ...(stdin !== undefined && { stdin }) });

  it('creates and waits, exiting with each outcome, the worst of several, and 6 on --timeout', async () => {
    const created = await tes(
      ['create', '-'],
      JSON.stringify({ name: 'ok-1', executors: [{ image: 'alpine', command: ['true'] }] }),
    );
    expect(created).toMatchObject({ code: 0, stdout: 'stub-1\n' });
    const waited = await tes(['wait', 'stub-1']);
    expect(waited.code).toBe(0);
    expect(waited.stdout.replace(/^\S+Z {2}/gm, '')).toBe(
      'stub-1  QUEUED\nstub-1  RUNNING\nstub-1  COMPLETE\n',
    );

    const ids = Object.fromEntries(
      ['crash', 'canceled', 'preempted', 'forever', 'stateless'].map((n) => [n, stub.add(n)]),
    );
    expect((await tes(['wait', ids.crash!])).code).toBe(2);
    expect((await tes(['wait', ids.canceled!])).code).toBe(3);
    expect((await tes(['wait', ids.preempted!])).code).toBe(3);
    const worst = await tes(['wait', stub.add('ok-2'), stub.add('crash-2'), '--json']);
    expect(worst.code).toBe(2);
    expect(JSON.parse(worst.stdout)).toEqual([
      { id: expect.any(String), state: 'COMPLETE' },
      { id: expect.any(String), state: 'SYSTEM_ERROR' },
    ]);
    const started = Date.now();
    const timedOut = await tes(['wait', ids.forever!, ids.stateless!, '--timeout', '2s']);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(timedOut.code).toBe(6);
    expect(timedOut.stderr).toBe(
      `tes-gateway: gave up waiting after 2 s: not ended yet: ${ids.forever} (RUNNING), ${ids.stateless} (UNKNOWN)\n`,
    );
    // The token went as a bearer token, with every request.
    expect(new Set(stub.requests.map((r) => r.authorization))).toEqual(new Set(['Bearer stub-token']));
  });

  it('asks again when the server is briefly unavailable while waiting', async () => {
    const waited = await tes(['wait', 'flaky']);
    expect(waited.code).toBe(0);
    expect(waited.stderr).toBe(
      `tes-gateway: GET ${stub.url}/tasks/flaky?view=MINIMAL: the server answered 503 Service Unavailable: busy, try later; trying again in 1 s\n` +
        `tes-gateway: GET ${stub.url}/tasks/flaky?view=MINIMAL: the server answered 503 Service Unavailable: busy, try later; trying again in 2 s\n`,
    );
  });

  it('lists with filters sent as the spec pairs them, and follows next_page_token', async () => {
    for (const n of [1, 2, 3, 4, 5]) stub.add(`batch-${n}`, { team: n % 2 ? 'odd' : 'even', batch: '' });
    const firstPage = await tes(['list', '--name-prefix', 'batch-']);
    expect(firstPage.code).toBe(0);
    expect(firstPage.stdout).toMatch(
      /^ID\s+STATE\s+CREATED\s+NAME\s+TAGS\nstub-\d+\s+QUEUED\s+-\s+batch-5\s+team=odd batch\n/,
    );
    expect(firstPage.stderr).toBe(
      'tes-gateway: more tasks follow: --all lists them all, --page-token p2 the next page\n',
    );
    const all = await tes(['list', '--name-prefix', 'batch-', '--all', '--json', '--view', 'minimal']);
    const listed = JSON.parse(all.stdout) as {
      tasks: { id: string; name?: string }[];
      next_page_token?: string;
    };
    expect(listed.tasks).toHaveLength(5);
    expect(listed.next_page_token).toBeUndefined();
    expect(listed.tasks[0]).toEqual({ id: expect.any(String), state: 'QUEUED' });

    const odd = await tes([
      'list',
      '--json',
      '--tag',
      'team=odd',
      '--tag',
      'batch',
      '--state',
      'QUEUED',
      '--page-size',
      '10',
    ]);
    expect((JSON.parse(odd.stdout) as { tasks: { name: string }[] }).tasks.map((t) => t.name)).toEqual([
      'batch-5',
      'batch-3',
      'batch-1',
    ]);
    expect(stub.requests.at(-1)!.url).toBe(
      '/api/tes/tasks?view=BASIC&state=QUEUED&tag_key=team&tag_key=batch&tag_value=odd&tag_value=&page_size=10',
    );
  });

  it('stops --all at a cursor that repeats, and after 100 pages', async () => {
    const looping = await tes(['list', '--all', '--name-prefix', 'loop']);
    expect(looping).toEqual({
      code: 4,
      stdout: '',
      stderr: `tes-gateway: GET ${stub.url}/tasks: the answer is not a TES one: next_page_token again came twice\n`,
    });
    const endless = await tes(['list', '--all', '--name-prefix', 'endless']);
    expect(endless).toEqual({
      code: 0,
      stdout: 'no tasks\n',
      stderr: 'tes-gateway: stopped after 100 pages (0 tasks); more follow from --page-token e100\n',
    });
  });

  it("shows a task without optional fields, and each error with the server's words", async () => {
    const id = stub.add('stateless');
    const shown = await tes(['get', id]);
    expect(shown).toMatchObject({
      code: 0,
      stdout: `id          ${id}\nstate       UNKNOWN\nname        stateless\nexecutor 0  alpine  true\n`,
    });

    const missing = await tes(['get', 'nope']);
    expect(missing).toEqual({
      code: 4,
      stdout: '',
      stderr: `tes-gateway: GET ${stub.url}/tasks/nope?view=BASIC: the server answered 404 Not Found: task nope not found\n`,
    });
    const broken = await tes(['get', 'broken']);
    expect(broken).toEqual({
      code: 4,
      stdout: '',
      stderr: `tes-gateway: GET ${stub.url}/tasks/broken?view=BASIC: the server answered 502 Bad Gateway: 502 Bad Gateway\n`,
    });
  });

  it("cancels, and passes on the server's refusal to cancel an ended task", async () => {
    const running = stub.add('forever');
    const canceled = await tes(['cancel', running]);
    expect(canceled).toMatchObject({ code: 0, stderr: '' });
    expect(canceled.stdout).toMatch(new RegExp(`^TASK\\s+STATE\n${running}  RUNNING\n$`));
    const done = stub.add('canceled');
    const refused = await tes(['cancel', done]);
    expect(refused).toEqual({
      code: 4,
      stdout: '',
      stderr: `tes-gateway: cannot cancel ${done}: POST ${stub.url}/tasks/${done}:cancel: the server answered 400 Bad Request: task ${done} is already CANCELED\n`,
    });
  });

  it('follows logs whose tail drops its start, printing each line once', async () => {
    const id = stub.add('follow');
    const followed = await tes(['logs', id, '--follow']);
    expect(followed).toEqual({
      code: 0,
      stdout: '==> executor 0 stdout <==\na\nb\nc\n',
      stderr: `tes-gateway: task ${id} ended COMPLETE\n`,
    });
    const once = await tes(['logs', id]);
    expect(once).toEqual({ code: 0, stdout: '==> executor 0 stdout <==\nb\nc\n', stderr: '' });
    const none = await tes(['logs', stub.add('forever')]);
    expect(none.stderr).toMatch(/has no logs yet \(RUNNING\)/);
  });

  it('redraws one line per task on a terminal', async () => {
    const ids = [stub.add('ok-tty'), stub.add('crash-tty')];
    // script(1) gives the program a terminal as standard output.
    const command = [process.execPath, MAIN, 'task', 'wait', ...ids].join(' ');
    const onTerminal = await new Promise<ProgramRun>((resolve) => {
      const child = spawn('script', ['-qec', command, '/dev/null'], {
        env: { ...process.env, TES_URL: stub.url, TES_TOKEN: 'stub-token' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.once('close', (code) => resolve({ code: code ?? 1, stdout, stderr: '' }));
    });
    expect(onTerminal.code).toBe(2);
    const frames = onTerminal.stdout.replace(/\r/g, '').split('\x1b[3A');
    expect(frames.length).toBeGreaterThan(1);
    expect(frames.at(-1)).toMatch(
      new RegExp(
        `^\x1b\\[2KTASK\\s+STATE\\s+TIME\n\x1b\\[2K${ids[0]}\\s+COMPLETE\\s+\\d+s\n\x1b\\[2K${ids[1]}\\s+SYSTEM_ERROR\\s+\\d+s\n$`,
      ),
    );
  });
});

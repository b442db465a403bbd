import { jest } from '@jest/globals';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { postJson, startTestApi, type TestApi } from '../helpers/api.js';
import { sendRaw } from '../helpers/raw-http.js';
import {
  FAKE_APPTAINER,
  requireSlurm,
  ROOT,
  startTestGateway,
  testImages,
  waitFor,
  type TestGateway,
} from '../helpers/gateway.js';
import { TokenStore } from '../../src/identity/tokens.js';
import type { TesState } from '../../src/tes/state.js';
import type { TesTaskLog } from '../../src/tes/types.js';

/**
 * The dashboard at /ui in a real browser (Debian's chromium, driven by playwright-core) against real
 * gateways: one API whose tasks the tests move from state to state through the store, one with
 * tokens, and one that runs a task on the real single-node Slurm. Screenshots for people to look
 * at go to .tmp/dashboard-list.png and .tmp/dashboard-task.png.
 */
jest.setTimeout(240_000);

const CHROMIUM = process.env.TES_TEST_CHROMIUM ?? '/usr/bin/chromium';
const HOSTILE_NAME = '<img src=x onerror="window.__pwned = 1">';
const HOSTILE_TAG = '</code><script>window.__pwned = 2</script>';
const TOKEN_KEY = 'tes-gateway.token';

let browser: Browser;
let api: TestApi;
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `the dashboard tests need Debian's chromium at ${CHROMIUM} (apt-get install chromium, as ` +
        'scripts/install-deps.sh does; TES_TEST_CHROMIUM names another)',
    );
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  api = await startTestApi('ui');
});
afterAll(async () => {
  await browser?.close();
  await api?.close();
});
afterEach(() => {
  // A refused inline script or style, a broken module or a thrown error all end up here.
  const errors = pageErrors.splice(0);
  expect(errors).toEqual([]);
});

/** A laptop-sized tab on `url`, updating every second; what goes wrong in it fails the test. */
async function open(url: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // The browser reports each 401 and 404 the page asked for, and each request a test cut off;
    // those are expected, nothing else is.
    const expected = /^Failed to load resource: (the server responded with a status of 40[14]|net::ERR_)/;
    if (msg.type() === 'error' && !expected.test(msg.text())) pageErrors.push(`console: ${msg.text()}`);
  });
  await page.goto(url);
  return page;
}

function dashboardUrl(base: { url: string }, hash = '#/'): string {
  return `${base.url}/ui/?refresh=1000${hash}`;
}

/** Polls `check` until it holds; the error says what was awaited and what was last seen. */
async function until<T>(
  what: string,
  read: () => Promise<T>,
  check: (value: T) => boolean,
  timeoutMs = 15_000,
) {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await read();
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)}`);
}

interface Row {
  id: string;
  name: string;
  state: string;
}

async function rows(page: Page): Promise<Row[]> {
  const ids = await page
    .locator('#tasks tbody tr')
    .evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id') ?? ''));
  const names = await page.locator('#tasks tbody tr th a').allTextContents();
  const states = await page.locator('#tasks tbody tr .state').allTextContents();
  return ids.map((id, i) => ({ id, name: names[i]!, state: states[i]! }));
}

async function rowsUntil(page: Page, what: string, check: (rows: Row[]) => boolean): Promise<Row[]> {
  return until(what, () => rows(page), check);
}

async function counts(page: Page): Promise<Record<string, string>> {
  const links = page.locator('#counts a');
  const states = await links.evaluateAll((as) => as.map((a) => a.getAttribute('data-state') ?? ''));
  const values = await page.locator('#counts .count-value').allTextContents();
  return Object.fromEntries(states.map((s, i) => [s, values[i]!]));
}

async function createTask(
  target: TestApi,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  const res = await postJson(
    `${target.base}/tasks`,
    { executors: [{ image: 'alpine', command: ['true'] }], ...body },
    headers,
  );
  expect(res.status).toBe(200);
  return res.body.id as string;
}

/** Moves a stored task on through legal transitions, as the workers and the reconciler would. */
async function move(target: TestApi, id: string, ...states: TesState[]) {
  for (const state of states) expect((await target.store.transition(id, state)).outcome).toBe('ok');
}

describe('its files', () => {
  it('are served at /ui with strict security headers, without credentials, and no inline code', async () => {
    const redirect = await fetch(`${api.url}/ui?refresh=2000`, { redirect: 'manual' });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get('location')).toBe('ui/?refresh=2000');

    const index = await fetch(`${api.url}/ui/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = index.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/default-src 'self'/);
    expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    expect(index.headers.get('x-content-type-options')).toBe('nosniff');
    expect(index.headers.get('referrer-policy')).toBe('no-referrer');
    expect(index.headers.get('cache-control')).toBe('no-cache');
    const html = await index.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=/i);

    const script = await fetch(`${api.url}/ui/dashboard.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toMatch(/javascript/);
    // fetch() turns a conditional request into a no-cache one; a browser revalidating sends this.
    const again = await sendRaw(api.url, {
      method: 'GET',
      target: '/ui/dashboard.js',
      headers: [['If-None-Match', script.headers.get('etag') ?? '']],
    });
    expect(again.status).toBe(304);

    expect((await fetch(`${api.url}/ui/missing.js`)).status).toBe(404);
    for (const target of ['/ui/../package.json', '/ui/%2e%2e/package.json', '/ui/.hidden']) {
      const escape = await sendRaw(api.url, { method: 'GET', target });
      expect([target, escape.status, escape.body]).toEqual([target, 404, 'not found\n']);
    }
    const post = await fetch(`${api.url}/ui/`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  it('are not served when server.dashboard is false', async () => {
    const off = await startTestApi('ui-off', { server: { dashboard: false } });
    try {
      expect((await fetch(`${off.url}/ui/`)).status).toBe(404);
      expect((await fetch(`${off.url}/ui/dashboard.js`)).status).toBe(404);
    } finally {
      await off.close();
    }
  });
});

describe('the task list', () => {
  const ids: Record<string, string> = {};
  beforeAll(async () => {
    // Oldest first: the list shows the newest first.
    ids.alignA = await createTask(api, { name: 'align-A', tags: { sample: 'A', project: 'p1' } });
    ids.alignB = await createTask(api, { name: 'align-B', tags: { sample: 'B', project: 'p1' } });
    ids.alignC = await createTask(api, { name: 'align-C', tags: { sample: 'C' } });
    ids.callA = await createTask(api, { name: 'call-A', tags: { sample: 'A' } });
    ids.callB = await createTask(api, { name: 'call-B', tags: { sample: 'B' } });
    await move(api, ids.alignA, 'INITIALIZING', 'RUNNING', 'COMPLETE');
    await move(api, ids.alignB, 'RUNNING');
    await move(api, ids.callA, 'SYSTEM_ERROR');
  });

  it('shows every task with counts by state, and filters by state, name prefix and tag', async () => {
    // Without the trailing slash, as people type it.
    const page = await open(`${api.url}/ui?refresh=1000`);
    expect(new URL(page.url()).pathname).toBe('/ui/');
    const all = await rowsUntil(page, 'five tasks', (r) => r.length === 5);
    expect(all.map((r) => r.name)).toEqual(['call-B', 'call-A', 'align-C', 'align-B', 'align-A']);
    expect(all.map((r) => r.state)).toEqual(['QUEUED', 'SYSTEM_ERROR', 'QUEUED', 'RUNNING', 'COMPLETE']);
    expect(await counts(page)).toMatchObject({
      ALL: '5',
      QUEUED: '2',
      RUNNING: '1',
      COMPLETE: '1',
      SYSTEM_ERROR: '1',
      CANCELED: '0',
    });
    // The table is named by its caption; the fields by their labels (as assistive technology finds them).
    await page.getByRole('table', { name: /^Tasks, newest first: 5 on page 1$/ }).waitFor();
    const field = (label: string) => page.getByLabel(label, { exact: true });

    // By state, from the form.
    await field('State').selectOption('QUEUED');
    await page.getByRole('button', { name: 'Apply' }).click();
    await rowsUntil(page, 'the queued tasks', (r) => r.map((x) => x.name).join() === 'call-B,align-C');
    expect(new URL(page.url()).hash).toBe('#/?state=QUEUED');
    expect(await page.locator('#counts a[aria-current=true]').getAttribute('data-state')).toBe('QUEUED');

    // By name prefix, with the state cleared.
    await page.click('#clear-filters');
    await rowsUntil(page, 'all again', (r) => r.length === 5);
    await field('Name starts with').fill('align-');
    await field('Name starts with').press('Enter');
    await rowsUntil(
      page,
      'the align tasks',
      (r) => r.map((x) => x.name).join() === 'align-C,align-B,align-A',
    );
    // Counts follow the other filters.
    await until(
      'counts of the align tasks',
      () => counts(page),
      (c) => c.ALL === '3' && c.QUEUED === '1',
    );

    // By tag key and value, together with the name prefix.
    await field('Tag key').fill('sample');
    await page.getByLabel('Tag value').fill('B');
    await page.click('#filters button[type=submit]');
    await rowsUntil(page, 'align-B alone', (r) => r.map((x) => x.name).join() === 'align-B');
    // A tag key alone matches any value.
    await page.fill('#f-name', '');
    await page.fill('#f-tag-key', 'project');
    await page.fill('#f-tag-value', '');
    await page.click('#filters button[type=submit]');
    await rowsUntil(page, 'the p1 tasks', (r) => r.map((x) => x.name).join() === 'align-B,align-A');

    // A state's count is a link to that state, keeping the other filters; the link is shareable.
    await page.click('#counts a[data-state=RUNNING]');
    await rowsUntil(page, 'the running p1 task', (r) => r.map((x) => x.name).join() === 'align-B');
    const linked = page.url();
    await page.context().close();
    const shared = await open(linked);
    await rowsUntil(shared, 'the linked filter', (r) => r.map((x) => x.name).join() === 'align-B');
    expect(await shared.inputValue('#f-tag-key')).toBe('project');
    expect(await shared.inputValue('#f-state')).toBe('RUNNING');
    await shared.context().close();
  });

  it('pages through the tasks without overlap, forward and back', async () => {
    const made: string[] = [];
    for (let i = 0; i < 30; i++)
      made.push(await createTask(api, { name: `page-${String(i).padStart(2, '0')}` }));
    const page = await open(dashboardUrl(api, '#/?name_prefix=page-'));
    const first = await rowsUntil(page, 'the first page', (r) => r.length === 25);
    expect(first[0]!.name).toBe('page-29');
    expect(await page.locator('#page-number').textContent()).toBe('Page 1');
    expect(await page.isDisabled('#previous-page')).toBe(true);

    await page.click('#next-page');
    const second = await rowsUntil(page, 'the second page', (r) => r.length === 5);
    expect(await page.locator('#page-number').textContent()).toBe('Page 2');
    expect(await page.isDisabled('#next-page')).toBe(true);
    expect(new Set([...first, ...second].map((r) => r.id))).toEqual(new Set(made));

    await page.click('#previous-page');
    const back = await rowsUntil(page, 'the first page again', (r) => r.length === 25);
    expect(back.map((r) => r.id)).toEqual(first.map((r) => r.id));

    await page.selectOption('#f-size', '50');
    await page.click('#filters button[type=submit]');
    await rowsUntil(page, 'one page of 30', (r) => r.length === 30);
    expect(await page.isDisabled('#next-page')).toBe(true);
    await page.context().close();
  });

  it('shows hostile names, tags and commands as text', async () => {
    const id = await createTask(api, {
      name: HOSTILE_NAME,
      description: '<b>bold?</b>',
      tags: { [HOSTILE_TAG]: HOSTILE_TAG },
      executors: [{ image: 'alpine', command: ['sh', '-c', '<svg onload=alert(1)>'] }],
    });
    const page = await open(dashboardUrl(api, `#/?name_prefix=${encodeURIComponent('<img')}`));
    await rowsUntil(page, 'the hostile task', (r) => r.length === 1 && r[0]!.id === id);
    expect((await rows(page))[0]!.name).toBe(HOSTILE_NAME);
    expect(await page.locator('#tasks tbody .tags code').first().textContent()).toBe(
      `${HOSTILE_TAG}=${HOSTILE_TAG}`,
    );

    await page.click(`#tasks tbody tr[data-id="${id}"] th a`);
    await page.locator('#summary').waitFor();
    expect(await page.locator('#task-title').textContent()).toBe(`${HOSTILE_NAME} QUEUED`);
    expect(await page.locator('#summary').textContent()).toContain('<b>bold?</b>');
    expect(await page.locator('#executors .command').textContent()).toBe("sh -c '<svg onload=alert(1)>'");
    expect(await page.locator('main img, main script, main svg, main b').count()).toBe(0);
    expect(await page.evaluate('window.__pwned')).toBeUndefined();
    await page.context().close();
  });
});

describe('live updates', () => {
  it('show state changes in the list and on a task page without reloading', async () => {
    const id = await createTask(api, { name: 'live-1' });
    const page = await open(dashboardUrl(api, '#/?name_prefix=live-'));
    await rowsUntil(page, 'the live task', (r) => r.length === 1 && r[0]!.state === 'QUEUED');
    await page.evaluate('window.__sameDocument = true');
    const row = page.locator(`#tasks tbody tr[data-id="${id}"]`);
    await row.locator('a').focus();

    await move(api, id, 'INITIALIZING');
    await rowsUntil(page, 'INITIALIZING', (r) => r[0]!.state === 'INITIALIZING');
    expect(await page.locator('#status').textContent()).toBe('1 task changed state.');
    // The changed row is a new element; the keyboard focus stays on its link.
    expect(await page.evaluate("document.activeElement.closest('tr').dataset.id")).toBe(id);
    expect(await page.locator('#status').getAttribute('aria-live')).toBe('polite');

    // The task page: submitted to Slurm and waiting, with the lines the gateway writes then.
    await page.click(`#tasks tbody tr[data-id="${id}"] th a`);
    await page.locator('#summary').waitFor();
    expect(await page.evaluate('document.activeElement.id')).toBe('task-title');
    const waiting: TesTaskLog = {
      logs: [],
      outputs: [],
      system_logs: ['submitted as slurm job 4242', 'Slurm job 4242 is PENDING: Resources'],
    };
    expect((await api.store.transition(id, 'QUEUED', { path: 'requeue', logs: [waiting] })).outcome).toBe(
      'ok',
    );
    await until(
      'the pending reason',
      () => fact(page, 'Pending reason'),
      (v) => v === 'PENDING: Resources',
    );
    expect(await fact(page, 'Slurm job id')).toBe('4242');

    const start = new Date().toISOString();
    await api.store.transition(id, 'RUNNING', {
      logs: [{ ...waiting, start_time: start, metadata: { node: 'node-7' } }],
    });
    await until(
      'RUNNING on the page',
      () => page.locator('#task-title .state').textContent(),
      (s) => s === 'RUNNING',
    );
    expect(await fact(page, 'Node')).toBe('node-7');
    expect(await fact(page, 'Pending reason')).toBeUndefined();
    expect(await page.locator('#status').textContent()).toBe('The task is now RUNNING.');

    // Slurm requeues the job: the task waits again, and says why.
    const requeued = [...waiting.system_logs!, 'Slurm requeued job 4242: now PENDING (BeginTime)'];
    await api.store.transition(id, 'QUEUED', {
      path: 'requeue',
      logs: [{ ...waiting, system_logs: requeued }],
    });
    await until(
      'the reason of the requeue',
      () => fact(page, 'Pending reason'),
      (v) => v === 'PENDING: BeginTime',
    );
    expect(await page.evaluate('window.__sameDocument')).toBe(true);
    await page.context().close();
  });

  it('say when the gateway cannot be reached, and go on when it can', async () => {
    await createTask(api, { name: 'reach-1' });
    const page = await open(dashboardUrl(api, '#/?name_prefix=reach-'));
    await rowsUntil(page, 'the task', (r) => r.length === 1);
    await page.route('**/ga4gh/tes/v1/tasks?**', (route) => route.abort('connectionrefused'));
    const status = () => page.locator('#status').textContent();
    await until('the outage', status, (t) =>
      /^The gateway cannot be reached .*; trying again in 1 s$/.test(t ?? ''),
    );
    expect((await rows(page)).length).toBe(1);
    await page.unroute('**/ga4gh/tes/v1/tasks?**');
    await until('the recovery', status, (t) => t === 'Updating again.');
    await page.context().close();
  });

  it('stop while the tab is hidden or the user pauses them, and resume', async () => {
    const id = await createTask(api, { name: 'paused-1' });
    const page = await open(dashboardUrl(api, '#/?name_prefix=paused-'));
    await rowsUntil(page, 'the task', (r) => r.length === 1);
    const stateNow = async () => (await rows(page))[0]!.state;

    await page.click('#pause');
    expect(await page.getAttribute('#pause', 'aria-pressed')).toBe('true');
    await move(api, id, 'INITIALIZING');
    await new Promise((r) => setTimeout(r, 2500));
    expect(await stateNow()).toBe('QUEUED');
    await page.click('#pause');
    await until('INITIALIZING after resuming', stateNow, (s) => s === 'INITIALIZING');

    // What the browser does when the tab goes to the background, and comes back.
    const setHidden = (hidden: boolean) =>
      page.evaluate(
        `Object.defineProperty(document, 'hidden', { configurable: true, get: () => ${hidden} });
         document.dispatchEvent(new Event('visibilitychange'))`,
      );
    await setHidden(true);
    await move(api, id, 'RUNNING');
    await new Promise((r) => setTimeout(r, 2500));
    expect(await stateNow()).toBe('INITIALIZING');
    await setHidden(false);
    await until('RUNNING once visible', stateNow, (s) => s === 'RUNNING', 900);
    await page.context().close();
  });
});

/** The value next to a term in the task page's summary, or undefined when it is not shown. */
async function fact(page: Page, term: string): Promise<string | undefined> {
  const terms = await page.locator('#summary dt').allTextContents();
  const i = terms.indexOf(term);
  return i < 0 ? undefined : ((await page.locator('#summary dd').nth(i).textContent()) ?? '');
}

describe('with authentication on', () => {
  let secured: TestApi;
  let token: string;
  let taskId: string;
  beforeAll(async () => {
    secured = await startTestApi('ui-auth', { auth: { mode: 'tokens' } });
    const tokens = new TokenStore(secured.redis, secured.store.keys.tokens, { cacheTtlMs: 0 });
    token = (await tokens.create({ user: 'alice', lifetimeMs: 86_400_000 })).token;
    taskId = await createTask(secured, { name: 'alice-task' }, { authorization: `Bearer ${token}` });
  });
  afterAll(async () => {
    await secured?.close();
  });

  it('asks for a token on 401, keeps it in session storage only, sends it as a Bearer token', async () => {
    const page = await open(dashboardUrl(secured));
    await page.locator('#token-view').waitFor();
    expect(await page.isVisible('#list-view')).toBe(false);
    expect(await page.getAttribute('#token', 'type')).toBe('password');
    expect(await page.evaluate('document.activeElement.id')).toBe('token');

    await page.fill('#token', 'tesgw_0000000000000000_wrong');
    await page.press('#token', 'Enter');
    await until(
      'the refusal',
      () => page.locator('#token-reason').textContent(),
      (t) => /refused the token/.test(t ?? ''),
    );

    const sent: string[] = [];
    page.on('request', (req) => {
      if (req.url().includes('/ga4gh/tes/v1/tasks')) sent.push(`${req.headers().authorization} ${req.url()}`);
    });
    await page.fill('#token', token);
    await page.click('#token-form button[type=submit]');
    await rowsUntil(page, "alice's task", (r) => r.length === 1 && r[0]!.id === taskId);
    expect(sent.length).toBeGreaterThan(0);
    for (const line of sent) {
      expect(line.startsWith(`Bearer ${token} `)).toBe(true);
      expect(line.slice(`Bearer ${token} `.length)).not.toContain(token);
    }
    expect(await page.evaluate(`sessionStorage.getItem('${TOKEN_KEY}')`)).toBe(token);
    expect(await page.evaluate('localStorage.length')).toBe(0);
    expect(await page.evaluate('document.cookie')).toBe('');

    // A reload keeps the session; another tab (a new session) asks again.
    await page.reload();
    await rowsUntil(page, 'the task after a reload', (r) => r.length === 1);
    const other = await page.context().newPage();
    await other.goto(dashboardUrl(secured));
    await other.locator('#token-view').waitFor();
    await other.close();

    await page.click('#forget-token');
    await page.locator('#token-view').waitFor();
    expect(await page.evaluate(`sessionStorage.getItem('${TOKEN_KEY}')`)).toBeNull();
    await page.context().close();
  });
});

describe('a task run on the real Slurm', () => {
  let gw: TestGateway;
  let data: string;
  let gwTask: string;
  beforeAll(async () => {
    requireSlurm();
    const image = testImages().busybox;
    data = mkdtempSync('/var/tmp/tesgw-ui-data-');
    writeFileSync(join(data, 'in.txt'), 'a line from a file input\n');
    gw = await startTestGateway('ui-slurm', {
      backend: 'slurm',
      container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
      slurm: { defaultPartition: 'debug', missingGraceMs: 60_000 },
      storage: { allowedRoots: [data] },
    });
    const post = (body: unknown) => postJson(`${gw.base}/tasks`, body).then((r) => r.body.id as string);
    await post({
      name: 'fails on purpose',
      tags: { project: 'dashboard' },
      executors: [{ image, command: ['sh', '-c', 'echo bad >&2; exit 3'] }],
    });
    gwTask = await post({
      name: 'dashboard demo',
      description: 'two executors, an inline and a file input, one output',
      tags: { project: 'dashboard', sample: 'NA12878' },
      resources: { cpu_cores: 1, ram_gb: 0.25 },
      inputs: [
        { path: '/data/greeting.txt', content: 'hello from an inline input\n' },
        { path: '/data/in.txt', url: `file://${data}/in.txt` },
      ],
      outputs: [{ path: '/data/out/result.txt', url: `file://${data}/out/result.txt` }],
      executors: [
        {
          image,
          command: [
            'sh',
            '-c',
            'cat /data/greeting.txt /data/in.txt; echo to-stderr >&2; echo done > /data/out/result.txt',
          ],
        },
        { image, command: ['sh', '-c', 'for i in $(seq 1 200); do echo "line $i"; done'] },
      ],
    });
  });
  afterAll(async () => {
    await gw?.close();
    for (const dir of [data, gw?.workRoot, gw && `${gw.workRoot}-images`]) {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  it('shows its executors, inputs, outputs, log tails, system logs, job id and node; saves screenshots', async () => {
    const task = await waitFor(gw.base, gwTask, undefined, 180_000);
    expect(task.state).toBe('COMPLETE');
    const metadata = task.logs[0].metadata;
    expect(metadata.job_id).toMatch(/^[0-9_]+$/);

    const page = await open(dashboardUrl(gw));
    await rowsUntil(page, 'both tasks', (r) => r.length === 2);
    const shots = join(ROOT, '.tmp');
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, 'dashboard-list.png') });

    await page.click(`#tasks tbody tr[data-id="${gwTask}"] th a`);
    await page.locator('#system-logs').waitFor();
    expect(await page.locator('#task-title').textContent()).toBe('dashboard demo COMPLETE');
    expect(await fact(page, 'Slurm job id')).toBe(metadata.job_id);
    expect(await fact(page, 'Node')).toBe(metadata.node);
    expect(await fact(page, 'Job state')).toBe('COMPLETED');
    expect(await fact(page, 'Created')).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
    expect(await fact(page, 'Started')).toMatch(/UTC$/);
    expect(await fact(page, 'Ended')).toMatch(/UTC$/);
    expect(await fact(page, 'Ran for')).toMatch(/^(under 1 s|\d+ s|\d+ min \d+ s)$/);

    const executors = page.locator('#executors article');
    expect(await executors.count()).toBe(2);
    expect(await page.locator('#executors h2').textContent()).toBe('Executors (2)');
    const firstLogs = await executors.nth(0).locator('pre').allTextContents();
    expect(firstLogs).toEqual([task.logs[0].logs[0].stdout, task.logs[0].logs[0].stderr]);
    expect(firstLogs[0]).toBe('hello from an inline input\na line from a file input\n');
    expect(firstLogs[1]).toBe('to-stderr\n');
    const secondOut = await executors.nth(1).locator('pre').first().textContent();
    expect(secondOut).toBe(task.logs[0].logs[1].stdout);
    expect(secondOut).toMatch(/line 200\n$/);
    const longLog = executors.nth(1).locator('pre').first();
    expect(await longLog.getAttribute('tabindex')).toBe('0');
    // A log is its end, so it opens scrolled to the last line.
    expect(
      await longLog.evaluate(
        (pre) => pre.scrollTop > 0 && pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 1,
      ),
    ).toBe(true);

    const inputs = await page.locator('#inputs tbody tr').allTextContents();
    expect(inputs).toEqual([
      '/data/greeting.txtFILEinline content, 27 characters—',
      `/data/in.txtFILEfile://${data}/in.txt—`,
    ]);
    expect(await page.locator('#outputs table').first().locator('tbody tr').allTextContents()).toEqual([
      `/data/out/result.txtFILEfile://${data}/out/result.txt—`,
    ]);
    expect(await page.locator('#outputs table').nth(1).locator('tbody tr td').first().textContent()).toBe(
      `file://${data}/out/result.txt`,
    );
    expect(statSync(join(data, 'out', 'result.txt')).size).toBe(5);
    const systemLogs = await page.locator('#system-logs li').allTextContents();
    expect(systemLogs).toEqual(task.logs[0].system_logs);
    expect(systemLogs).toContain(`submitted as slurm job ${metadata.job_id}`);

    // A finished task does not change: the page stops asking.
    expect(await page.locator('#updated').textContent()).toMatch(/, no further updates$/);
    await page.screenshot({ path: join(shots, 'dashboard-task.png'), fullPage: true });
    expect(statSync(join(shots, 'dashboard-task.png')).size).toBeGreaterThan(10_000);
    await page.context().close();
  });
});

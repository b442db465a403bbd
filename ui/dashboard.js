import { durationBetween, formatDuration, formatTime, h, reconcileChildren, swap, timeOf } from './dom.js';
import {
  ApiError,
  countByState,
  filterParams,
  forgetToken,
  getJson,
  keepToken,
  STATES,
  storedToken,
  TERMINAL_STATES,
} from './tes-client.js';
import { stateBadge, taskSections, taskTitle } from './task-view.js';

/**
 * The page's one loop: read the route from the hash (`#/?state=…` for the list, `#/tasks/<id>` for a
 * task), fetch what it shows, render in place, and do it again every few seconds while the tab is
 * visible and updates are not paused. A 401 shows the token form instead.
 */

const PAGE_SIZES = ['25', '50', '100'];
/** `?refresh=2000` on the page's own URL shortens the wait between updates (1 s at least). */
const REFRESH_MS = Math.max(1000, Number(new URLSearchParams(location.search).get('refresh')) || 5000);

const $ = (id) => document.getElementById(id);
const views = { token: $('token-view'), list: $('list-view'), task: $('task-view') };

let timer;
let running;
let paused = false;
let generation = 0;
/** Whether the last update failed, so that the next good one says so. */
let failing = false;
/** What the last refresh showed, to say what changed since. */
let lastStates = new Map();
let lastRoute = '';
/** Paging goes forward by the API's tokens; the way back and the page number are remembered per page. */
const previousOf = new Map();
const pageNumberOf = new Map();
let listHash = '#/';

function parseRoute() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const question = hash.indexOf('?');
  const path = question < 0 ? hash : hash.slice(0, question);
  const query = new URLSearchParams(question < 0 ? '' : hash.slice(question + 1));
  const task = /^\/tasks\/([^/]+)$/.exec(path);
  if (task) return { view: 'task', id: decodeURIComponent(task[1]) };
  const state = query.get('state') ?? '';
  const size = query.get('page_size') ?? '';
  return {
    view: 'list',
    filters: {
      state: STATES.includes(state) ? state : '',
      name_prefix: query.get('name_prefix') ?? '',
      tag_key: query.get('tag_key') ?? '',
      tag_value: query.get('tag_value') ?? '',
    },
    pageSize: PAGE_SIZES.includes(size) ? size : PAGE_SIZES[0],
    pageToken: query.get('page_token') ?? '',
  };
}

function hashOf(filters, pageSize, pageToken = '') {
  const query = new URLSearchParams(filterParams(filters));
  if (pageSize !== PAGE_SIZES[0]) query.set('page_size', pageSize);
  if (pageToken) query.set('page_token', pageToken);
  const text = query.toString();
  return text ? `#/?${text}` : '#/';
}

function show(name) {
  for (const [key, element] of Object.entries(views)) element.hidden = key !== name;
}

/** Said to screen readers (and shown): only what changed or went wrong, not every refresh. */
function announce(text) {
  const status = $('status');
  if (status.textContent !== text) status.textContent = text;
}

function schedule() {
  clearTimeout(timer);
  if (paused || document.hidden) return;
  timer = setTimeout(() => void refresh(), REFRESH_MS);
}

/** Fetches and renders what the route shows; an update already under way is abandoned. */
async function refresh() {
  clearTimeout(timer);
  running?.abort();
  const controller = new AbortController();
  running = controller;
  const mine = ++generation;
  const route = parseRoute();
  const routeKey = location.hash;
  const fresh = routeKey !== lastRoute;
  try {
    const keepGoing =
      route.view === 'task'
        ? await refreshTask(route, controller.signal, fresh, () => mine === generation)
        : await refreshList(route, controller.signal, fresh, () => mine === generation);
    if (mine !== generation) return;
    lastRoute = routeKey;
    if (failing) announce('Updating again.');
    failing = false;
    const time = formatTime(new Date()).slice(11);
    $('updated').textContent = keepGoing ? `Updated ${time}` : `Updated ${time}, no further updates`;
    if (keepGoing) schedule();
  } catch (err) {
    if (controller.signal.aborted || mine !== generation) return;
    if (err instanceof ApiError && err.status === 401) {
      askForToken(err.message);
      return;
    }
    failing = true;
    announce(
      err instanceof ApiError && err.status === 0
        ? `${err.message.charAt(0).toUpperCase()}${err.message.slice(1)}; trying again in ${REFRESH_MS / 1000} s`
        : `Could not update: ${err instanceof Error ? err.message : String(err)}`,
    );
    // A refused request (a bad page token, say) is not retried until something changes.
    if (!(err instanceof ApiError) || err.status === 0 || err.status >= 500) schedule();
  }
}

function askForToken(reason) {
  show('token');
  $('token-reason').textContent = storedToken()
    ? `The gateway refused the token: ${reason}`
    : 'This gateway asks who you are: enter an access token.';
  $('forget-token').hidden = !storedToken();
  announce('An access token is needed.');
  $('token').focus();
}

// The list.

async function refreshList(route, signal, fresh, current) {
  const { filters, pageSize, pageToken } = route;
  const [page, counts] = await Promise.all([
    getJson(
      'tasks',
      [
        ...filterParams(filters),
        ['view', 'BASIC'],
        ['page_size', pageSize],
        ...(pageToken ? [['page_token', pageToken]] : []),
      ],
      signal,
    ),
    countByState(filters, signal),
  ]);
  if (!current()) return false;
  listHash = location.hash || '#/';
  if (fresh) fillFilterForm(route);
  show('list');
  document.title = 'Tasks · TES gateway';
  renderCounts(counts, route);
  renderRows(page.tasks);
  renderPager(route, page.next_page_token);
  renderCaption(route, page.tasks.length);

  const changed = page.tasks.filter((t) => lastStates.has(t.id) && lastStates.get(t.id) !== t.state);
  lastStates = new Map(page.tasks.map((t) => [t.id, t.state]));
  if (fresh) announce(`${page.tasks.length} task${page.tasks.length === 1 ? '' : 's'} shown.`);
  else if (changed.length > 0)
    announce(`${changed.length} task${changed.length === 1 ? '' : 's'} changed state.`);
  return true;
}

function fillFilterForm(route) {
  $('f-state').value = route.filters.state;
  $('f-name').value = route.filters.name_prefix;
  $('f-tag-key').value = route.filters.tag_key;
  $('f-tag-value').value = route.filters.tag_value;
  $('f-size').value = route.pageSize;
}

function renderCounts(counts, route) {
  const total = counts.reduce((sum, c) => sum + c.count, 0);
  const more = counts.some((c) => c.more);
  const item = (state, label, count, plus) => {
    const text = `${count}${plus ? '+' : ''}`;
    return h(
      'li',
      {},
      h(
        'a',
        {
          href: hashOf({ ...route.filters, state }, route.pageSize),
          class: `count${state ? ` count-${state.toLowerCase()}` : ''}`,
          'aria-current': route.filters.state === state ? 'true' : undefined,
          'data-state': state || 'ALL',
        },
        h('span', { class: 'count-label' }, label),
        ' ',
        h('span', { class: 'count-value' }, text),
      ),
    );
  };
  const list = $('counts');
  const wanted = [
    item('', 'All', total, more),
    ...counts.map((c) => item(c.state, c.state.replace('_', ' ').toLowerCase(), c.count, c.more)),
  ];
  reconcileChildren(
    list,
    wanted.map((li, i) => (list.children[i] ? swap(list.children[i], li) : li)),
  );
}

function taskRow(task) {
  const log = task.logs?.[0];
  const ran = durationBetween(log?.start_time, log?.end_time);
  const tags = Object.entries(task.tags ?? {});
  const images = (task.executors ?? []).map((e) => e.image);
  return h(
    'tr',
    { 'data-id': task.id },
    h('td', {}, stateBadge(task.state)),
    h(
      'th',
      { scope: 'row' },
      h(
        'a',
        { href: `#/tasks/${encodeURIComponent(task.id)}` },
        task.name ? task.name : h('i', {}, 'no name'),
      ),
    ),
    h('td', {}, h('code', {}, task.id)),
    h('td', {}, timeOf(task.creation_time)),
    h(
      'td',
      {},
      ran === undefined
        ? h('span', { class: 'muted' }, '—')
        : `${formatDuration(ran)}${log.end_time ? '' : ' so far'}`,
    ),
    h(
      'td',
      { class: 'images' },
      images.length > 0 ? `${images.length} · ${images[0]}${images.length > 1 ? ', …' : ''}` : '',
    ),
    h(
      'td',
      {},
      tags.length
        ? h(
            'ul',
            { class: 'tags' },
            tags.slice(0, 3).map(([k, v]) => h('li', {}, h('code', {}, v === '' ? k : `${k}=${v}`))),
            tags.length > 3 ? h('li', { class: 'muted' }, `+${tags.length - 3} more`) : [],
          )
        : '',
    ),
  );
}

function renderRows(tasks) {
  const body = $('tasks').tBodies[0];
  const present = new Map([...body.rows].map((row) => [row.dataset.id, row]));
  const focused = document.activeElement?.closest('#tasks tbody tr')?.dataset.id;
  reconcileChildren(
    body,
    tasks.map((task) => {
      const row = taskRow(task);
      const old = present.get(task.id);
      return old && old.isEqualNode(row) ? old : row;
    }),
  );
  // A row that changed is a new element: the link that had the focus gets it back.
  if (focused !== undefined && !body.contains(document.activeElement))
    [...body.rows]
      .find((row) => row.dataset.id === focused)
      ?.querySelector('a')
      ?.focus();
  $('empty').hidden = tasks.length > 0;
  $('tasks').hidden = tasks.length === 0;
}

function renderCaption(route, shown) {
  const { filters } = route;
  const parts = [];
  if (filters.state) parts.push(`in state ${filters.state}`);
  if (filters.name_prefix) parts.push(`whose name starts with “${filters.name_prefix}”`);
  if (filters.tag_key)
    parts.push(
      filters.tag_value ? `tagged ${filters.tag_key}=${filters.tag_value}` : `with a tag ${filters.tag_key}`,
    );
  const page = pageNumberOf.get(pageKey(route));
  $('tasks-caption').textContent =
    `Tasks${parts.length ? ` ${parts.join(', ')}` : ''}, newest first: ${shown} on ${page ? `page ${page}` : 'this page'}`;
}

function pageKey(route) {
  return hashOf(route.filters, route.pageSize, route.pageToken);
}

function renderPager(route, nextToken) {
  const here = pageKey(route);
  const first = hashOf(route.filters, route.pageSize);
  if (here === first) pageNumberOf.set(here, 1);
  const page = pageNumberOf.get(here);
  const previous = previousOf.get(here);
  $('page-number').textContent = page ? `Page ${page}` : '';
  $('first-page').disabled = here === first;
  $('first-page').dataset.target = first;
  $('previous-page').disabled = previous === undefined;
  $('previous-page').dataset.target = previous ?? '';
  $('next-page').disabled = !nextToken;
  $('next-page').dataset.target = '';
  if (nextToken) {
    const next = hashOf(route.filters, route.pageSize, nextToken);
    previousOf.set(next, here);
    if (page) pageNumberOf.set(next, page + 1);
    $('next-page').dataset.target = next;
  }
}

// A task.

async function refreshTask(route, signal, fresh, current) {
  let task;
  try {
    task = await getJson(`tasks/${encodeURIComponent(route.id)}`, [['view', 'FULL']], signal);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    if (!current()) return false;
    show('task');
    $('task-title').textContent = `Task ${route.id}`;
    $('task-sections').replaceChildren(
      h('p', {}, 'There is no such task, or it is not yours, or it was removed after its retention time.'),
    );
    announce('Task not found.');
    return false;
  }
  if (!current()) return false;
  const fromList = Boolean(document.activeElement?.closest('#list-view'));
  show('task');
  $('back').setAttribute('href', listHash);
  $('task-title').replaceChildren(taskTitle(task), ' ', stateBadge(task.state));
  document.title = `${taskTitle(task)} · TES gateway`;
  const container = $('task-sections');
  if (fresh) container.replaceChildren();
  const present = new Map([...container.children].map((el) => [el.id, el]));
  const sections = taskSections(task).map((section) => {
    const old = present.get(section.id);
    return old ? swap(old, section) : section;
  });
  reconcileChildren(container, sections);
  // Logs are their ends: a log shown anew opens scrolled to its last line.
  for (const section of sections) {
    if (present.get(section.id) === section) continue;
    for (const pre of section.querySelectorAll('pre')) pre.scrollTop = pre.scrollHeight;
  }
  const before = lastStates.get(task.id);
  lastStates = new Map([[task.id, task.state]]);
  if (fresh) {
    announce(`Task ${task.state}.`);
    // Keyboard and screen reader users who followed a link start at the task's heading.
    if (fromList) $('task-title').focus();
  } else if (before !== task.state) announce(`The task is now ${task.state}.`);
  // A finished task does not change any more: no need to keep asking.
  return !TERMINAL_STATES.has(task.state);
}

// Wiring.

function onFilterSubmit(event) {
  event.preventDefault();
  const form = new FormData($('filters'));
  const filters = {
    state: String(form.get('state') ?? ''),
    name_prefix: String(form.get('name_prefix') ?? ''),
    tag_key: String(form.get('tag_key') ?? '').trim(),
    tag_value: String(form.get('tag_value') ?? ''),
  };
  location.hash = hashOf(filters, String(form.get('page_size') ?? PAGE_SIZES[0]));
}

function go(button) {
  const target = button.dataset.target;
  if (target) location.hash = target;
}

function setUp() {
  const stateSelect = $('f-state');
  for (const state of STATES) stateSelect.append(h('option', { value: state }, state));
  $('filters').addEventListener('submit', onFilterSubmit);
  $('clear-filters').addEventListener('click', () => {
    location.hash = '#/';
  });
  $('next-page').addEventListener('click', (e) => go(e.currentTarget));
  $('previous-page').addEventListener('click', (e) => go(e.currentTarget));
  $('first-page').addEventListener('click', (e) => go(e.currentTarget));
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    keepToken(token);
    $('token').value = '';
    $('forget-token').hidden = false;
    lastRoute = '';
    void refresh();
  });
  $('forget-token').addEventListener('click', () => {
    forgetToken();
    $('forget-token').hidden = true;
    lastRoute = '';
    void refresh();
  });
  $('pause').addEventListener('click', () => {
    paused = !paused;
    $('pause').setAttribute('aria-pressed', String(paused));
    $('pause').textContent = paused ? 'Resume updates' : 'Pause updates';
    if (paused) {
      clearTimeout(timer);
      announce('Updates paused.');
    } else {
      announce('Updates resumed.');
      void refresh();
    }
  });
  window.addEventListener('hashchange', () => void refresh());
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) clearTimeout(timer);
    else if (!paused) void refresh();
  });
  $('forget-token').hidden = !storedToken();
  getJson('service-info', []).then(
    (info) => {
      if (info.name) $('home').textContent = info.name;
      if (info.version) $('service').textContent = info.version;
    },
    () => undefined,
  );
  void refresh();
}

setUp();

/**
 * The dashboard reads the gateway's own TES API, on the same origin, with the token the user gave:
 * kept in this tab's sessionStorage only, sent as a Bearer token, never in a URL.
 */

/** The API next to the dashboard (`/ui/` → `/ga4gh/tes/v1/`), so a proxy's path prefix is kept. */
export const API_BASE = new URL('../ga4gh/tes/v1/', document.baseURI);

const TOKEN_KEY = 'tes-gateway.token';

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

export function keepToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The states a TES task may be in that the gateway uses, in the order they are shown. */
export const STATES = [
  'QUEUED',
  'INITIALIZING',
  'RUNNING',
  'CANCELING',
  'COMPLETE',
  'EXECUTOR_ERROR',
  'SYSTEM_ERROR',
  'CANCELED',
  'PREEMPTED',
];

export const TERMINAL_STATES = new Set([
  'COMPLETE',
  'EXECUTOR_ERROR',
  'SYSTEM_ERROR',
  'CANCELED',
  'PREEMPTED',
]);

/** A refused or failed request: `status` 0 when the gateway could not be reached at all. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

/** GET `path` (relative to the API) with the query `params` (pairs; a key may repeat). */
export async function getJson(path, params, signal) {
  const url = new URL(path, API_BASE);
  for (const [key, value] of params) url.searchParams.append(key, value);
  const headers = { Accept: 'application/json' };
  const token = storedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(url, { headers, signal, cache: 'no-store', credentials: 'omit' });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new ApiError(0, `the gateway cannot be reached (${err instanceof Error ? err.message : err})`);
  }
  const text = await response.text();
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  if (!response.ok) {
    const message = typeof body?.message === 'string' ? body.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

/** The query of ListTasks for the filters (empty ones left out). */
export function filterParams(filters) {
  const params = [];
  if (filters.state) params.push(['state', filters.state]);
  if (filters.name_prefix) params.push(['name_prefix', filters.name_prefix]);
  if (filters.tag_key) {
    params.push(['tag_key', filters.tag_key]);
    if (filters.tag_value) params.push(['tag_value', filters.tag_value]);
  }
  return params;
}

/** Counted per state up to this many: one MINIMAL page per state, so a count costs one bounded request. */
export const COUNT_LIMIT = 100;

/**
 * How many tasks are in each state under the other filters: `{ state, count, more }`, where `more`
 * says there are more than `count` (the API has no count, and paging through all would not be cheap).
 */
export async function countByState(filters, signal) {
  const others = filterParams({ ...filters, state: '' });
  return Promise.all(
    STATES.map(async (state) => {
      const page = await getJson(
        'tasks',
        [...others, ['state', state], ['view', 'MINIMAL'], ['page_size', String(COUNT_LIMIT)]],
        signal,
      );
      return { state, count: page.tasks.length, more: Boolean(page.next_page_token) };
    }),
  );
}

/**
 * A thin client of any TES 1.1 server over fetch. It trusts no optional field to be there: a task is
 * sure to have only an id (Funnel omits `state` when it is UNKNOWN, and `tasks` when a page is
 * empty), so absent fields stay absent and the renderers say so.
 */

import { STATUS_CODES } from 'node:http';

export const TASK_VIEWS = ['MINIMAL', 'BASIC', 'FULL'] as const;
export type TaskView = (typeof TASK_VIEWS)[number];

export interface ExecutorLog {
  start_time?: string;
  end_time?: string;
  stdout?: string;
  stderr?: string;
  exit_code?: number;
}

export interface TaskLog {
  logs?: ExecutorLog[];
  metadata?: Record<string, string>;
  start_time?: string;
  end_time?: string;
  outputs?: { url?: string; path?: string; size_bytes?: string }[];
  system_logs?: string[];
}

export interface Executor {
  image?: string;
  command?: string[];
  workdir?: string;
  stdin?: string;
  stdout?: string;
  stderr?: string;
  env?: Record<string, string>;
  ignore_error?: boolean;
}

export interface TaskFile {
  name?: string;
  url?: string;
  path?: string;
  type?: string;
}

export interface Task {
  id: string;
  /** UNKNOWN when the server left it out. */
  state: string;
  name?: string;
  description?: string;
  inputs?: TaskFile[];
  outputs?: TaskFile[];
  resources?: {
    cpu_cores?: number;
    preemptible?: boolean;
    ram_gb?: number;
    disk_gb?: number;
    zones?: string[];
    backend_parameters?: Record<string, string>;
  };
  executors?: Executor[];
  volumes?: string[];
  tags?: Record<string, string>;
  logs?: TaskLog[];
  creation_time?: string;
}

export interface TaskPage {
  tasks: Task[];
  next_page_token?: string;
}

export interface TaskFilter {
  state?: string;
  namePrefix?: string;
  /** Paired by position as tag_key and tag_value; no value matches any value of the key. */
  tags: { key: string; value?: string }[];
}

export interface ListRequest {
  filter: TaskFilter;
  view: TaskView;
  pageSize?: number;
  pageToken?: string;
}

/** The server answered with an HTTP error status; `serverMessage` is what it said, if anything. */
export class TesServerError extends Error {
  constructor(
    readonly method: string,
    readonly url: string,
    readonly status: number,
    readonly serverMessage: string | undefined,
  ) {
    super(
      `${method} ${url}: the server answered ${status}${statusText(status)}` +
        (serverMessage ? `: ${serverMessage}` : ' (no message)'),
    );
    this.name = 'TesServerError';
  }

  /** Whether asking again later may succeed: the server or a proxy in front of it is busy or down. */
  get transient(): boolean {
    return [429, 502, 503, 504].includes(this.status);
  }
}

/** The server answered 2xx with something that is not what TES says it answers. */
export class TesAnswerError extends Error {
  constructor(method: string, url: string, problem: string) {
    super(`${method} ${url}: the answer is not a TES one: ${problem}`);
    this.name = 'TesAnswerError';
  }
}

/** No answer at all: the connection failed, or the server took longer than the request timeout. */
export class TesUnreachableError extends Error {
  constructor(method: string, url: string, why: string) {
    super(`${method} ${url}: cannot reach the server: ${why}`);
    this.name = 'TesUnreachableError';
  }
}

/** How long one request may take before it counts as unanswered. */
export const REQUEST_TIMEOUT_MS = 30_000;

/** The path under which the TES spec serves its API, tried below a URL that is a server's root. */
export const TES_BASE_PATH = '/ga4gh/tes/v1';

export class TesClient {
  private constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
  ) {}

  /**
   * A client of the TES API at `url`. A URL whose path ends in `/v1` is taken as the API's base.
   * Otherwise the URL is tried as given (`GET URL/service-info`): any answer but 404 makes it the
   * base; on 404 `URL/ga4gh/tes/v1` is tried the same way, and used if it answers; if neither does,
   * the URL as given stays the base, and the requests themselves say what the server answers.
   */
  static async connect(url: string, token: string | undefined): Promise<TesClient> {
    const given = new TesClient(url.replace(/\/+$/, ''), token);
    if (/\/v1$/.test(given.baseUrl)) return given;
    if ((await given.probe()) !== 404) return given;
    const below = new TesClient(`${given.baseUrl}${TES_BASE_PATH}`, token);
    return (await below.probe()) !== 404 ? below : given;
  }

  async createTask(body: unknown): Promise<string> {
    const answer = await this.request('POST', '/tasks', [], body);
    const id = field(answer, 'id');
    if (typeof id !== 'string' || id === '') {
      throw new TesAnswerError('POST', this.url('/tasks'), 'no task id in it');
    }
    return id;
  }

  async listTasks(request: ListRequest): Promise<TaskPage> {
    const { filter, view, pageSize, pageToken } = request;
    const query: [string, string][] = [['view', view]];
    if (filter.state !== undefined) query.push(['state', filter.state]);
    if (filter.namePrefix !== undefined) query.push(['name_prefix', filter.namePrefix]);
    for (const tag of filter.tags) query.push(['tag_key', tag.key]);
    for (const tag of filter.tags) query.push(['tag_value', tag.value ?? '']);
    if (pageSize !== undefined) query.push(['page_size', String(pageSize)]);
    if (pageToken !== undefined) query.push(['page_token', pageToken]);
    const answer = await this.request('GET', '/tasks', query);
    const url = this.url('/tasks', query);
    const tasks = field(answer, 'tasks') ?? [];
    if (!Array.isArray(tasks)) throw new TesAnswerError('GET', url, '`tasks` is not a list');
    const next = field(answer, 'next_page_token');
    return {
      tasks: tasks.map((t, i) => toTask(t, 'GET', url, `tasks[${i}]`)),
      // An empty token, as some servers send on the last page, means no more pages.
      ...(typeof next === 'string' && next !== '' && { next_page_token: next }),
    };
  }

  async getTask(taskId: string, view: TaskView): Promise<Task> {
    const path = `/tasks/${encodeURIComponent(taskId)}`;
    const query: [string, string][] = [['view', view]];
    return toTask(await this.request('GET', path, query), 'GET', this.url(path, query), 'the task');
  }

  async cancelTask(taskId: string): Promise<void> {
    await this.request('POST', `/tasks/${encodeURIComponent(taskId)}:cancel`, [], {});
  }

  private url(path: string, query: readonly [string, string][] = []): string {
    const search = new URLSearchParams(query).toString();
    return `${this.baseUrl}${path}${search ? `?${search}` : ''}`;
  }

  /** The status of `GET service-info`, to tell where the API is. */
  private async probe(): Promise<number> {
    const res = await this.send('GET', this.url('/service-info'), undefined);
    await res.body?.cancel().catch(() => undefined);
    return res.status;
  }

  /** The parsed JSON of a 2xx answer; throws one of the errors above otherwise. */
  private async request(
    method: 'GET' | 'POST',
    path: string,
    query: readonly [string, string][] = [],
    body?: unknown,
  ): Promise<unknown> {
    const url = this.url(path, query);
    const res = await this.send(method, url, body);
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new TesUnreachableError(method, url, `the answer broke off: ${causeOf(err)}`);
    }
    if (!res.ok) throw new TesServerError(method, url, res.status, serverMessage(text));
    if (text.trim() === '') return {};
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new TesAnswerError(method, url, `not JSON: ${excerpt(text)}`);
    }
  }

  private async send(method: string, url: string, body: unknown): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await fetch(url, {
        method,
        headers,
        ...(body !== undefined && { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        redirect: 'follow',
      });
    } catch (err) {
      const timedOut = (err as { name?: unknown }).name === 'TimeoutError';
      throw new TesUnreachableError(
        method,
        url,
        timedOut ? `no answer in ${REQUEST_TIMEOUT_MS / 1000} s` : causeOf(err),
      );
    }
  }
}

/**
 * What an error answer says: TES servers put it in `message` (this gateway, grpc-gateway servers
 * such as Funnel) or `msg` (GA4GH's error schema), some in `detail` or `error`; a proxy's HTML page
 * says it in its title; any other text is quoted as it is, shortened.
 */
export function serverMessage(text: string): string | undefined {
  const body = text.trim();
  if (body === '') return undefined;
  try {
    const json = JSON.parse(body) as unknown;
    for (const key of ['message', 'msg', 'detail', 'error']) {
      const value = field(json, key);
      if (typeof value === 'string' && value.trim() !== '') return excerpt(value);
      const nested = field(value, 'message');
      if (typeof nested === 'string' && nested.trim() !== '') return excerpt(nested);
    }
    return excerpt(body);
  } catch {
    const title = /<title[^>]*>([^<]*)<\/title>/i.exec(body)?.[1];
    if (title !== undefined && title.trim() !== '') return excerpt(title);
    return excerpt(body.replace(/<[^>]*>/g, ' '));
  }
}

/** At most 300 characters of `text` on one line, without control characters. */
function excerpt(text: string): string {
  const line = text.replace(/[\p{Cc}\s]+/gu, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 299)}…` : line;
}

/** The reason phrase of an HTTP status, as Node knows it: ` Not Found`, or nothing. */
function statusText(status: number): string {
  const phrase = STATUS_CODES[status];
  return phrase ? ` ${phrase}` : '';
}

/** What fetch's `TypeError: fetch failed` hides in its cause: `connect ECONNREFUSED 127.0.0.1:1`. */
function causeOf(err: unknown): string {
  let deepest = err as { message?: unknown; cause?: unknown } | undefined;
  while (deepest?.cause !== undefined && deepest.cause !== null) {
    deepest = deepest.cause;
  }
  const message = deepest?.message;
  return typeof message === 'string' && message !== '' ? message : String(err);
}

function field(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)[key]
    : undefined;
}

/** A task from the wire: an object with a string id; its state UNKNOWN when it is left out. */
function toTask(value: unknown, method: string, url: string, what: string): Task {
  const id = field(value, 'id');
  if (typeof id !== 'string' || id === '') throw new TesAnswerError(method, url, `${what} has no id`);
  const state = field(value, 'state');
  return { ...(value as Task), state: typeof state === 'string' && state !== '' ? state : 'UNKNOWN' };
}

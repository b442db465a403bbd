import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  EXIT_INTERNAL,
  EXIT_OK,
  EXIT_SERVER_ERROR,
  EXIT_TIMEOUT,
  EXIT_UNREACHABLE,
  EXIT_USAGE,
  exitCodeOfState,
  isFinalState,
} from './exit-codes.js';
import { LogStreams } from './log-streams.js';
import {
  renderJson,
  renderStateChange,
  renderTask,
  renderTaskTable,
  renderTable,
  renderWaitRows,
} from './render.js';
import {
  TesAnswerError,
  TesClient,
  TesServerError,
  TesUnreachableError,
  type Task,
  type TaskFilter,
  type TaskView,
} from './tes-client.js';

/** `tes-gateway task VERB ...`: what to ask a TES server. */
export type TaskCommand =
  | { verb: 'create'; file: string }
  | {
      verb: 'list';
      filter: TaskFilter;
      view: TaskView;
      pageSize?: number;
      pageToken?: string;
      all: boolean;
    }
  | { verb: 'get'; taskId: string; view: TaskView }
  | { verb: 'cancel'; taskIds: string[] }
  | { verb: 'wait'; taskIds: string[]; timeoutMs?: number }
  | { verb: 'logs'; taskId: string; follow: boolean };

/** Which server, as the command line says; TES_URL and TES_TOKEN fill in what it does not. */
export interface TaskServer {
  url?: string;
  token?: string;
}

/** Where the command reads and writes: the process's own, or a test's. */
export interface TaskIo {
  stdout: { write(text: string): unknown; isTTY?: boolean };
  stderr: { write(text: string): unknown };
  readStdin(): Promise<string>;
  env: Readonly<Record<string, string | undefined>>;
}

export const DEFAULT_TES_URL = 'http://127.0.0.1:8000/ga4gh/tes/v1';

/** `task list --all` stops after this many pages, and says where to go on from. */
export const MAX_LIST_PAGES = 100;

/** Polling of `wait` and `logs --follow`: from the first interval up by half each time, to the last. */
const FIRST_POLL_MS = 500;
const MAX_POLL_MS = 5_000;
/** A poll that finds the server unreachable or busy (429, 502, 503, 504) is tried again this often. */
const POLL_RETRIES = 4;
const POLL_RETRY_MS = 1_000;

const PROCESS_IO: TaskIo = {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  async readStdin() {
    let text = '';
    for await (const chunk of process.stdin) text += String(chunk);
    return text;
  },
};

/**
 * Runs a task verb against the TES server and returns its exit code (src/cli/exit-codes.ts). The
 * token is sent as `Authorization: Bearer` and never printed.
 */
export async function runTaskCommand(
  command: TaskCommand,
  server: TaskServer,
  json: boolean,
  io: TaskIo = PROCESS_IO,
): Promise<number> {
  const target = resolveServer(server, io.env);
  if (typeof target === 'string') {
    io.stderr.write(`tes-gateway: ${target}\n`);
    return EXIT_USAGE;
  }
  let body: unknown;
  if (command.verb === 'create') {
    const read = await readTaskFile(command.file, io);
    if (typeof read === 'string') {
      io.stderr.write(`tes-gateway: ${read}\n`);
      return EXIT_USAGE;
    }
    body = read.task;
  }
  try {
    const client = await TesClient.connect(target.url, target.token);
    const out = (text: string): unknown => io.stdout.write(text);
    switch (command.verb) {
      case 'create': {
        const id = await client.createTask(body);
        out(json ? renderJson({ id }) : `${id}\n`);
        return EXIT_OK;
      }
      case 'list':
        return await list(client, command, json, io);
      case 'get': {
        const task = await client.getTask(command.taskId, command.view);
        out(json ? renderJson(task) : renderTask(task));
        return EXIT_OK;
      }
      case 'cancel':
        return await cancel(client, command.taskIds, json, io);
      case 'wait':
        return await wait(client, command.taskIds, command.timeoutMs, json, io);
      case 'logs':
        return await logs(client, command.taskId, command.follow, json, io);
    }
  } catch (err) {
    const code = exitCodeOfError(err);
    io.stderr.write(`tes-gateway: ${code === EXIT_INTERNAL ? errorText(err) : (err as Error).message}\n`);
    return code;
  }
}

/**
 * The server's URL and token: the flags, else TES_URL and TES_TOKEN, else the gateway's default
 * URL and no token; or what is wrong with them. The token is checked without being echoed.
 */
export function resolveServer(
  server: TaskServer,
  env: Readonly<Record<string, string | undefined>>,
): { url: string; token: string | undefined } | string {
  const given = server.url ?? nonEmpty(env.TES_URL);
  const from = server.url !== undefined ? '--url' : given !== undefined ? 'TES_URL' : 'the default URL';
  const text = given ?? DEFAULT_TES_URL;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `${from}: ${JSON.stringify(text)} is not a URL (write http://host:port/ga4gh/tes/v1)`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `${from}: use an http or https URL`;
  if (url.username !== '' || url.password !== '') {
    return `${from}: the URL must not carry credentials; give the token with --token or TES_TOKEN`;
  }
  if (url.search !== '' || url.hash !== '') return `${from}: the URL takes no query or fragment`;
  const token = (server.token ?? nonEmpty(env.TES_TOKEN))?.trim();
  const tokenFrom = server.token !== undefined ? '--token' : 'TES_TOKEN';
  if (token !== undefined && !/^[\x21-\x7e]+$/.test(token)) {
    return `${tokenFrom}: the token holds spaces or characters an HTTP header cannot carry`;
  }
  return { url: `${url.origin}${url.pathname}`, token: token === '' ? undefined : token };
}

/** The task from FILE, or standard input for `-`; or why it cannot be read. */
async function readTaskFile(file: string, io: TaskIo): Promise<{ task: unknown } | string> {
  const name = file === '-' ? 'standard input' : file;
  let text: string;
  try {
    text = file === '-' ? await io.readStdin() : await readFile(file, 'utf8');
  } catch (err) {
    return `cannot read the task from ${name}: ${(err as Error).message}`;
  }
  try {
    return { task: JSON.parse(text) as unknown };
  } catch (err) {
    return `the task in ${name} is not JSON: ${(err as Error).message}`;
  }
}

async function list(
  client: TesClient,
  command: TaskCommand & { verb: 'list' },
  json: boolean,
  io: TaskIo,
): Promise<number> {
  const tasks: Task[] = [];
  const tokens = new Set<string>();
  let pageToken = command.pageToken;
  let next: string | undefined;
  for (let pages = 0; pages < (command.all ? MAX_LIST_PAGES : 1); pages++) {
    const page = await client.listTasks({
      filter: command.filter,
      view: command.view,
      ...(command.pageSize !== undefined && { pageSize: command.pageSize }),
      ...(pageToken !== undefined && { pageToken }),
    });
    tasks.push(...page.tasks);
    next = page.next_page_token;
    if (next === undefined) break;
    // A server that hands out the same cursor again would have --all read for ever.
    if (tokens.has(next)) {
      throw new TesAnswerError('GET', `${client.baseUrl}/tasks`, `next_page_token ${next} came twice`);
    }
    tokens.add(next);
    pageToken = next;
  }
  io.stdout.write(
    json
      ? renderJson({ tasks, ...(next !== undefined && { next_page_token: next }) })
      : renderTaskTable(tasks),
  );
  if (next !== undefined && !json) {
    io.stderr.write(
      command.all
        ? `tes-gateway: stopped after ${MAX_LIST_PAGES} pages (${tasks.length} tasks); ` +
            `more follow from --page-token ${next}\n`
        : `tes-gateway: more tasks follow: --all lists them all, --page-token ${next} the next page\n`,
    );
  }
  return EXIT_OK;
}

/**
 * Asks the server to cancel each task, then shows the state it is in. What the server answers for a
 * task that has already ended is its own to say: TES servers answer 200 and change nothing (exit 0),
 * others refuse (exit 4, with their message). The exit code is the worst of the tasks'.
 */
async function cancel(
  client: TesClient,
  taskIds: readonly string[],
  json: boolean,
  io: TaskIo,
): Promise<number> {
  let code = EXIT_OK;
  const rows: { id: string; state: string }[] = [];
  for (const id of taskIds) {
    try {
      await client.cancelTask(id);
      rows.push({ id, state: (await client.getTask(id, 'MINIMAL')).state });
    } catch (err) {
      code = Math.max(code, exitCodeOfError(err));
      io.stderr.write(`tes-gateway: cannot cancel ${id}: ${(err as Error).message}\n`);
    }
  }
  if (rows.length > 0) {
    io.stdout.write(
      json
        ? renderJson(rows)
        : renderTable(
            ['TASK', 'STATE'],
            rows.map((r) => [r.id, r.state]),
          ),
    );
  }
  return code;
}

interface WaitRow {
  taskId: string;
  state: string;
  seconds: number;
  done: boolean;
}

/**
 * Polls each task (MINIMAL view) until every one has ended, or `timeoutMs` has passed. On a
 * terminal it redraws one line per task; elsewhere it prints each state change on a line of its
 * own, with the time; with --json it prints only the tasks' last states, as a list, at the end.
 */
async function wait(
  client: TesClient,
  taskIds: readonly string[],
  timeoutMs: number | undefined,
  json: boolean,
  io: TaskIo,
): Promise<number> {
  const started = Date.now();
  const deadline = timeoutMs === undefined ? Infinity : started + timeoutMs;
  const rows: WaitRow[] = taskIds.map((taskId) => ({ taskId, state: '-', seconds: 0, done: false }));
  const tty = !json && io.stdout.isTTY === true;
  let drawnLines = 0;
  let delay = FIRST_POLL_MS;
  for (;;) {
    let changed = false;
    for (const row of rows.filter((r) => !r.done)) {
      const { state } = await poll(() => client.getTask(row.taskId, 'MINIMAL'), io);
      row.seconds = (Date.now() - started) / 1000;
      row.done = isFinalState(state);
      if (state === row.state) continue;
      changed = true;
      row.state = state;
      if (!tty && !json) io.stdout.write(renderStateChange(new Date(), row.taskId, state));
    }
    if (tty) {
      const frame = renderWaitRows(rows);
      // Up to the first line drawn before, then each line cleared and drawn again.
      const lines = frame.slice(0, -1).split('\n');
      io.stdout.write(
        `${drawnLines > 0 ? `\x1b[${drawnLines}A` : ''}${lines.map((l) => `\x1b[2K${l}\n`).join('')}`,
      );
      drawnLines = lines.length;
    }
    if (rows.every((r) => r.done)) break;
    const now = Date.now();
    if (now >= deadline) {
      if (json) io.stdout.write(renderJson(rows.map((r) => ({ id: r.taskId, state: r.state }))));
      const waiting = rows.filter((r) => !r.done).map((r) => `${r.taskId} (${r.state})`);
      io.stderr.write(
        `tes-gateway: gave up waiting after ${(timeoutMs ?? 0) / 1000} s: not ended yet: ${waiting.join(', ')}\n`,
      );
      return EXIT_TIMEOUT;
    }
    delay = changed ? FIRST_POLL_MS : Math.min(delay * 1.5, MAX_POLL_MS);
    await sleep(Math.min(delay, deadline - now));
  }
  if (json) io.stdout.write(renderJson(rows.map((r) => ({ id: r.taskId, state: r.state }))));
  return Math.max(...rows.map((r) => exitCodeOfState(r.state) ?? EXIT_INTERNAL));
}

/**
 * Prints the task's logs (FULL view). With `follow`, polls until the task has ended and prints only
 * what is new each time, then exits as `wait` does; with --json it then prints one JSON object per
 * line: each new piece of a stream, and last `{id, state}`.
 */
async function logs(
  client: TesClient,
  taskId: string,
  follow: boolean,
  json: boolean,
  io: TaskIo,
): Promise<number> {
  const streams = new LogStreams();
  let task = await client.getTask(taskId, 'FULL');
  if (!follow) {
    if (json) {
      io.stdout.write(renderJson({ id: task.id, state: task.state, logs: task.logs ?? [] }));
      return EXIT_OK;
    }
    const text = streams.render(streams.next(task));
    if (text === '') io.stderr.write(`tes-gateway: task ${taskId} has no logs yet (${task.state})\n`);
    io.stdout.write(text + streams.finish());
    return EXIT_OK;
  }
  let delay = FIRST_POLL_MS;
  let state = task.state;
  for (;;) {
    const chunks = streams.next(task);
    io.stdout.write(json ? chunks.map((c) => `${JSON.stringify(c)}\n`).join('') : streams.render(chunks));
    if (isFinalState(task.state)) break;
    delay = chunks.length > 0 || task.state !== state ? FIRST_POLL_MS : Math.min(delay * 1.5, MAX_POLL_MS);
    state = task.state;
    await sleep(delay);
    task = await poll(() => client.getTask(taskId, 'FULL'), io);
  }
  if (json) io.stdout.write(`${JSON.stringify({ id: task.id, state: task.state })}\n`);
  else {
    io.stdout.write(streams.finish());
    io.stderr.write(`tes-gateway: task ${taskId} ended ${task.state}\n`);
  }
  return exitCodeOfState(task.state) ?? EXIT_INTERNAL;
}

/** One poll of a long-running verb: a server that is unreachable or busy is asked again, a few times. */
async function poll<T>(ask: () => Promise<T>, io: TaskIo): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await ask();
    } catch (err) {
      const transient =
        err instanceof TesUnreachableError || (err instanceof TesServerError && err.transient);
      if (!transient || attempt > POLL_RETRIES) throw err;
      const ms = POLL_RETRY_MS * 2 ** (attempt - 1);
      io.stderr.write(`tes-gateway: ${err.message}; trying again in ${ms / 1000} s\n`);
      await sleep(ms);
    }
  }
}

function exitCodeOfError(err: unknown): number {
  if (err instanceof TesServerError || err instanceof TesAnswerError) return EXIT_SERVER_ERROR;
  if (err instanceof TesUnreachableError) return EXIT_UNREACHABLE;
  return EXIT_INTERNAL;
}

function errorText(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

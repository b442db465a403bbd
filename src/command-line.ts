import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isTokenId, parseDuration, tokenLabelProblem } from './identity/tokens.js';
import { TES_STATES } from './tes/state.js';
import { EXIT_USAGE } from './cli/exit-codes.js';
import type { TaskCommand, TaskServer } from './cli/task-command.js';
import { TASK_VIEWS, type TaskView } from './cli/tes-client.js';

/** What `tes-gateway` was asked to do, from its command line. */
export type CommandLine =
  | { kind: 'help' }
  | { kind: 'usage-error'; message: string; exitCode?: number }
  | { kind: 'run'; command: string; configPath?: string; pidFile?: string }
  | { kind: 'token'; token: TokenCommand; configPath?: string }
  | { kind: 'gc'; dryRun: boolean; configPath?: string }
  | { kind: 'task'; task: TaskCommand; server: TaskServer; json: boolean };

/** `tes-gateway token VERB ...`: personal access tokens, managed by the operator. */
export type TokenCommand =
  | { verb: 'create'; user: string; name?: string; expires?: string }
  | { verb: 'list'; user?: string; json: boolean }
  | { verb: 'revoke'; tokenId: string };

/** The options of each token verb; any other is a usage error. */
const TOKEN_OPTIONS = {
  create: {
    config: { type: 'string' },
    user: { type: 'string' },
    name: { type: 'string' },
    expires: { type: 'string' },
  },
  list: { config: { type: 'string' }, user: { type: 'string' }, json: { type: 'boolean' } },
  revoke: { config: { type: 'string' } },
} as const satisfies Record<TokenCommand['verb'], ParseArgsConfig['options']>;

const OPTIONS = {
  config: { type: 'string' },
  'pid-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * Reads `[COMMAND] [--config FILE] [--pid-file FILE] [--help]`. The command, when given, comes first
 * (`serve` otherwise); whether it is a known command is for the caller to say. Parsing is strict: an
 * unknown option, a stray argument, or an option that lacks its value (a trailing `--config`) is a
 * usage error rather than a setting silently left out.
 */
export function parseCommandLine(argv: readonly string[]): CommandLine {
  // Asking for help wins over anything else on the line, as it did before parsing was strict.
  if (argv.includes('--help') || argv.includes('-h')) return { kind: 'help' };
  if (argv[0] === 'token') return parseTokenLine(argv.slice(1));
  if (argv[0] === 'gc') return parseGcLine(argv.slice(1));
  if (argv[0] === 'task') return parseTaskLine(argv.slice(1));
  const hasCommand = argv[0] !== undefined && !argv[0].startsWith('-');
  const command = hasCommand ? argv[0]! : 'serve';
  let values: { config?: string; 'pid-file'?: string };
  try {
    ({ values } = parseArgs({
      args: argv.slice(hasCommand ? 1 : 0),
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    return { kind: 'usage-error', message: usageMessage(err) };
  }
  return { kind: 'run', command, configPath: values.config, pidFile: values['pid-file'] };
}

/**
 * Reads what follows `token`: `create --user NAME [--name LABEL] [--expires DURATION]`,
 * `list [--user NAME] [--json]` or `revoke ID`, each with `[--config FILE]`. The shape of each value
 * is checked here; whether the user may have a token and the lifetime is allowed depend on the
 * configuration, and are the command's to say.
 */
function parseTokenLine(argv: readonly string[]): CommandLine {
  const verb = argv[0];
  if (verb === undefined || verb.startsWith('-')) {
    return { kind: 'usage-error', message: 'token needs a verb: create, list or revoke' };
  }
  if (!Object.hasOwn(TOKEN_OPTIONS, verb)) {
    return {
      kind: 'usage-error',
      message: `unknown token verb ${JSON.stringify(verb)}: use create, list or revoke`,
    };
  }
  let values: { config?: string; user?: string; name?: string; expires?: string; json?: boolean };
  let positionals: string[];
  try {
    const parsed = parseArgs({
      args: argv.slice(1),
      options: TOKEN_OPTIONS[verb as TokenCommand['verb']],
      strict: true,
      allowPositionals: verb === 'revoke',
    });
    // Each verb's options are a subset of these, with these types (TOKEN_OPTIONS).
    values = parsed.values as typeof values;
    positionals = parsed.positionals;
  } catch (err) {
    return { kind: 'usage-error', message: usageMessage(err) };
  }
  const problem = tokenProblem(verb as TokenCommand['verb'], values, positionals);
  if (problem !== undefined) return { kind: 'usage-error', message: problem };
  const { config, user, name, expires, json } = values;
  const token: TokenCommand =
    verb === 'create'
      ? { verb, user: user!, ...(name !== undefined && { name }), ...(expires !== undefined && { expires }) }
      : verb === 'list'
        ? { verb, ...(user !== undefined && { user }), json: json === true }
        : { verb: 'revoke', tokenId: positionals[0]! };
  return { kind: 'token', token, ...(config !== undefined && { configPath: config }) };
}

/** What is wrong with the values of a token verb's options and arguments, if anything. */
function tokenProblem(
  verb: TokenCommand['verb'],
  values: { user?: string; name?: string; expires?: string },
  positionals: readonly string[],
): string | undefined {
  if (verb === 'revoke') {
    if (positionals.length !== 1) return 'token revoke needs one token id (token list shows them)';
    // The argument is not echoed: it may be a whole token, secret included, pasted by mistake.
    if (!isTokenId(positionals[0]!)) return 'a token id is 16 hexadecimal digits, as token list shows it';
    return undefined;
  }
  if (verb === 'list') return undefined;
  if (values.user === undefined) return 'token create needs --user NAME';
  const labelProblem = values.name === undefined ? undefined : tokenLabelProblem(values.name);
  if (labelProblem !== undefined) return `--name: ${labelProblem}`;
  if (values.expires !== undefined) {
    try {
      parseDuration(values.expires);
    } catch (err) {
      return `--expires: ${(err as Error).message}`;
    }
  }
  return undefined;
}

/** Reads what follows `gc`: `[--dry-run] [--config FILE]`. */
function parseGcLine(argv: readonly string[]): CommandLine {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, 'dry-run': { type: 'boolean' } },
      strict: true,
      allowPositionals: false,
    });
    return {
      kind: 'gc',
      dryRun: values['dry-run'] === true,
      ...(values.config !== undefined && { configPath: values.config }),
    };
  } catch (err) {
    return { kind: 'usage-error', message: usageMessage(err) };
  }
}

/** The options every task verb takes: which TES server, with which token, and JSON output. */
const TASK_SERVER_OPTIONS = {
  url: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/** The options of each task verb besides TASK_SERVER_OPTIONS; any other is a usage error. */
const TASK_OPTIONS = {
  create: {},
  list: {
    state: { type: 'string' },
    'name-prefix': { type: 'string' },
    tag: { type: 'string', multiple: true },
    view: { type: 'string' },
    'page-size': { type: 'string' },
    'page-token': { type: 'string' },
    all: { type: 'boolean' },
  },
  get: { view: { type: 'string' } },
  cancel: {},
  wait: { timeout: { type: 'string' } },
  logs: { follow: { type: 'boolean', short: 'f' } },
} as const satisfies Record<TaskCommand['verb'], ParseArgsConfig['options']>;

interface TaskValues {
  url?: string;
  token?: string;
  json?: boolean;
  state?: string;
  'name-prefix'?: string;
  tag?: string[];
  view?: string;
  'page-size'?: string;
  'page-token'?: string;
  all?: boolean;
  timeout?: string;
  follow?: boolean;
}

/** The largest page_size TES 1.1 allows ("less than 2048"). */
const MAX_PAGE_SIZE = 2047;

/**
 * Reads what follows `task`: `create FILE|-`, `list [--state S] [--name-prefix P] [--tag KEY[=VALUE]]...
 * [--view V] [--page-size N] [--page-token T] [--all]`, `get ID [--view V]`, `cancel ID...`,
 * `wait ID... [--timeout DURATION]` or `logs ID [--follow]`, each with `[--url URL] [--token TOKEN]
 * [--json]`. Usage errors exit with EXIT_USAGE (64): the low codes are the tasks' outcomes.
 */
function parseTaskLine(argv: readonly string[]): CommandLine {
  const refuse = (message: string): CommandLine => ({ kind: 'usage-error', message, exitCode: EXIT_USAGE });
  const verbs = Object.keys(TASK_OPTIONS).join(', ');
  const verb = argv[0];
  if (verb === undefined || verb.startsWith('-')) return refuse(`task needs a verb: ${verbs}`);
  if (!Object.hasOwn(TASK_OPTIONS, verb)) {
    return refuse(`unknown task verb ${JSON.stringify(verb)}: use ${verbs}`);
  }
  let values: TaskValues;
  let positionals: string[];
  try {
    const parsed = parseArgs({
      args: argv.slice(1),
      options: { ...TASK_SERVER_OPTIONS, ...TASK_OPTIONS[verb as TaskCommand['verb']] },
      strict: true,
      allowPositionals: true,
    });
    // Each verb's options are a subset of these, with these types (TASK_OPTIONS).
    values = parsed.values as TaskValues;
    positionals = parsed.positionals;
  } catch (err) {
    return refuse(usageMessage(err));
  }
  const task = toTaskCommand(verb as TaskCommand['verb'], values, positionals);
  if (typeof task === 'string') return refuse(task);
  const { url, token } = values;
  return {
    kind: 'task',
    task,
    server: { ...(url !== undefined && { url }), ...(token !== undefined && { token }) },
    json: values.json === true,
  };
}

/** The task verb's command from its checked options and arguments, or what is wrong with them. */
function toTaskCommand(
  verb: TaskCommand['verb'],
  values: TaskValues,
  args: readonly string[],
): TaskCommand | string {
  const emptyId = args.findIndex((a) => a.trim() === '');
  if (emptyId >= 0) return `task ${verb}: argument ${emptyId + 1} is empty, not a task id`;
  switch (verb) {
    case 'create':
      if (args.length !== 1)
        return 'task create needs one task file (JSON), or - to read it from standard input';
      return { verb, file: args[0]! };
    case 'get':
    case 'logs':
      if (args.length !== 1) return `task ${verb} needs one task id`;
      if (verb === 'logs') return { verb, taskId: args[0]!, follow: values.follow === true };
      return withView(values.view, (view) => ({ verb, taskId: args[0]!, view }));
    case 'cancel':
      if (args.length === 0) return 'task cancel needs one or more task ids';
      return { verb, taskIds: [...args] };
    case 'wait': {
      if (args.length === 0) return 'task wait needs one or more task ids';
      if (values.timeout === undefined) return { verb, taskIds: [...args] };
      const timeoutMs = parseWaitTimeout(values.timeout);
      if (timeoutMs === undefined) {
        return `--timeout: ${JSON.stringify(values.timeout)} is not a duration: write seconds (90), or a number and a unit (500ms, 30s, 10m, 2h)`;
      }
      return { verb, taskIds: [...args], timeoutMs };
    }
    case 'list':
      return toListCommand(values, args);
  }
}

function toListCommand(values: TaskValues, args: readonly string[]): TaskCommand | string {
  if (args.length > 0) {
    return `task list takes no task ids (${JSON.stringify(args[0])}): filter with --state, --name-prefix or --tag`;
  }
  const state = values.state?.toUpperCase();
  if (state !== undefined && !(TES_STATES as readonly string[]).includes(state)) {
    return `--state: ${JSON.stringify(values.state)} is not a TES state (${TES_STATES.join(', ')})`;
  }
  const tags: { key: string; value?: string }[] = [];
  for (const tag of values.tag ?? []) {
    const eq = tag.indexOf('=');
    const key = eq < 0 ? tag : tag.slice(0, eq);
    if (key === '') return `--tag: ${JSON.stringify(tag)} has no key (write KEY or KEY=VALUE)`;
    tags.push(eq < 0 ? { key } : { key, value: tag.slice(eq + 1) });
  }
  const size = values['page-size'];
  const pageSize = size === undefined ? undefined : /^\d{1,5}$/.test(size) ? Number(size) : NaN;
  if (pageSize !== undefined && !(pageSize >= 1 && pageSize <= MAX_PAGE_SIZE)) {
    return `--page-size: ${JSON.stringify(size)} is not a whole number from 1 to ${MAX_PAGE_SIZE}`;
  }
  const namePrefix = values['name-prefix'];
  const pageToken = values['page-token'];
  return withView(values.view, (view) => ({
    verb: 'list',
    filter: { ...(state !== undefined && { state }), ...(namePrefix !== undefined && { namePrefix }), tags },
    view,
    ...(pageSize !== undefined && { pageSize }),
    ...(pageToken !== undefined && { pageToken }),
    all: values.all === true,
  }));
}

/** The command built with the --view asked for (BASIC when none is), or what is wrong with it. */
function withView(text: string | undefined, build: (view: TaskView) => TaskCommand): TaskCommand | string {
  const view = (text ?? 'BASIC').toUpperCase();
  if (!(TASK_VIEWS as readonly string[]).includes(view)) {
    return `--view: ${JSON.stringify(text)} is not a view (${TASK_VIEWS.join(', ')})`;
  }
  return build(view as TaskView);
}

const WAIT_TIMEOUT = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/;
const WAIT_UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** `--timeout` in milliseconds: seconds when no unit is written; undefined when it is no duration. */
function parseWaitTimeout(text: string): number | undefined {
  const match = WAIT_TIMEOUT.exec(text);
  if (!match) return undefined;
  return Number(match[1]) * WAIT_UNIT_MS[(match[2] ?? 's') as keyof typeof WAIT_UNIT_MS];
}

/** The first sentence of parseArgs' complaint, in lower case like the gateway's other messages. */
function usageMessage(err: unknown): string {
  // Read the message, not `instanceof Error`: the error may come from another realm (jest's vm).
  const text = (err as { message?: unknown }).message;
  const first = (typeof text === 'string' ? text : String(err)).split(/\.\s|\n/)[0]!.trim();
  return first.charAt(0).toLowerCase() + first.slice(1);
}

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isTokenId, parseDuration, tokenLabelProblem } from './identity/tokens.js';

/** What `tes-gateway` was asked to do, from its command line. */
export type CommandLine =
  | { kind: 'help' }
  | { kind: 'usage-error'; message: string }
  | { kind: 'run'; command: string; configPath?: string; pidFile?: string }
  | { kind: 'token'; token: TokenCommand; configPath?: string }
  | { kind: 'gc'; dryRun: boolean; configPath?: string };

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

/** The first sentence of parseArgs' complaint, in lower case like the gateway's other messages. */
function usageMessage(err: unknown): string {
  // Read the message, not `instanceof Error`: the error may come from another realm (jest's vm).
  const text = (err as { message?: unknown }).message;
  const first = (typeof text === 'string' ? text : String(err)).split(/\.\s|\n/)[0]!.trim();
  return first.charAt(0).toLowerCase() + first.slice(1);
}

import { parseArgs } from 'node:util';

/** What `tes-gateway` was asked to do, from its command line. */
export type CommandLine =
  | { kind: 'help' }
  | { kind: 'usage-error'; message: string }
  | { kind: 'run'; command: string; configPath?: string; pidFile?: string };

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

/** The first sentence of parseArgs' complaint, in lower case like the gateway's other messages. */
function usageMessage(err: unknown): string {
  // Read the message, not `instanceof Error`: the error may come from another realm (jest's vm).
  const text = (err as { message?: unknown }).message;
  const first = (typeof text === 'string' ? text : String(err)).split(/\.\s|\n/)[0]!.trim();
  return first.charAt(0).toLowerCase() + first.slice(1);
}

import { userInfo } from 'node:os';
import type { TokenCommand } from './command-line.js';
import type { Config } from './config/schema.js';
import { connectRedis } from './gateway.js';
import { userNameProblem } from './identity/identity.js';
import { parseDuration, TokenStore, type TokenInfo } from './identity/tokens.js';
import { Keys } from './store/keys.js';

/** Where the command writes: the process's streams, or a test's. */
export interface CommandOutput {
  stdout(text: string): void;
  stderr(text: string): void;
}

const PROCESS_OUTPUT: CommandOutput = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/**
 * `tes-gateway token create|list|revoke`: the operator's hand on personal access tokens. Returns the
 * exit code: 0 done, 1 no such token to revoke, 2 a request the configuration refuses (a user who
 * may not have a token, a lifetime beyond auth.tokens.maxLifetime).
 */
export async function runTokenCommand(
  command: TokenCommand,
  config: Config,
  out: CommandOutput = PROCESS_OUTPUT,
): Promise<number> {
  const refusal = command.verb === 'create' ? createProblem(command, config) : undefined;
  if (refusal !== undefined) {
    out.stderr(`tes-gateway: ${refusal}\n`);
    return 2;
  }
  const redis = connectRedis(config);
  // Kept for the message instead of printed as ioredis's unhandled error events.
  let connectionError: Error | undefined;
  redis.on('error', (err: Error) => (connectionError = err));
  try {
    const store = new TokenStore(redis, new Keys(config.redis.prefix).tokens, {
      cacheTtlMs: config.auth.tokens.cacheTtlMs,
    });
    switch (command.verb) {
      case 'create':
        return await create(store, command, config, out);
      case 'list':
        return await list(store, command, out);
      case 'revoke':
        return await revoke(store, command.tokenId, out);
    }
  } catch (err) {
    if (connectionError === undefined) throw err;
    throw new Error(`cannot reach Redis: ${connectionError.message}`, { cause: err });
  } finally {
    redis.disconnect();
  }
}

/** Why the configuration refuses this token, or undefined when it allows it. */
function createProblem(command: TokenCommand & { verb: 'create' }, config: Config): string | undefined {
  const userProblem = userNameProblem(command.user, config.identity.denyUsers);
  if (userProblem !== undefined) return `--user: ${userProblem}`;
  const { defaultLifetime, maxLifetime } = config.auth.tokens;
  const lifetime = command.expires ?? defaultLifetime;
  if (parseDuration(lifetime) > parseDuration(maxLifetime)) {
    const given = command.expires !== undefined ? '--expires' : 'auth.tokens.defaultLifetime';
    return `${given} ${lifetime} is longer than auth.tokens.maxLifetime (${maxLifetime}) allows`;
  }
  return undefined;
}

async function create(
  store: TokenStore,
  command: TokenCommand & { verb: 'create' },
  config: Config,
  out: CommandOutput,
): Promise<number> {
  const lifetimeMs = parseDuration(command.expires ?? config.auth.tokens.defaultLifetime);
  const { token, info } = await store.create({
    user: command.user,
    ...(command.name !== undefined && { name: command.name }),
    lifetimeMs,
  });
  // The token alone on the first line, so that `| head -1` captures it.
  out.stdout(`${token}\n`);
  out.stdout(
    `shown once, keep it now (only its hash is stored): token ${info.id} for ${info.user}` +
      `${info.name !== undefined ? ` (${info.name})` : ''}, expires ${info.expiresAt}\n`,
  );
  out.stderr(auditLine('token created', info));
  return 0;
}

async function list(
  store: TokenStore,
  command: TokenCommand & { verb: 'list' },
  out: CommandOutput,
): Promise<number> {
  const tokens = await store.list(command.user);
  const now = Date.now();
  if (command.json) {
    const rows = tokens.map((t) => ({ ...t, expired: Date.parse(t.expiresAt) <= now }));
    out.stdout(`${JSON.stringify(rows, null, 2)}\n`);
  } else {
    out.stdout(renderTokenTable(tokens, now));
  }
  return 0;
}

async function revoke(store: TokenStore, tokenId: string, out: CommandOutput): Promise<number> {
  const info = await store.revoke(tokenId);
  if (!info) {
    out.stderr(`tes-gateway: no token ${tokenId} (token list shows the tokens there are)\n`);
    return 1;
  }
  out.stdout(`revoked token ${info.id} of ${info.user}${info.name !== undefined ? ` (${info.name})` : ''}\n`);
  out.stderr(auditLine('token revoked', info));
  return 0;
}

/** The tokens as a table for people: times to the second, expired ones marked. */
export function renderTokenTable(tokens: readonly TokenInfo[], nowMs: number): string {
  if (tokens.length === 0) return 'no tokens\n';
  const time = (iso: string): string => iso.replace(/\.\d{3}Z$/, 'Z');
  const rows = [
    ['ID', 'USER', 'LABEL', 'CREATED', 'LAST USED', 'EXPIRES'],
    ...tokens.map((t) => [
      t.id,
      t.user,
      t.name ?? '-',
      time(t.createdAt),
      t.lastUsedAt !== undefined ? time(t.lastUsedAt) : 'never',
      `${time(t.expiresAt)}${Date.parse(t.expiresAt) <= nowMs ? ' (expired)' : ''}`,
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => [...row[column]!].length)));
  const pad = (cell: string, width: number): string => cell + ' '.repeat(width - [...cell].length);
  return rows
    .map(
      (row) =>
        `${row
          .map((cell, i) => pad(cell, widths[i]!))
          .join('  ')
          .trimEnd()}\n`,
    )
    .join('');
}

/** One JSON line on stderr for the audit trail: what changed, whose token, and who changed it. */
function auditLine(event: 'token created' | 'token revoked', info: TokenInfo): string {
  return `${JSON.stringify({
    time: new Date().toISOString(),
    service: 'tes-gateway',
    audit: true,
    event,
    user: info.user,
    tokenId: info.id,
    by: operatorName(),
    from: 'command line',
  })}\n`;
}

/** The account running the command; a container may have no passwd entry for its uid. */
function operatorName(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? 'unknown'}`;
  }
}

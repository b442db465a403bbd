#!/usr/bin/env node
import cluster from 'node:cluster';
import { loadConfig } from './config/load-config.js';
import { ConfigError } from './errors.js';
import { checkStartup } from './config/startup-checks.js';
import { parseCommandLine, type TokenCommand } from './command-line.js';
import { buildImageResolver, connectRedis, startGateway, type Gateway, type Roles } from './gateway.js';
import { ImageCache } from './apptainer/image-cache.js';
import type { Config } from './config/schema.js';
import { RedisTaskStore } from './store/redis-task-store.js';
import { runTokenCommand } from './token-command.js';
import { runGcCommand } from './gc-command.js';
import { runTaskCommand } from './cli/task-command.js';
import { createLogger, type Logger } from './logger.js';
import {
  PidFileError,
  removePidFile,
  runningGateway,
  stopGateway,
  writePidFile,
  STOP_TIMEOUT_MS,
} from './pid-file.js';

const USAGE = `usage: tes-gateway <serve|api|worker> [--config FILE] [--pid-file FILE]
       tes-gateway images [--config FILE]
       tes-gateway gc [--dry-run] [--config FILE]
       tes-gateway stop --pid-file FILE
       tes-gateway token create --user NAME [--name LABEL] [--expires DURATION] [--config FILE]
       tes-gateway token list [--user NAME] [--json] [--config FILE]
       tes-gateway token revoke ID [--config FILE]
       tes-gateway task create FILE|- [--url URL] [--token TOKEN] [--json]
       tes-gateway task list [--state STATE] [--name-prefix PREFIX] [--tag KEY[=VALUE]]...
                 [--view VIEW] [--page-size N] [--page-token TOKEN] [--all] [--url ...] [--json]
       tes-gateway task get ID [--view MINIMAL|BASIC|FULL] [--url ...] [--json]
       tes-gateway task cancel ID... [--url ...] [--json]
       tes-gateway task wait ID... [--timeout DURATION] [--url ...] [--json]
       tes-gateway task logs ID [--follow] [--url ...] [--json]

  serve    the API, the queue workers and the reconciler in one process (the default)
  api      only the HTTP API (scale it out behind a load balancer)
  worker   only the queue workers and the reconciler (one reconciler leads across all workers)
  images   report the shared image cache: each image's size and last use, the total and the cap
  gc       expire now every finished task older than retention.terminalTasksDays (its record,
           index entries, queue jobs and task directory), as the leader does in the background;
           --dry-run shows what would go (count by state, oldest and newest end, bytes) and changes
           nothing
  stop     stop the gateway that FILE names: SIGTERM, then wait until it has finished its current
           work and exited (at most ${STOP_TIMEOUT_MS / 1000} s)
  token    personal access tokens for auth.mode tokens. create prints a new token once (it lasts
           auth.tokens.defaultLifetime, or --expires: 30m, 12h, 90d, 2w; at most
           auth.tokens.maxLifetime); list shows tokens without their secrets; revoke ends one, in
           running gateways within auth.tokens.cacheTtlMs
  task     a client of any TES 1.1 server, this gateway or another: create a task from a JSON
           file (- reads standard input) and print its id; list tasks, newest first (BASIC view;
           --all follows next_page_token, at most 100 pages); get one (BASIC view unless --view);
           cancel; wait until tasks end (redrawn lines on a terminal, state changes elsewhere);
           logs prints each executor's stdout and stderr tails and the system logs (--follow:
           what is new, until the task ends). Text by default, JSON with --json.
           --url, or TES_URL (default http://127.0.0.1:8000/ga4gh/tes/v1): a path ending in /v1
           is the API's base; another URL is tried as given, then with /ga4gh/tes/v1 added.
           --token, or TES_TOKEN (which keeps it out of the process list): sent as a bearer token.
           Exit codes: 0 done (wait and logs --follow: every task COMPLETE), 1 EXECUTOR_ERROR,
           2 SYSTEM_ERROR, 3 CANCELED or PREEMPTED (wait: the largest code of its tasks), 4 the
           server answered an error, 5 the server could not be reached, 6 wait --timeout ran out
           (DURATION: 90 seconds, 500ms, 30s, 10m, 2h), 64 usage, 70 an internal failure

--pid-file FILE: serve, api and worker write their process id there as they start, and remove it
when they stop; they refuse to start while it names a gateway that still runs.

Configuration: a YAML file (--config or TES_GATEWAY_CONFIG), checked at start. These environment
variables override it: TES_GATEWAY_PORT, TES_GATEWAY_HOST, TES_GATEWAY_REDIS_URL,
TES_GATEWAY_REDIS_PREFIX, TES_GATEWAY_BACKEND, TES_GATEWAY_WORK_ROOT, TES_GATEWAY_APPTAINER,
TES_GATEWAY_CONTAINER_RUNTIME, TES_GATEWAY_LOG_LEVEL, TES_GATEWAY_POLL_INTERVAL_MS,
TES_GATEWAY_WORKER_HTTP_HOST, TES_GATEWAY_WORKER_HTTP_PORT, TES_GATEWAY_S3_ACCESS_KEY_ID and
TES_GATEWAY_S3_SECRET_ACCESS_KEY.`;

const ROLES: Record<string, Roles> = {
  serve: { api: true, worker: true },
  api: { api: true, worker: false },
  worker: { api: false, worker: true },
};

async function main(argv: string[]): Promise<void> {
  // A reader that stops early (`tes-gateway token create ... 2>&1 | head -1`) is not a failure.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    });
  }
  const line = parseCommandLine(argv);
  if (line.kind === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (line.kind === 'usage-error') {
    process.stderr.write(`tes-gateway: ${line.message}\n${USAGE}\n`);
    process.exit(line.exitCode ?? 2);
  }
  if (line.kind === 'task') {
    process.exitCode = await runTaskCommand(line.task, line.server, line.json);
    return;
  }
  if (line.kind === 'token') {
    process.exitCode = await token(line.token, line.configPath);
    return;
  }
  if (line.kind === 'gc') {
    process.exitCode = await gc(line.dryRun, line.configPath);
    return;
  }
  const { command, configPath, pidFile } = line;
  const roles = ROLES[command];
  if (!roles && command !== 'images' && command !== 'stop') {
    process.stderr.write(`tes-gateway: unknown command ${command}\n${USAGE}\n`);
    process.exit(2);
  }
  if (command === 'stop' ? !pidFile : command === 'images' && pidFile !== undefined) {
    process.stderr.write(
      `tes-gateway: --pid-file FILE is ${command === 'stop' ? 'required' : 'not used'} for ${command}\n${USAGE}\n`,
    );
    process.exit(2);
  }
  if (command === 'stop') {
    await stop(pidFile!);
    return;
  }
  // API processes that `server.processes` forks run this too; only the first one owns the file.
  const ownsPidFile = pidFile !== undefined && cluster.isPrimary;
  if (ownsPidFile) {
    const running = runningGateway(pidFile, process.argv[1]!);
    if (running !== undefined) {
      process.stderr.write(
        `tes-gateway: --pid-file ${pidFile}: a gateway already runs as process ${running} ` +
          `(tes-gateway stop --pid-file ${pidFile} stops it)\n`,
      );
      process.exit(2);
    }
  }
  const source = configPath ?? process.env.TES_GATEWAY_CONFIG ?? '(defaults)';
  let config: Config;
  let gateway: Gateway;
  let logger: Logger;
  try {
    config = loadConfig({ path: configPath });
    if (command === 'images') {
      await reportImages(config);
      return;
    }
    logger = createLogger(config.log.level, { role: command });
    if (command === 'api' && config.server.processes > 1 && cluster.isPrimary) {
      // Checked here, once: a child that stopped on its settings would be restarted for ever.
      await checkStartup(config, false, source);
      if (ownsPidFile) ownPidFile(pidFile);
      superviseApiProcesses(config.server.processes, logger);
      return;
    }
    if (ownsPidFile) ownPidFile(pidFile);
    gateway = await startGateway(config, roles!, logger, source);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof PidFileError) {
      process.stderr.write(`tes-gateway: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  logger.info(
    {
      role: command,
      port: gateway.port,
      ...(gateway.opsPort !== undefined ? { probePort: gateway.opsPort } : {}),
      backend: config.backend,
      workRoot: config.workRoot,
      redisPrefix: config.redis.prefix,
    },
    'tes-gateway started',
  );
  let closing = false;
  const shutdown = (signal: string): void => {
    if (closing) return;
    closing = true;
    logger.info({ signal }, 'shutting down');
    gateway.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

/** Writes this process's id to the pid file, and removes it however the process ends. */
function ownPidFile(file: string): void {
  writePidFile(file, process.pid);
  process.on('exit', () => removePidFile(file, process.pid));
}

/** `tes-gateway stop`: exit code 0 once the gateway has gone (or was gone already), 1 otherwise. */
async function stop(pidFile: string): Promise<void> {
  try {
    process.stdout.write(`tes-gateway: ${await stopGateway(pidFile, process.argv[1]!)}\n`);
  } catch (err) {
    if (!(err instanceof PidFileError)) throw err;
    process.stderr.write(`tes-gateway: ${err.message}\n`);
    process.exit(1);
  }
}

/**
 * `tes-gateway api` with server.processes > 1: that many API processes share the port (the API is
 * stateless around Redis). One that dies is replaced; SIGTERM stops them all.
 */
function superviseApiProcesses(count: number, logger: Logger): void {
  let stopping = false;
  for (let i = 0; i < count; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    logger.error({ pid: worker.process.pid, code, signal }, 'an API process stopped; starting another');
    cluster.fork();
  });
  const stop = (signal: NodeJS.Signals): void => {
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal);
    process.exitCode = 0;
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGTERM'));
}

/** `tes-gateway token ...`: its exit code. */
function token(command: TokenCommand, configPath: string | undefined): Promise<number> {
  return withConfig(`token ${command.verb}`, configPath, (config) => runTokenCommand(command, config));
}

/** `tes-gateway gc`: its exit code. */
function gc(dryRun: boolean, configPath: string | undefined): Promise<number> {
  return withConfig('gc', configPath, (config) => runGcCommand({ dryRun }, config));
}

/**
 * Runs an operator's command with the configuration: one that does not load is a usage error (2), a
 * command that fails is 1, with what failed on stderr.
 */
async function withConfig(
  what: string,
  configPath: string | undefined,
  run: (config: Config) => Promise<number>,
): Promise<number> {
  let config: Config;
  try {
    config = loadConfig({ path: configPath });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`tes-gateway: ${err.message}\n`);
    return 2;
  }
  try {
    return await run(config);
  } catch (err) {
    process.stderr.write(`tes-gateway: ${what} failed: ${(err as Error).message}\n`);
    return 1;
  }
}

/** `tes-gateway images`: what the shared image cache holds, for the operator. */
async function reportImages(config: Config): Promise<void> {
  const redis = connectRedis(config);
  try {
    const store = new RedisTaskStore(redis, {
      prefix: config.redis.prefix,
      maxBacklog: config.server.maxBacklog,
    });
    const cache = buildImageResolver(config, redis, store, createLogger('silent'));
    if (!(cache instanceof ImageCache)) {
      process.stdout.write(`no image cache: the ${config.container.runtime} runtime does not use images\n`);
      return;
    }
    const images = await cache.report();
    const total = images.reduce((sum, i) => sum + i.bytes, 0);
    const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
    for (const i of images) {
      const used = i.lastUsedMs > 0 ? new Date(i.lastUsedMs).toISOString() : 'never recorded';
      process.stdout.write(`${mib(i.bytes).padStart(12)}  ${used.padEnd(24)}  ${i.path}\n`);
    }
    const cap = config.container.imageCacheMaxBytes;
    process.stdout.write(
      `${images.length} images, ${mib(total)} in ${config.container.imageCacheDir}` +
        `${cap ? ` (cap ${mib(cap)})` : ' (no cap: container.imageCacheMaxBytes)'}\n`,
    );
  } finally {
    redis.disconnect();
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`tes-gateway: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});

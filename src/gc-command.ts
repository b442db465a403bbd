import type { Config } from './config/schema.js';
import { connectRedis, userHelperOf } from './gateway.js';
import { TaskQueues } from './queue/producer.js';
import { Keys } from './store/keys.js';
import { TaskRetention, type ExpiryTally } from './task-retention.js';
import { TERMINAL_STATES } from './tes/state.js';
import type { CommandOutput } from './token-command.js';

const PROCESS_OUTPUT: CommandOutput = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/**
 * `tes-gateway gc [--dry-run]`: expires every finished task past retention.terminalTasksDays now,
 * the leader's housekeeping done at once, and says what went; with --dry-run, says what would go and
 * changes nothing. Returns the exit code: 0 done, 1 some tasks could not be removed (the next sweep
 * tries again).
 */
export async function runGcCommand(
  command: { dryRun: boolean },
  config: Config,
  out: CommandOutput = PROCESS_OUTPUT,
  nowMs: number = Date.now(),
): Promise<number> {
  const days = config.retention.terminalTasksDays;
  if (days === 0) {
    out.stdout('retention.terminalTasksDays is 0: finished tasks are kept for ever, nothing expires\n');
    return 0;
  }
  const redis = connectRedis(config);
  // Kept for the message instead of printed as ioredis's unhandled error events.
  let connectionError: Error | undefined;
  redis.on('error', (err: Error) => (connectionError = err));
  // A dry run changes nothing, not even the queues' own keys: it makes no queues.
  const queues = command.dryRun
    ? undefined
    : new TaskQueues(redis, new Keys(config.redis.prefix).bullPrefix, {
        submitAttempts: config.worker.submitAttempts,
        submitBackoffMs: config.worker.submitBackoffMs,
      });
  try {
    const retention = new TaskRetention({
      redis,
      prefix: config.redis.prefix,
      queues,
      workRoot: config.workRoot,
      runAs: userHelperOf(config),
      terminalTasksDays: days,
      batchSize: config.retention.batchSize,
      onFailure: (taskId, err) =>
        out.stderr(`tes-gateway: could not expire task ${taskId}: ${(err as Error).message}\n`),
    });
    const cutoffMs = retention.cutoffAt(nowMs);
    const tally = command.dryRun ? await retention.survey(nowMs) : await retention.sweep(nowMs);
    out.stdout(renderGcReport(tally, { dryRun: command.dryRun, cutoffMs, days }));
    return tally.failed > 0 ? 1 : 0;
  } catch (err) {
    if (connectionError === undefined) throw err;
    throw new Error(`cannot reach Redis: ${connectionError.message}`, { cause: err });
  } finally {
    await queues?.close().catch(() => undefined);
    redis.disconnect();
  }
}

/** The report for people: how many by state, the span of their ends, the bytes of their directories. */
export function renderGcReport(
  tally: ExpiryTally,
  context: { dryRun: boolean; cutoffMs: number; days: number },
): string {
  const time = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const verb = context.dryRun ? 'would expire' : 'expired';
  const lines = [
    `${verb} ${tally.count} finished ${tally.count === 1 ? 'task' : 'tasks'} that ended before ` +
      `${time(context.cutoffMs)} (retention.terminalTasksDays ${context.days})`,
  ];
  const width = Math.max(...TERMINAL_STATES.map((s) => s.length));
  for (const state of TERMINAL_STATES) {
    const n = tally.byState[state];
    if (n !== undefined) lines.push(`  ${state.padEnd(width)}  ${n}`);
  }
  if (tally.oldestEndMs !== undefined && tally.newestEndMs !== undefined) {
    lines.push(`oldest end ${time(tally.oldestEndMs)}, newest end ${time(tally.newestEndMs)}`);
  }
  const mib = (tally.bytes / 2 ** 20).toFixed(1);
  lines.push(`task directories: ${tally.bytes} bytes (${mib} MiB)${context.dryRun ? '' : ' removed'}`);
  if (tally.arrayFiles > 0) {
    lines.push(
      `job array files in .arrays/: ${tally.arrayFiles} (${tally.arrayBytes} bytes)${context.dryRun ? '' : ' removed'}`,
    );
  }
  if (tally.orphanDirs > 0) {
    lines.push(
      `task directories no task record points to: ${tally.orphanDirs} (${tally.orphanBytes} bytes)` +
        (context.dryRun ? '' : ' removed'),
    );
  }
  if (tally.failed > 0) {
    lines.push(`${tally.failed} could not be removed (each is named above); the next sweep tries them again`);
  }
  if (context.dryRun) lines.push('nothing was changed (--dry-run)');
  return `${lines.join('\n')}\n`;
}

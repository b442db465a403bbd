import type { TesTaskLog } from './types.js';

/**
 * The task's log of its current attempt (TES `logs[0]`, since the gateway runs a task once).
 * Functions return new arrays: stored logs are replaced whole.
 */
export function currentLog(logs: readonly TesTaskLog[] | undefined): TesTaskLog {
  return logs?.[0] ? { ...logs[0] } : { logs: [], outputs: [] };
}

export function withSystemLogs(
  logs: readonly TesTaskLog[] | undefined,
  lines: readonly string[],
): TesTaskLog[] {
  const log = currentLog(logs);
  if (lines.length > 0) log.system_logs = [...(log.system_logs ?? []), ...lines];
  return [log, ...(logs ?? []).slice(1)];
}

export function withLog(logs: readonly TesTaskLog[] | undefined, patch: Partial<TesTaskLog>): TesTaskLog[] {
  return [{ ...currentLog(logs), ...patch }, ...(logs ?? []).slice(1)];
}

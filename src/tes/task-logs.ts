import type { TesTaskLog } from './types.js';

/**
 * The task's log of its current attempt (TES `logs[0]`, since the gateway runs a task once).
 * Functions return new arrays: stored logs are replaced whole.
 */
export function currentLog(logs: readonly TesTaskLog[] | undefined): TesTaskLog {
  return logs?.[0] ? { ...logs[0] } : { logs: [], outputs: [] };
}

/**
 * Bytes (UTF-8) of one task's system logs together. The gateway writes a handful of lines per task;
 * only a task that makes it write one per output, link or file by the thousand comes near.
 */
export const SYSTEM_LOGS_MAX_BYTES = 64 * 1024;

const DROPPED = /^system_logs reached their limit of \d+ bytes: (\d+) later lines? dropped$/;

/** Bytes kept free for the final line that counts what was dropped. */
const FINAL_LINE_ROOM = 100;

/**
 * Appends lines to the system logs, within `maxBytes` in all: the first lines are kept (they tell what
 * went wrong first), the first line that does not fit whole is cut, and a final line counts the lines
 * dropped after it.
 */
export function withSystemLogs(
  logs: readonly TesTaskLog[] | undefined,
  lines: readonly string[],
  maxBytes = SYSTEM_LOGS_MAX_BYTES,
): TesTaskLog[] {
  const log = currentLog(logs);
  if (lines.length > 0) log.system_logs = capLines(log.system_logs ?? [], lines, maxBytes);
  return [log, ...(logs ?? []).slice(1)];
}

function capLines(previous: readonly string[], added: readonly string[], maxBytes: number): string[] {
  const counted = previous.length > 0 ? DROPPED.exec(previous[previous.length - 1]!) : null;
  // Full already: the lines kept stay as they are, and the count grows.
  if (counted) return [...previous.slice(0, -1), droppedLine(maxBytes, Number(counted[1]) + added.length)];
  const all = [...previous, ...added];
  const kept: string[] = [];
  let room = maxBytes - FINAL_LINE_ROOM;
  for (const [i, line] of all.entries()) {
    const bytes = Buffer.byteLength(line);
    if (bytes <= room) {
      kept.push(line);
      room -= bytes;
      continue;
    }
    const cut = room > 0;
    if (cut) kept.push(`${cutUtf8(line, room - Buffer.byteLength(' …'))} …`);
    const dropped = all.length - i - (cut ? 1 : 0);
    return dropped > 0 ? [...kept, droppedLine(maxBytes, dropped)] : kept;
  }
  return kept;
}

function droppedLine(maxBytes: number, count: number): string {
  return `system_logs reached their limit of ${maxBytes} bytes: ${count} later line${count === 1 ? '' : 's'} dropped`;
}

/** The longest start of `text` of at most `maxBytes` UTF-8 bytes, in whole characters. */
function cutUtf8(text: string, maxBytes: number): string {
  return Buffer.from(text)
    .subarray(0, Math.max(0, maxBytes))
    .toString('utf8')
    .replace(/\uFFFD+$/, '');
}

export function withLog(logs: readonly TesTaskLog[] | undefined, patch: Partial<TesTaskLog>): TesTaskLog[] {
  return [{ ...currentLog(logs), ...patch }, ...(logs ?? []).slice(1)];
}

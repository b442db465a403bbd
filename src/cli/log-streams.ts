import type { Task } from './tes-client.js';

/**
 * The logs a TES server shows of a task, as streams to print once: each executor's stdout and stderr
 * tails (FULL view) and the system logs, per attempt. `next` returns only what is new since its last
 * call, which is how `task logs --follow` prints a task's output as it grows; `task logs` prints the
 * first call's.
 */

export interface LogChunk {
  /** `executor 0 stdout`, `system logs`; `attempt 2, ...` when the task ran more than once. */
  label: string;
  attempt: number;
  executor?: number;
  stream: 'stdout' | 'stderr' | 'system_logs';
  text: string;
}

export class LogStreams {
  private readonly shownText = new Map<string, string>();
  private lastLabel: string | undefined;
  private endsLine = true;

  /** What each stream of `task` holds that earlier calls did not return, in stream order. */
  next(task: Task): LogChunk[] {
    const attempts = task.logs ?? [];
    const chunks: LogChunk[] = [];
    const take = (key: string, text: string, chunk: Omit<LogChunk, 'text'>): void => {
      const fresh = newText(this.shownText.get(key) ?? '', text);
      this.shownText.set(key, text);
      if (fresh !== '') chunks.push({ ...chunk, text: fresh });
    };
    for (const [attempt, log] of attempts.entries()) {
      const prefix = attempts.length > 1 ? `attempt ${attempt + 1}, ` : '';
      for (const [executor, exec] of (log.logs ?? []).entries()) {
        for (const stream of ['stdout', 'stderr'] as const) {
          take(`${attempt}/${executor}/${stream}`, exec[stream] ?? '', {
            label: `${prefix}executor ${executor} ${stream}`,
            attempt,
            executor,
            stream,
          });
        }
      }
      const system = (log.system_logs ?? []).map((line) => `${line}\n`).join('');
      take(`${attempt}/system`, system, { label: `${prefix}system logs`, attempt, stream: 'system_logs' });
    }
    return chunks;
  }

  /**
   * The chunks as text, each stream's under a `==> LABEL <==` header as `tail` shows several files;
   * a header is repeated only when the stream changes. Task output is printed as it is.
   */
  render(chunks: readonly LogChunk[]): string {
    let out = '';
    for (const chunk of chunks) {
      if (chunk.label !== this.lastLabel) {
        if (!this.endsLine) out += '\n';
        out += `${this.lastLabel === undefined ? '' : '\n'}==> ${chunk.label} <==\n`;
        this.lastLabel = chunk.label;
      }
      out += chunk.text;
      this.endsLine = chunk.text.endsWith('\n');
    }
    return out;
  }

  /** A final line break when the last text printed lacked one. */
  finish(): string {
    return this.endsLine ? '' : '\n';
  }
}

/**
 * The part of `current` not already in `previous`. A server that shows only the tail of a stream
 * drops its start as it grows: then the longest end of `previous` that begins `current` is taken
 * as their overlap (found in linear time, as in Knuth-Morris-Pratt). Output that repeats itself can
 * make that overlap look longer than it was; no text is ever printed twice.
 */
export function newText(previous: string, current: string): string {
  if (current.startsWith(previous)) return current.slice(previous.length);
  const border = borders(current);
  let matched = 0;
  for (let i = 0; i < previous.length; i++) {
    const c = previous[i];
    while (matched > 0 && (matched === current.length || current[matched] !== c)) {
      matched = border[matched - 1]!;
    }
    if (matched < current.length && current[matched] === c) matched++;
  }
  return current.slice(matched);
}

/** For each prefix of `text`, the length of its longest proper prefix that is also its suffix. */
function borders(text: string): number[] {
  const border = new Array<number>(text.length).fill(0);
  let k = 0;
  for (let i = 1; i < text.length; i++) {
    while (k > 0 && text[i] !== text[k]) k = border[k - 1]!;
    if (text[i] === text[k]) k++;
    border[i] = k;
  }
  return border;
}

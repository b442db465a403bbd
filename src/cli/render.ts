import { quoteAll } from '../shell/quote.js';
import type { Task, TaskLog } from './tes-client.js';

/**
 * What `tes-gateway task ...` prints: pure functions from what the server answered to text (goldens
 * in test/golden/task-cli/). Everything a task's owner wrote (names, tags, commands, URLs) may hold
 * control characters; in tables and fields they are shown escaped, so no task can move the cursor
 * or forge a line of output.
 */

/** A value as JSON, two-space indented, with a final newline: what `--json` prints. */
export function renderJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** `task list`: one row per task, newest first as the server sent them. */
export function renderTaskTable(tasks: readonly Task[]): string {
  if (tasks.length === 0) return 'no tasks\n';
  return renderTable(
    ['ID', 'STATE', 'CREATED', 'NAME', 'TAGS'],
    tasks.map((t) => [
      t.id,
      t.state,
      t.creation_time ?? '-',
      t.name ?? '-',
      t.tags ? renderTags(t.tags) || '-' : '-',
    ]),
  );
}

/** Rows under a header, each column as wide as its widest cell, two spaces apart. */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const cells = [header, ...rows].map((row) => row.map(shown));
  const widths = header.map((_, c) => Math.max(...cells.map((row) => [...(row[c] ?? '')].length)));
  return cells
    .map((row) =>
      row
        .map((cell, c) => (c === row.length - 1 ? cell : cell + ' '.repeat(widths[c]! - [...cell].length)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}

/** `task get`: the task field by field; what the view or the server left out is not shown. */
export function renderTask(task: Task): string {
  const lines: [string, string][] = [
    ['id', task.id],
    ['state', task.state],
  ];
  const add = (label: string, value: string | undefined): void => {
    if (value !== undefined && value !== '') lines.push([label, value]);
  };
  add('name', task.name);
  add('description', task.description);
  add('created', task.creation_time);
  add('tags', task.tags && renderTags(task.tags));
  add('resources', task.resources && renderResources(task.resources));
  const last: TaskLog | undefined = task.logs?.at(-1);
  for (const [i, e] of (task.executors ?? []).entries()) {
    add(`executor ${i}`, [e.image ?? '(no image)', quoteAll(e.command ?? [])].join('  '));
    add('  workdir', e.workdir);
    const log = last?.logs?.[i];
    if (log !== undefined) {
      const span = [log.start_time, log.end_time].filter((t) => t !== undefined).join(' to ');
      add('  exit', `${log.exit_code ?? '-'}${span ? ` (${span})` : ''}`);
    }
  }
  for (const input of task.inputs ?? []) add('input', `${input.path ?? '?'} <- ${input.url ?? '(content)'}`);
  for (const output of task.outputs ?? []) add('output', `${output.path ?? '?'} -> ${output.url ?? '?'}`);
  for (const volume of task.volumes ?? []) add('volume', volume);
  if (task.logs !== undefined && task.logs.length > 1) add('attempts', String(task.logs.length));
  add('started', last?.start_time);
  add('ended', last?.end_time);
  for (const file of last?.outputs ?? []) {
    add(
      'delivered',
      `${file.url ?? '?'}${file.size_bytes !== undefined ? ` (${file.size_bytes} bytes)` : ''}`,
    );
  }
  for (const line of last?.system_logs ?? []) add('system log', line);
  const width = Math.max(...lines.map(([label]) => label.length));
  return lines.map(([label, value]) => `${label.padEnd(width)}  ${shown(value)}`).join('\n') + '\n';
}

/** `task wait` on a terminal: one line per task, redrawn in place as states change. */
export function renderWaitRows(rows: readonly { taskId: string; state: string; seconds: number }[]): string {
  return renderTable(
    ['TASK', 'STATE', 'TIME'],
    rows.map((r) => [r.taskId, r.state, formatSeconds(r.seconds)]),
  );
}

/** `task wait` elsewhere (a log, a pipe): one line per state change. */
export function renderStateChange(at: Date, taskId: string, state: string): string {
  return `${at.toISOString().replace(/\.\d{3}Z$/, 'Z')}  ${shown(taskId)}  ${shown(state)}\n`;
}

/** 75 s as `1m15s`, 3700 s as `1h01m40s`. */
export function formatSeconds(total: number): string {
  const s = Math.floor(total);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m${String(rest).padStart(2, '0')}s`;
  if (m > 0) return `${m}m${String(rest).padStart(2, '0')}s`;
  return `${rest}s`;
}

function renderTags(tags: Record<string, string>): string {
  return Object.entries(tags)
    .map(([k, v]) => (v === '' ? k : `${k}=${v}`))
    .join(' ');
}

function renderResources(r: NonNullable<Task['resources']>): string {
  const parts: string[] = [];
  if (r.cpu_cores !== undefined) parts.push(`${r.cpu_cores} CPU`);
  if (r.ram_gb !== undefined) parts.push(`${r.ram_gb} GB RAM`);
  if (r.disk_gb !== undefined) parts.push(`${r.disk_gb} GB disk`);
  if (r.preemptible === true) parts.push('preemptible');
  if (r.zones !== undefined && r.zones.length > 0) parts.push(`zones ${r.zones.join(',')}`);
  for (const [k, v] of Object.entries(r.backend_parameters ?? {})) parts.push(`${k}=${v}`);
  return parts.join(', ');
}

/** A cell or field as shown: control characters escaped (`\n`, `\u001b`), the rest as it is. */
function shown(text: string): string {
  return text.replace(/\p{Cc}/gu, (c) => JSON.stringify(c).slice(1, -1));
}

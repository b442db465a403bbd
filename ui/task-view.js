import { durationBetween, formatBytes, formatCommand, formatDuration, h, timeOf } from './dom.js';

/** The gateway's system log line at submission (src/queue/processors/submit.ts). */
const SUBMITTED = /^submitted as (\S+) job (\S+)$/;
/** The reconciler's line for a job that waits (src/reconciler/reconciler.ts). */
const WAITING = /^Slurm job (\S+) is (\S+): (.+)$/;
const REQUEUED = /^Slurm requeued job (\S+): now (\S+)(?: \((.+)\))?/;

/**
 * Where a task's job stands, from what the FULL view holds: `logs[0].metadata` once the job ended
 * (backend, job_id, job_state, node, usage), the node once it started, and before that the system
 * log lines the gateway writes at submission and while Slurm keeps the job waiting.
 */
export function jobFacts(task) {
  const log = task.logs?.[0] ?? {};
  const metadata = log.metadata ?? {};
  const lines = log.system_logs ?? [];
  let backend = metadata.backend;
  let jobId = metadata.job_id;
  let pendingReason;
  for (const line of lines) {
    const submitted = SUBMITTED.exec(line);
    if (submitted) {
      backend ??= submitted[1];
      jobId ??= submitted[2];
    }
    const waiting = WAITING.exec(line) ?? REQUEUED.exec(line);
    if (waiting) pendingReason = `${waiting[2]}${waiting[3] ? `: ${waiting[3]}` : ''}`;
  }
  return {
    backend,
    jobId,
    node: metadata.node,
    jobState: metadata.job_state,
    // A reason matters while the task waits; once it runs, the last one is history (in the logs).
    pendingReason: task.state === 'QUEUED' ? pendingReason : undefined,
    cpuTimeSeconds: metadata.cpu_time_seconds,
    maxRssBytes: metadata.max_rss_bytes,
  };
}

export function stateBadge(state) {
  return h('span', { class: `state state-${String(state).toLowerCase()}` }, String(state));
}

/** A definition list of the rows whose value is not undefined. */
function facts(rows, label) {
  const list = h('dl', { class: 'facts', 'aria-label': label });
  for (const [term, value] of rows) {
    if (value === undefined || value === null || value === '') continue;
    list.append(h('dt', {}, term), h('dd', {}, value));
  }
  return list;
}

function section(id, title, ...content) {
  return h(
    'section',
    { id, 'aria-labelledby': `${id}-title` },
    h('h2', { id: `${id}-title` }, title),
    content,
  );
}

/** A table; a caption that repeats the section's heading is there for screen readers only. */
function table(caption, headers, rows, { captionShown = true } = {}) {
  if (rows.length === 0) return h('p', { class: 'muted' }, `No ${caption.toLowerCase()}.`);
  return h(
    'table',
    {},
    h('caption', { class: captionShown ? undefined : 'visually-hidden' }, caption),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headers.map((title) => h('th', { scope: 'col' }, title)),
      ),
    ),
    h(
      'tbody',
      {},
      rows.map((cells) =>
        h(
          'tr',
          {},
          cells.map((cell) => h('td', {}, cell ?? h('span', { class: 'muted' }, '—'))),
        ),
      ),
    ),
  );
}

/** A scrollable log, reachable by keyboard so it can be scrolled without a mouse. */
function logBlock(label, text) {
  if (!text) return h('p', { class: 'muted' }, `${label}: empty.`);
  return h(
    'figure',
    { class: 'log' },
    h('figcaption', {}, label),
    h('pre', { tabindex: '0', 'aria-label': label }, text),
  );
}

function pairs(map) {
  const entries = Object.entries(map ?? {});
  if (entries.length === 0) return undefined;
  return h(
    'ul',
    { class: 'pairs' },
    entries.map(([key, value]) => h('li', {}, h('code', {}, value === '' ? key : `${key}=${value}`))),
  );
}

function summary(task) {
  const log = task.logs?.[0] ?? {};
  const job = jobFacts(task);
  const waited = durationBetween(task.creation_time, log.start_time);
  const ran = durationBetween(log.start_time, log.end_time);
  const jobLabel =
    job.backend === 'slurm' ? 'Slurm job id' : job.backend ? `Job id (${job.backend})` : 'Job id';
  return section(
    'summary',
    'Summary',
    facts(
      [
        ['Task id', h('code', {}, task.id)],
        ['State', stateBadge(task.state)],
        ['Description', task.description],
        [jobLabel, job.jobId ? h('code', {}, job.jobId) : h('span', { class: 'muted' }, 'not submitted yet')],
        ['Node', job.node],
        ['Pending reason', job.pendingReason],
        ['Job state', job.jobState],
        ['Created', timeOf(task.creation_time)],
        ['Started', timeOf(log.start_time)],
        ['Ended', timeOf(log.end_time)],
        ['Waited', waited === undefined ? undefined : formatDuration(waited)],
        ['Ran for', ran === undefined ? undefined : `${formatDuration(ran)}${log.end_time ? '' : ' so far'}`],
        [
          'CPU time',
          job.cpuTimeSeconds === undefined ? undefined : formatDuration(job.cpuTimeSeconds * 1000),
        ],
        ['Peak memory', job.maxRssBytes === undefined ? undefined : formatBytes(job.maxRssBytes)],
        ['Tags', pairs(task.tags)],
      ],
      'Summary',
    ),
  );
}

function resources(task) {
  const r = task.resources;
  if (!r && !(task.volumes ?? []).length) return undefined;
  return section(
    'resources',
    'Resources',
    facts(
      [
        ['CPU cores', r?.cpu_cores],
        ['Memory', r?.ram_gb === undefined ? undefined : `${r.ram_gb} GB`],
        ['Disk', r?.disk_gb === undefined ? undefined : `${r.disk_gb} GB`],
        ['Preemptible', r?.preemptible === undefined ? undefined : String(r.preemptible)],
        ['Zones', r?.zones?.join(', ')],
        ['Backend parameters', pairs(r?.backend_parameters)],
        ['Volumes', (task.volumes ?? []).length ? task.volumes.join(', ') : undefined],
      ],
      'Resources',
    ),
  );
}

function executors(task) {
  const results = task.logs?.[0]?.logs ?? [];
  const count = task.executors?.length ?? 0;
  return section(
    'executors',
    `Executors (${count})`,
    (task.executors ?? []).map((executor, i) => {
      const result = results[i];
      const n = i + 1;
      const ran = durationBetween(result?.start_time, result?.end_time);
      return h(
        'article',
        { class: 'executor', 'aria-labelledby': `executor-${n}` },
        h('h3', { id: `executor-${n}` }, `Executor ${n} of ${count}`),
        facts(
          [
            ['Image', h('code', {}, executor.image)],
            ['Command', h('code', { class: 'command' }, formatCommand(executor.command))],
            ['Working directory', executor.workdir],
            ['stdin', executor.stdin],
            ['stdout to', executor.stdout],
            ['stderr to', executor.stderr],
            ['Environment', pairs(executor.env)],
            ['Ignores errors', executor.ignore_error ? 'yes' : undefined],
            ['Exit code', result ? String(result.exit_code) : h('span', { class: 'muted' }, 'not run yet')],
            ['Started', result ? timeOf(result.start_time) : undefined],
            ['Ended', result ? timeOf(result.end_time) : undefined],
            ['Ran for', ran === undefined ? undefined : formatDuration(ran)],
          ],
          `Executor ${n}`,
        ),
        result
          ? [
              logBlock(`stdout of executor ${n} (its end)`, result.stdout),
              logBlock(`stderr of executor ${n} (its end)`, result.stderr),
            ]
          : [],
      );
    }),
  );
}

function inputs(task) {
  return section(
    'inputs',
    'Inputs',
    table(
      'Inputs',
      ['Path', 'Type', 'From', 'Name'],
      (task.inputs ?? []).map((input) => [
        h('code', {}, input.path),
        input.type ?? 'FILE',
        input.url
          ? h('code', {}, input.url)
          : input.content !== undefined
            ? `inline content, ${input.content.length} characters`
            : undefined,
        input.name,
      ]),
      { captionShown: false },
    ),
  );
}

function outputs(task) {
  const delivered = task.logs?.[0]?.outputs ?? [];
  return section(
    'outputs',
    'Outputs',
    table(
      'Outputs',
      ['Path', 'Type', 'To', 'Name'],
      (task.outputs ?? []).map((output) => [
        h('code', {}, output.path),
        output.type ?? 'FILE',
        h('code', {}, output.url),
        output.name,
      ]),
      { captionShown: false },
    ),
    delivered.length
      ? table(
          'Delivered files',
          ['URL', 'Path', 'Size'],
          delivered.map((file) => [
            h('code', {}, file.url),
            h('code', {}, file.path),
            formatBytes(file.size_bytes),
          ]),
        )
      : [],
  );
}

function systemLogs(task) {
  const lines = task.logs?.[0]?.system_logs ?? [];
  return section(
    'system-logs',
    'System logs',
    lines.length
      ? h(
          'ol',
          { class: 'system-logs' },
          lines.map((line) => h('li', {}, line)),
        )
      : h('p', { class: 'muted' }, 'No system logs yet.'),
  );
}

/** The task page's sections, in order, each with an id that stays the same across refreshes. */
export function taskSections(task) {
  return [
    summary(task),
    resources(task),
    executors(task),
    inputs(task),
    outputs(task),
    systemLogs(task),
  ].filter(Boolean);
}

export function taskTitle(task) {
  return task.name ? task.name : `Task ${task.id}`;
}

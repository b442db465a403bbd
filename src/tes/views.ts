import { OWNER_TAG, type TaskRecord, type TesTask, type TesTaskLog, type TesView } from './types.js';

/**
 * The three TES views. MINIMAL is `{id, state}`; BASIC is everything but input contents, executor
 * stdout/stderr and system logs; FULL is everything. Only spec fields leave this function, and only
 * what the client sent (plus the server's own fields): no defaults are invented. A task's owner, when
 * the gateway authenticates, is shown as the tag OWNER_TAG: a plain string map entry that every
 * client reads (or ignores) without knowing of it.
 */
export function renderTask(record: TaskRecord, view: TesView): TesTask | { id: string; state: string } {
  if (view === 'MINIMAL') return { id: record.id, state: record.state };
  const basic = view === 'BASIC';
  const request = record.request;
  const logs = record.logs && record.logs.length > 0 ? record.logs : undefined;
  return {
    id: record.id,
    state: record.state as TesTask['state'],
    ...request,
    ...(record.owner ? { tags: { ...request.tags, [OWNER_TAG]: record.owner.user } } : {}),
    ...(basic && request.inputs
      ? { inputs: request.inputs.map(({ content: _content, ...rest }) => rest) }
      : {}),
    creation_time: record.creationTime,
    ...(logs ? { logs: basic ? logs.map(toBasicLog) : logs } : {}),
  };
}

function toBasicLog(log: TesTaskLog): TesTaskLog {
  const { system_logs: _system, ...rest } = log;
  return { ...rest, logs: rest.logs.map(({ stdout: _o, stderr: _e, ...exec }) => exec) };
}

import type { Request, Response } from 'express';
import { TaskNotFoundError, ValidationError } from '../../errors.js';
import { isTerminal, isTesState } from '../../tes/state.js';
import { isTaskId } from '../../tes/task-id.js';
import type { TaskRequest, TesTaskLog, TesView } from '../../tes/types.js';
import { checkTaskRules, type TaskRules } from '../../tes/validate-task.js';
import { renderTask } from '../../tes/views.js';
import type { TaskStore } from '../../store/task-store.js';
import type { Enqueuer } from '../../queue/jobs.js';

export interface TaskHandlerDeps {
  store: TaskStore;
  queues: Enqueuer;
  rules: TaskRules;
  /** Stored bytes a BASIC or FULL list page stops at (config limits.listPageMaxBytes). */
  listPageMaxBytes?: number | undefined;
}

const DEFAULT_PAGE_SIZE = 256;

export function taskHandlers({ store, queues, rules, listPageMaxBytes }: TaskHandlerDeps) {
  return {
    create: async (req: Request, res: Response): Promise<void> => {
      const check = checkTaskRules(req.body, rules);
      if (check.problems.length > 0) throw new ValidationError(check.problems);
      const request = req.body as TaskRequest;
      const logs: TesTaskLog[] | undefined =
        check.ignoredBackendParameters.length > 0
          ? [
              {
                logs: [],
                outputs: [],
                system_logs: [
                  `backend_parameters ignored (not supported by this gateway): ` +
                    `${check.ignoredBackendParameters.join(', ')}`,
                ],
              },
            ]
          : undefined;
      const record = await store.create(request, logs ? { logs } : {});
      await queues.enqueue('submit', { taskId: record.id });
      res.json({ id: record.id });
    },

    get: async (req: Request, res: Response): Promise<void> => {
      const taskId = String(req.params.id);
      const view = viewOf(req);
      res.setHeader('Cache-Control', 'no-store');
      if (view === 'MINIMAL') {
        // The hot path: clients poll every task about once a second.
        const state = isTaskId(taskId) ? await store.getState(taskId) : undefined;
        if (!state) throw new TaskNotFoundError(taskId);
        res.json({ id: taskId, state });
        return;
      }
      const record = isTaskId(taskId) ? await store.get(taskId) : undefined;
      if (!record) throw new TaskNotFoundError(taskId);
      res.json(renderTask(record, view));
    },

    list: async (req: Request, res: Response): Promise<void> => {
      const q = req.query as Record<string, unknown>;
      const view = viewOf(req);
      const tagKeys = asArray(q.tag_key);
      const tagValues = asArray(q.tag_value);
      if (tagValues.length > tagKeys.length) {
        throw new ValidationError([{ path: 'tag_value', message: 'has more entries than tag_key' }]);
      }
      const tags: Array<[string, string | undefined]> = tagKeys.map((k, i) => [k, tagValues[i]]);
      const state = typeof q.state === 'string' && isTesState(q.state) ? q.state : undefined;
      const page = await store.list({
        namePrefix: typeof q.name_prefix === 'string' && q.name_prefix !== '' ? q.name_prefix : undefined,
        state,
        tags,
        pageSize: q.page_size === undefined ? DEFAULT_PAGE_SIZE : Number(q.page_size),
        cursor:
          typeof q.page_token === 'string' && q.page_token !== '' ? decodePageToken(q.page_token) : undefined,
        view,
        // A page of large tasks ends early, with a next_page_token like any other.
        maxBytes: listPageMaxBytes,
      });
      res.setHeader('Cache-Control', 'no-store');
      const body: { tasks: unknown[]; next_page_token?: string } = {
        tasks: page.records.map((r) => renderTask(r, view)),
      };
      if (page.nextCursor) body.next_page_token = encodePageToken(page.nextCursor);
      res.json(body);
    },

    cancel: async (req: Request, res: Response): Promise<void> => {
      const taskId = String(req.params.id);
      const record = isTaskId(taskId) ? await store.get(taskId) : undefined;
      if (!record) throw new TaskNotFoundError(taskId);
      if (isTerminal(record.state) || record.state === 'CANCELING') {
        res.json({});
        return;
      }
      if (!record.run?.jobId) {
        // Not on the cluster yet: done at once. A submission racing with this sees CANCELED after
        // sbatch and cancels the job it just made.
        const r = await store.transition(taskId, 'CANCELED', { from: ['QUEUED', 'INITIALIZING'] });
        if (r.outcome === 'ok' || r.outcome === 'same') {
          res.json({});
          return;
        }
      }
      const r = await store.transition(taskId, 'CANCELING');
      if (r.outcome === 'ok') await queues.enqueue('cancel', { taskId });
      res.json({});
    },
  };
}

function viewOf(req: Request): TesView {
  const v = req.query.view;
  return v === 'BASIC' || v === 'FULL' ? v : 'MINIMAL';
}

function asArray(v: unknown): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** Page tokens are opaque to clients: the id the next page starts below, base64url-encoded. */
export function encodePageToken(cursor: string): string {
  return Buffer.from(cursor, 'utf8').toString('base64url');
}

export function decodePageToken(token: string): string {
  const cursor = Buffer.from(token, 'base64url').toString('utf8');
  if (!isTaskId(cursor)) {
    throw new ValidationError([{ path: 'page_token', message: 'is not a page token this service issued' }]);
  }
  return cursor;
}

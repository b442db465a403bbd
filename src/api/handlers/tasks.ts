import type { Request, Response } from 'express';
import { TaskNotFoundError, ValidationError, type FieldProblem } from '../../errors.js';
import { isTerminal, isTesState } from '../../tes/state.js';
import { isTaskId } from '../../tes/task-id.js';
import { OWNER_TAG, type TaskRequest, type TesTaskLog, type TesView } from '../../tes/types.js';
import { checkTaskRules, type TaskRules } from '../../tes/validate-task.js';
import { renderTask } from '../../tes/views.js';
import type { TaskStore } from '../../store/task-store.js';
import type { Enqueuer } from '../../queue/jobs.js';
import type { Identity } from '../../identity/identity.js';
import type { Policy } from '../../identity/policy.js';
import type { Audit, AuditSource } from '../audit.js';

export interface TaskHandlerDeps {
  store: TaskStore;
  queues: Enqueuer;
  rules: TaskRules;
  /** Stored bytes a BASIC or FULL list page stops at (config limits.listPageMaxBytes). */
  listPageMaxBytes?: number | undefined;
  /** What each user may use; checked at creation when the request carries an identity. */
  policy: Policy;
  audit: Audit;
  /** Told the owner of each task created with an identity (per-user metrics). */
  onCreated?: ((user: string) => void) | undefined;
}

const DEFAULT_PAGE_SIZE = 256;

export function taskHandlers(deps: TaskHandlerDeps) {
  const { store, queues, listPageMaxBytes, audit } = deps;
  const creation = taskCreation(deps);
  return {
    create: async (req: Request, res: Response): Promise<void> => {
      const checked = creation.check(req.body, req.identity);
      if (!checked.ok) {
        if (checked.byPolicy) audit(req, 'refused', { reason: 'policy', problems: checked.problems });
        throw new ValidationError(checked.problems);
      }
      res.json({ id: await creation.commit(checked, req.identity, req) });
    },

    get: async (req: Request, res: Response): Promise<void> => {
      const taskId = String(req.params.id);
      const view = viewOf(req);
      res.setHeader('Cache-Control', 'no-store');
      const task = await readTask(store, taskId, view, req.identity);
      if (!task) throw new TaskNotFoundError(taskId);
      res.json(task);
    },

    list: async (req: Request, res: Response): Promise<void> => {
      const q = req.query as Record<string, unknown>;
      const view = viewOf(req);
      const tagKeys = asArray(q.tag_key);
      const tagValues = asArray(q.tag_value);
      if (tagValues.length > tagKeys.length) {
        throw new ValidationError([{ path: 'tag_value', message: 'has more entries than tag_key' }]);
      }
      let tags: Array<[string, string | undefined]> = tagKeys.map((k, i) => [k, tagValues[i]]);
      // The owner tag is not stored with the task's tags: it filters by the owner index.
      const owners = new Set(tags.filter(([k, v]) => k === OWNER_TAG && v).map(([, v]) => v!));
      tags = tags.filter(([k]) => k !== OWNER_TAG);
      const who = req.identity;
      if (who && !who.admin) owners.add(who.user);
      if (owners.size > 1) {
        res.setHeader('Cache-Control', 'no-store');
        res.json({ tasks: [] });
        return;
      }
      const [owner] = owners;
      const state = typeof q.state === 'string' && isTesState(q.state) ? q.state : undefined;
      const page = await store.list({
        owner,
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
      if (!record || !maySee(req.identity, record.owner?.user)) throw new TaskNotFoundError(taskId);
      if (req.identity)
        audit(req, 'task canceled', { taskId, owner: record.owner?.user, state: record.state });
      if (isTerminal(record.state) || record.state === 'CANCELING') {
        res.json({});
        return;
      }
      if (!record.run?.jobId) {
        // Not on the cluster yet: done at once. A submission racing with this sees CANCELED after
        // sbatch and cancels the job it just made; one that recorded its job since the read above
        // makes this change illegal, and the task is cancelled through its job below.
        const r = await store.transition(taskId, 'CANCELED', {
          from: ['QUEUED', 'INITIALIZING'],
          onlyWithoutJob: true,
        });
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

/** A CreateTask body the gateway's rules and the caller's policy accept, ready to be stored. */
export interface CheckedTask {
  ok: true;
  request: TaskRequest;
  /** backend_parameters the gateway does not support, noted in the task's system logs. */
  ignored: string[];
}

/** A CreateTask body refused: its problems, and whether the policy (not the rules) refused it. */
export interface RefusedTask {
  ok: false;
  problems: FieldProblem[];
  byPolicy: boolean;
}

/**
 * Creating a task once the spec's check has passed its body: for the app's handler and for the fast
 * path of api/fast-creates.ts, so that both judge and store a body alike.
 */
export function taskCreation({
  store,
  queues,
  rules,
  policy,
  audit,
  onCreated,
}: Pick<TaskHandlerDeps, 'store' | 'queues' | 'rules' | 'policy' | 'audit' | 'onCreated'>) {
  return {
    /** What the rules the spec cannot express, and the policy for `who`, say of a body. */
    check(body: unknown, who: Identity | undefined): CheckedTask | RefusedTask {
      const rulesSay = checkTaskRules(body, rules);
      if (rulesSay.problems.length > 0) return { ok: false, problems: rulesSay.problems, byPolicy: false };
      const request = body as TaskRequest;
      const problems = who ? policy.checkTask(request, who.user, who.groups) : policy.checkPlaces(request);
      if (problems.length > 0) return { ok: false, problems, byPolicy: who !== undefined };
      return { ok: true, request, ignored: rulesSay.ignoredBackendParameters };
    },

    /**
     * Stores a checked task and queues its submission; its id, once a failover can no longer take the
     * task back (a 503 asks to try again).
     */
    async commit(task: CheckedTask, who: Identity | undefined, source: AuditSource): Promise<string> {
      const logs: TesTaskLog[] | undefined =
        task.ignored.length > 0
          ? [
              {
                logs: [],
                outputs: [],
                system_logs: [
                  `backend_parameters ignored (not supported by this gateway): ${task.ignored.join(', ')}`,
                ],
              },
            ]
          : undefined;
      const owner = who ? { user: who.user, groups: [...who.groups] } : undefined;
      const record = await store.create(task.request, { ...(logs ? { logs } : {}), owner });
      await queues.enqueue('submit', { taskId: record.id });
      await store.awaitReplicas();
      if (who) {
        audit(source, 'task created', { taskId: record.id });
        onCreated?.(who.user);
      }
      return record.id;
    },
  };
}

/**
 * Whether the caller may see a task: anyone when the gateway does not authenticate, an admin always,
 * a user only their own. A task the caller may not see is answered as one that does not exist, so
 * task ids cannot be probed.
 */
/**
 * GET /tasks/{id}'s answer: the task in `view` as `who` may see it, or undefined when there is no
 * such task for them (404). Also what the fast path of api/fast-reads.ts answers.
 */
export async function readTask(
  store: Pick<TaskStore, 'get' | 'getHead'>,
  taskId: string,
  view: TesView,
  who: Identity | undefined,
): Promise<object | undefined> {
  if (!isTaskId(taskId)) return undefined;
  if (view === 'MINIMAL') {
    // The hot path: clients poll every task about once a second.
    const head = await store.getHead(taskId);
    return head && maySee(who, head.owner) ? { id: taskId, state: head.state } : undefined;
  }
  const record = await store.get(taskId);
  return record && maySee(who, record.owner?.user) ? renderTask(record, view) : undefined;
}

function maySee(who: Identity | undefined, owner: string | undefined): boolean {
  return who === undefined || who.admin || owner === who.user;
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

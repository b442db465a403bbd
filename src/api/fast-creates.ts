import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from '../logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { Identity } from '../identity/identity.js';
import { jsonTextNestingExceeds, MAX_BODY_DEPTH, normalizeTaskBody } from '../tes/normalize.js';
import type { Identified } from './authenticate.js';
import type { FastPath } from './fast-reads.js';
import type { CheckedTask, RefusedTask, taskCreation } from './handlers/tasks.js';
import type { TaskBodyCheck } from './task-body-check.js';
import { requestIdOf } from './request-context.js';

/**
 * POST /tasks answered before Express, as GET /tasks/{id} is (api/fast-reads.ts): a workflow engine
 * creates its tasks in bursts, and the framework's layers (routing, body parsing, the validator's
 * route lookup, the middleware chain) cost more than storing the task. It takes only a request
 * whose whole meaning is plain here, and that every check accepts:
 *
 * - the target is exactly `<base path>/tasks`, with no query;
 * - the body is declared as `application/json` (at most with `charset=utf-8`), not encoded, with a
 *   Content-Length from 1 byte to server.bodyLimitBytes, and no `Expect`;
 * - with auth on, its credentials name a user (checked as the app checks them);
 * - debug logging is off (the app logs every request at debug level);
 * - the body is nested no deeper than the app allows, parses as JSON, and, made tolerant as the app
 *   makes it (tes/normalize.ts), passes the spec's check of a task (api/task-body-check.ts, built as
 *   the app's validator is), the gateway's rules and the caller's policy: the same checks, in the
 *   same order, through the same code (handlers/tasks.ts `taskCreation`).
 *
 * A request that fails any of these goes to the app: before its body is read, untouched; after, with
 * the bytes put back into the request stream, so the app reads, checks and refuses it exactly as it
 * would have. Only what the app would accept is taken. Once the task is being stored, a failure
 * (Redis away, a full backlog) is answered by the app's error handler, the one place that maps
 * errors, without the request going through the app's other steps again. The answer is the app's
 * byte for byte, with the same headers, and is counted in the HTTP metrics under the same route.
 */
export function fastTaskCreates(deps: {
  creation: ReturnType<typeof taskCreation>;
  specCheck: TaskBodyCheck;
  bodyLimitBytes: number;
  logger: Logger;
  metrics?: Pick<GatewayMetrics, 'httpRequest'> | undefined;
  /** With auth on: who the request's credentials name. */
  identify?: ((headers: IncomingHttpHeaders) => Promise<Identified>) | undefined;
}): FastPath {
  const { creation, specCheck, bodyLimitBytes, logger, metrics, identify } = deps;
  return (req, res, app) => {
    const match = req.method === 'POST' ? CREATE_TARGET.exec(req.url ?? '') : null;
    const length = match ? plainJsonLength(req.headers, bodyLimitBytes) : undefined;
    if (!match || length === undefined || logger.isLevelEnabled('debug')) {
      app();
      return;
    }
    const started = performance.now();
    const route = `${match[1]!}/tasks`;
    const requestId = requestIdOf(req.headers['x-request-id']);
    const create = async (): Promise<void> => {
      let who: Identity | undefined;
      if (identify) {
        const found = await identify(req.headers);
        if (!('identity' in found)) return app();
        who = found.identity;
      }
      const bytes = await readExactly(req, length);
      if (!bytes) return;
      const checked = judge(bytes, who, specCheck, creation);
      if (!checked?.ok) {
        // The app reads the same bytes again and answers as it always does.
        req.unshift(bytes);
        return app();
      }
      // Read to its end, as the app would have: the connection goes on to the client's next request.
      req.resume();
      let id: string;
      try {
        id = await creation.commit(checked, who, auditSource(req, requestId, who));
      } catch (err) {
        failedBeforeApp(req, route, err);
        return app();
      }
      const body = JSON.stringify({ id });
      res.writeHead(200, {
        'X-Request-Id': requestId,
        'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(body);
      metrics?.httpRequest(route, 'POST', 200, (performance.now() - started) / 1000);
    };
    // Anything unexpected before the task is stored (the credentials' check failing) is the app's.
    create().catch((err: unknown) => {
      if (res.headersSent) return;
      failedBeforeApp(req, route, err);
      app();
    });
  };
}

/**
 * The app's checks of a body, in the app's order: its depth as text, JSON, the tolerant normalizer,
 * the spec's schema, then the rules and the caller's policy. Undefined when one before the last two
 * refuses it.
 */
function judge(
  bytes: Buffer,
  who: Identity | undefined,
  specCheck: TaskBodyCheck,
  creation: ReturnType<typeof taskCreation>,
): CheckedTask | RefusedTask | undefined {
  if (jsonTextNestingExceeds(bytes, MAX_BODY_DEPTH)) return undefined;
  let body: unknown;
  try {
    body = normalizeTaskBody(JSON.parse(bytes.toString('utf8')));
  } catch {
    return undefined;
  }
  return specCheck(body) ? creation.check(body, who) : undefined;
}

/** `<base>/tasks`, exactly: a query, a trailing slash or any other spelling is the app's to read. */
const CREATE_TARGET = /^(\/ga4gh\/tes\/v1|\/v1)\/tasks$/;

const JSON_TYPE = /^application\/json\s*(?:;\s*charset="?utf-8"?\s*)?$/i;

/** The body's length, when its headers declare a plain JSON body within the limit; else undefined. */
function plainJsonLength(headers: IncomingHttpHeaders, limit: number): number | undefined {
  const type = headers['content-type'];
  const declared = headers['content-length'];
  if (type === undefined || !JSON_TYPE.test(type) || declared === undefined || !/^[0-9]{1,9}$/.test(declared))
    return undefined;
  if (headers['content-encoding'] !== undefined || headers['transfer-encoding'] !== undefined)
    return undefined;
  if (headers.expect !== undefined) return undefined;
  const length = Number(declared);
  return length >= 1 && length <= limit ? length : undefined;
}

/**
 * Reads the body's `length` bytes without reading past them, so that the stream does not end and
 * the bytes can be put back (`unshift`) for the app. Asked for exactly what is left, a read returns
 * it once it is all there; a read of whatever is there would end the stream when the body has
 * already arrived whole (as it has after a look at the credentials). Undefined when the client went
 * away first.
 */
function readExactly(req: IncomingMessage, length: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const settle = (result: Buffer | undefined): void => {
      req.off('readable', onReadable);
      req.off('close', onClose);
      resolve(result);
    };
    const onReadable = (): void => {
      const body = req.read(length) as Buffer | null;
      if (body !== null) settle(body.length === length ? body : undefined);
    };
    const onClose = (): void => settle(undefined);
    req.on('readable', onReadable);
    req.once('close', onClose);
  });
}

/** The request as an audit line shows it: the path is the one the app's task router sees, below its base. */
function auditSource(req: IncomingMessage, id: string, who: Identity | undefined) {
  return { identity: who, socket: req.socket, id, method: 'POST', path: '/tasks' };
}

/** An error the fast path met, for the app to answer (`answerFailedBeforeApp`). */
const FAILED = Symbol('failed before the app');

interface FailedRequest extends IncomingMessage {
  [FAILED]?: unknown;
  /** The route template the HTTP metrics label the answer with, as the validator would have set it. */
  openapi?: { openApiRoute: string };
}

function failedBeforeApp(req: FailedRequest, route: string, err: unknown): void {
  req[FAILED] = err;
  req.openapi = { openApiRoute: route };
}

/**
 * The app's middleware for a request the fast path failed after its task began to be stored: the
 * error goes straight to the error handler, and nothing of the request is read or done again.
 */
export function answerFailedBeforeApp(req: Request, _res: Response, next: NextFunction): void {
  const failed = req as Request & FailedRequest;
  if (FAILED in failed) next(failed[FAILED]);
  else next();
}

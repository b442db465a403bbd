import type { ErrorRequestHandler, Request, RequestHandler } from 'express';
import {
  BacklogFullError,
  IdentityUnavailableError,
  UnauthorizedError,
  RequestTargetTooLongError,
  StoreUnavailableError,
  TaskNotFoundError,
  ValidationError,
  type FieldProblem,
} from '../errors.js';
import { isStoreConnectionError } from '../store/redis-connection.js';
import { checkTaskRules, type TaskRules } from '../tes/validate-task.js';

/**
 * The one place where an error becomes an HTTP status and a body. Every error body has the shape of
 * the spec's tesErrorResponse: {status, message, errors?[{path, message}]}.
 */
export function errorHandler(rules: TaskRules): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const { status, message, errors, retryAfter } = toHttp(err, req, rules);
    if (status >= 500)
      req.log.error({ err, status, method: req.method, url: req.loggedUrl }, 'request failed');
    else req.log.info({ status, message, method: req.method, url: req.loggedUrl }, 'request refused');
    if (res.headersSent) return;
    if (retryAfter !== undefined) res.setHeader('Retry-After', String(retryAfter));
    if (err instanceof UnauthorizedError) res.setHeader('WWW-Authenticate', err.challenges.join(', '));
    res.status(status).json(errors && errors.length > 0 ? { status, message, errors } : { status, message });
  };
}

export const notFoundHandler: RequestHandler = (req, res) => {
  res.status(404).json({ status: 404, message: `no such endpoint: ${req.method} ${req.path}` });
};

interface HttpError {
  status: number;
  message: string;
  errors?: FieldProblem[];
  retryAfter?: number;
}

function toHttp(err: unknown, req: Request, rules: TaskRules): HttpError {
  const { method, path } = req;
  const body: unknown = req.body;
  if (err instanceof ValidationError) {
    return { status: 400, message: summarize(err.problems), errors: err.problems };
  }
  if (err instanceof TaskNotFoundError) return { status: 404, message: err.message };
  if (err instanceof UnauthorizedError) return { status: 401, message: err.message };
  if (err instanceof IdentityUnavailableError) return { status: 503, message: err.message, retryAfter: 5 };
  if (err instanceof BacklogFullError) {
    return { status: 429, message: err.message, retryAfter: err.retryAfterSeconds };
  }
  if (err instanceof StoreUnavailableError) return { status: 503, message: err.message, retryAfter: 5 };
  if (err instanceof RequestTargetTooLongError) return { status: 414, message: err.message };
  const e = err as {
    status?: number;
    type?: string;
    errors?: unknown;
    message?: string;
    limit?: number;
    code?: unknown;
  };
  // body-parser
  if (e.type === 'entity.too.large') {
    return {
      status: 413,
      message: `request body is larger than the ${e.limit ?? ''} bytes accepted`.replace('  ', ' '),
    };
  }
  if (e.type === 'entity.parse.failed') {
    return {
      status: 400,
      message: `request body is not valid JSON: ${e.message ?? ''}`.trim(),
      errors: [{ path: 'body', message: 'is not valid JSON' }],
    };
  }
  if (e.type === 'encoding.unsupported' || e.type === 'charset.unsupported') {
    return { status: 415, message: e.message ?? 'unsupported body encoding' };
  }
  // body-parser passes the decompressor's own error on (zlib's Z_DATA_ERROR, Brotli's
  // ERR__ERROR_FORMAT_...) with status 400 and no `type` of its own.
  const encoding = contentEncoding(req);
  if (e.status === 400 && e.type === undefined && encoding !== undefined && typeof e.code === 'string') {
    return {
      status: 400,
      message: `request body is not valid ${encoding} data, as its Content-Encoding says it is (${e.code})`,
      errors: [{ path: 'body', message: `does not decode as Content-Encoding ${encoding}` }],
    };
  }
  // express-openapi-validator
  if (typeof e.status === 'number' && Array.isArray(e.errors)) {
    if (e.status === 400) {
      // One problem per field: the validator may say "must be integer" and "must match format" at once.
      const problems: FieldProblem[] = [];
      for (const p of (e.errors as ValidatorProblem[]).map(toFieldProblem)) {
        if (!problems.some((q) => q.path === p.path)) problems.push(p);
      }
      // A task body that fails the schema is also checked against the rules the schema cannot
      // express, so the client learns every problem in one answer.
      if (method === 'POST' && /\/tasks\/?$/i.test(path)) {
        for (const p of checkTaskRules(body, rules).problems) {
          if (!problems.some((q) => q.path === p.path && q.message === p.message)) problems.push(p);
        }
      }
      return { status: 400, message: summarize(problems), errors: problems };
    }
    if (e.status === 415) {
      return { status: 415, message: 'request body must be JSON (Content-Type: application/json)' };
    }
    if (e.status === 405) return { status: 405, message: `method ${method} is not allowed on ${path}` };
    if (e.status === 404) return { status: 404, message: `no such endpoint: ${method} ${path}` };
    return { status: e.status, message: e.message ?? 'request refused' };
  }
  // Other client errors of body-parser (`request.aborted`, `request.size.invalid`) and of the
  // router (a path parameter that is not valid percent-encoding) carry their 4xx status and a
  // message meant for the client.
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    return { status: e.status, message: `invalid request: ${lowerFirst(e.message ?? 'refused')}` };
  }
  if (isStoreConnectionError(err))
    return { status: 503, message: `the task store is unavailable: ${e.message ?? ''}`, retryAfter: 5 };
  return {
    status: 500,
    message: 'internal error; the request id in the X-Request-Id header names it in the logs',
  };
}

interface ValidatorProblem {
  path?: string;
  message?: string;
}

/** `/body/executors/0/command` becomes `executors[0].command`; query parameters keep their names. */
export function toFieldProblem(p: ValidatorProblem): FieldProblem {
  const raw = (p.path ?? '')
    .replace(/\[(\d+)\]/g, '/$1')
    .replace(/^[./]*(body|query|params|path|headers)(?=[./]|$)/, '');
  const segments = raw.split(/[/.]/).filter((s) => s !== '');
  let path = '';
  for (const s of segments) path += /^\d+$/.test(s) ? `[${s}]` : path === '' ? s : `.${s}`;
  return { path: path || 'body', message: p.message ?? 'is invalid' };
}

/** The declared Content-Encoding when it is not the identity, in lower case. */
function contentEncoding(req: Request): string | undefined {
  const value = req.headers['content-encoding']?.trim().toLowerCase();
  return value && value !== 'identity' ? value : undefined;
}

function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}

function summarize(problems: FieldProblem[]): string {
  const head = problems
    .slice(0, 3)
    .map((p) => `${p.path}: ${p.message}`)
    .join('; ');
  const more = problems.length > 3 ? ` (and ${problems.length - 3} more)` : '';
  return `invalid request: ${head}${more}`;
}

import { join } from 'node:path';
import querystring from 'node:querystring';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import type { Config } from './config/schema.js';
import type { Logger } from './logger.js';
import type { TaskStore } from './store/task-store.js';
import { errorHandler, notFoundHandler } from './api/error-handler.js';
import { requestContext } from './api/request-context.js';
import { MAX_TARGET_BYTES } from './api/http-server.js';
import { taskCreation, taskHandlers, type TaskHandlerDeps } from './api/handlers/tasks.js';
import type { Enqueuer } from './queue/jobs.js';
import { buildServiceInfo, serviceInfoHandler } from './api/handlers/service-info.js';
import { jsonTextNestingExceeds, MAX_BODY_DEPTH, normalizeTaskBody } from './tes/normalize.js';
import { RequestTargetTooLongError, ValidationError } from './errors.js';
import { taskRulesFor } from './tes/validate-task.js';
import { packageVersion, projectRoot } from './version.js';
import {
  authenticate,
  requestIdentifier,
  type AuthenticationDeps,
  type JwtVerifier,
  type TokenVerifier,
} from './api/authenticate.js';
import { createAudit, type Audit } from './api/audit.js';
import { fastTaskReads, type FastPath } from './api/fast-reads.js';
import { answerFailedBeforeApp, fastTaskCreates } from './api/fast-creates.js';
import { compileTaskBodyCheck } from './api/task-body-check.js';
import { policyFor, type Policy } from './identity/policy.js';
import { httpMetrics, opsRoutes, type OpsDeps } from './observability/ops-routes.js';
import { dashboard, DASHBOARD_PATH } from './api/dashboard.js';

export const BASE_PATHS = ['/ga4gh/tes/v1', '/v1'] as const;

export interface AppDeps {
  config: Config;
  store: TaskStore;
  queues: Enqueuer;
  logger: Logger;
  backendParameters: readonly string[];
  storage: readonly string[];
  /** Who is asking (auth.mode) and what each user may use. */
  identity?: {
    policy: Policy;
    tokens?: TokenVerifier | undefined;
    oidc?: JwtVerifier | undefined;
  };
  /** Check every response against the spec too (tests switch this on). */
  validateResponses?: boolean;
  /** /healthz, /readyz and /metrics, and the metrics requests and tasks are recorded in. */
  observability?: OpsDeps;
}

export function specPath(): string {
  return join(projectRoot(), 'spec', 'tes.openapi.yaml');
}

/** What the task handlers need, from the app's dependencies: for the app and its fast paths alike. */
function handlerDeps(deps: AppDeps): TaskHandlerDeps {
  const { config } = deps;
  const metrics = deps.observability?.metrics;
  return {
    policy: deps.identity?.policy ?? policyFor(config),
    audit: createAudit(deps.logger),
    store: deps.store,
    queues: deps.queues,
    rules: taskRulesFor(config, deps.backendParameters),
    listPageMaxBytes: config.limits.listPageMaxBytes,
    onCreated: metrics && ((user) => metrics.taskCreated(user)),
  };
}

/** The HTTP application, without a listener: main.ts listens, tests use it directly. */
export function createApp(deps: AppDeps): Express {
  const { config } = deps;
  const handling = handlerDeps(deps);
  const { rules, audit, policy } = handling;
  const metrics = deps.observability?.metrics;
  const tasks = taskHandlers(handling);
  const info = buildServiceInfo(config, {
    storage: deps.storage,
    backendParameters: deps.backendParameters,
    version: packageVersion(),
    startedAt: new Date().toISOString(),
  });

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', parseQuery);
  // Probes and scrapes: before logging, authentication and the validator, none of which they need.
  if (deps.observability) {
    app.use(opsRoutes(deps.observability));
    if (metrics) app.use(httpMetrics(metrics));
  }
  app.use(requestContext(deps.logger, [config.auth.apiKeyParamName]));
  app.use(checkRequestTarget);
  // A create the fast path began and could not finish is answered here, and nothing else is done.
  app.use(answerFailedBeforeApp);
  // The dashboard's files are public and static; the data it shows comes through the API below.
  if (config.server.dashboard) app.use(DASHBOARD_PATH, dashboard(join(projectRoot(), 'ui')));
  // Credentials are checked before a body is read: a caller without them costs no parsing.
  if (config.auth.mode !== 'none') app.use(authenticate(authenticationOf(deps, policy, audit)));
  app.use(
    express.json({
      limit: config.server.bodyLimitBytes,
      strict: false,
      type: ['application/json', 'application/*+json'],
      verify: refuseDeepJson,
    }),
  );
  // Tolerant input happens before validation (see tes/normalize.ts), on the routes Express itself
  // matches, so a body is prepared exactly when the handler that uses it will run.
  const prepare = express.Router();
  prepare.post('/tasks', (req, _res, next) => {
    req.body = normalizeTaskBody(req.body);
    next();
  });
  prepare.post('/tasks/:id\\:cancel', (req, _res, next) => {
    req.body = {};
    next();
  });
  prepare.get('/tasks', checkPageSize);
  // A router answers OPTIONS by itself on any path it has routes for; that is the validator's to
  // refuse (405), so OPTIONS requests pass this one by.
  for (const base of BASE_PATHS) {
    app.use(base, (req, res, next) => (req.method === 'OPTIONS' ? next() : prepare(req, res, next)));
  }
  app.use(
    OpenApiValidator.middleware({
      apiSpec: specPath(),
      // Unknown query parameters are ignored: Nextflow's nf-ga4gh sends an API key as one, py-tes
      // sends `project`. The declared ones are still checked strictly.
      validateRequests: { allErrors: true, allowUnknownQueryParameters: true },
      validateResponses: deps.validateResponses ?? false,
      validateApiSpec: true,
    }),
  );

  const router = express.Router();
  const info$ = serviceInfoHandler(info);
  router.get('/service-info', operation('GetServiceInfo'), info$);
  router.get('/tasks/service-info', operation('GetServiceInfoLegacy'), info$);
  router.get('/tasks', operation('ListTasks'), tasks.list);
  router.post('/tasks', operation('CreateTask'), tasks.create);
  // The colon is escaped: `{id}:cancel` is one path segment, as the validator matches it too.
  router.post('/tasks/:id\\:cancel', operation('CancelTask'), tasks.cancel);
  router.get('/tasks/:id', operation('GetTask'), tasks.get);
  for (const base of BASE_PATHS) app.use(base, router);

  app.use(notFoundHandler);
  app.use(errorHandler(rules));
  return app;
}

/**
 * What is answered before the app: GET /tasks/{id} (api/fast-reads.ts) and POST /tasks
 * (api/fast-creates.ts), with the app's own store, checks, metrics and, with auth on, the same
 * checks of credentials; what they do not take goes to the app.
 */
export function createFastPaths(deps: AppDeps): FastPath {
  const { config } = deps;
  const handling = handlerDeps(deps);
  const identify =
    config.auth.mode === 'none'
      ? undefined
      : requestIdentifier(authenticationOf(deps, handling.policy, handling.audit));
  const metrics = deps.observability?.metrics;
  const reads = fastTaskReads({ store: deps.store, logger: deps.logger, metrics, identify });
  const creates = fastTaskCreates({
    creation: taskCreation(handling),
    specCheck: compileTaskBodyCheck(specPath()),
    bodyLimitBytes: config.server.bodyLimitBytes,
    logger: deps.logger,
    metrics,
    identify,
  });
  return (req, res, app) => (req.method === 'POST' ? creates(req, res, app) : reads(req, res, app));
}

/** Who may use the API, from the configuration: for the app and its fast path alike. */
function authenticationOf(deps: AppDeps, policy: Policy, audit: Audit): AuthenticationDeps {
  const { config } = deps;
  return {
    realm: config.auth.realm,
    apiKeyParamName: config.auth.apiKeyParamName,
    tokens: deps.identity?.tokens,
    oidc: deps.identity?.oidc,
    policy,
    denyUsers: config.identity.denyUsers,
    audit,
    publicPaths: BASE_PATHS.flatMap((base) => [`${base}/service-info`, `${base}/tasks/service-info`]),
  };
}

/**
 * `tag_key`/`tag_value` are lists paired by position: a single one (even an empty `tag_value=`, which
 * means "any value") is a list of one, and the `tag_key[]` spelling some clients use is accepted.
 */
export function parseQuery(text: string): Record<string, unknown> {
  const query: Record<string, unknown> = { ...querystring.parse(text) };
  for (const key of Object.keys(query)) {
    const m = /^(tag_key|tag_value)\[\]$/.exec(key);
    if (!m) continue;
    query[m[1]!] = ([] as unknown[]).concat(query[m[1]!] ?? [], query[key]);
    delete query[key];
  }
  for (const key of ['tag_key', 'tag_value']) {
    const value = query[key];
    if (value !== undefined && !Array.isArray(value)) query[key] = [value];
  }
  return query;
}

/**
 * Express, the validator and the handlers must all see the same path, or a request can be validated
 * as one operation and served by another (`POST /tasks/#:cancel` was validated as a cancel and
 * stored as a task). Express routes on the target as parsed by `parseurl`, which drops a fragment
 * (and re-escapes some bytes when it has to parse fully); the validator matches the raw target. A
 * target that does not read the same both ways is refused, and so is one that is not a plain path.
 */
function checkRequestTarget(req: Request, _res: Response, next: NextFunction): void {
  const target = req.url;
  const problem = targetProblem(target, req.path);
  if (problem === 'too long') {
    next(new RequestTargetTooLongError(target.length, MAX_TARGET_BYTES));
    return;
  }
  if (problem) {
    next(new ValidationError([{ path: 'request target', message: problem }]));
    return;
  }
  next();
}

/** What is wrong with a raw request target, given the path Express parsed from it; undefined if fine. */
export function targetProblem(target: string, parsedPath: string): string | undefined {
  if (target.length > MAX_TARGET_BYTES) return 'too long';
  if (!target.startsWith('/')) return 'must be a path starting with /';
  if (target.includes('#')) return "must not contain '#' (a fragment is never sent; encode it as %23)";
  const question = target.indexOf('?');
  const rawPath = question < 0 ? target : target.slice(0, question);
  if (rawPath !== parsedPath)
    return 'must be a plain path: it reads differently to the router and the validator';
  return undefined;
}

/** body-parser's hook between reading and parsing: a body nested too deep is never parsed. */
function refuseDeepJson(_req: Request, _res: Response, body: Buffer): void {
  if (jsonTextNestingExceeds(body, MAX_BODY_DEPTH)) {
    throw new ValidationError([{ path: 'body', message: `nested deeper than ${MAX_BODY_DEPTH} levels` }]);
  }
}

/**
 * The validator accepts `1e3`, `0x10`, ` 5` and `Infinity` for an integer query parameter (the last
 * one reached Redis as "Infinity"); page_size must be written as a plain decimal number.
 */
function checkPageSize(req: Request, _res: Response, next: NextFunction): void {
  const value = (req.query as Record<string, unknown>).page_size;
  if (value !== undefined && !isPageSize(value)) {
    next(
      new ValidationError([
        {
          path: 'page_size',
          message: `must be a whole number from 1 to ${MAX_PAGE_SIZE} (the spec's limit)`,
        },
      ]),
    );
    return;
  }
  next();
}

export const MAX_PAGE_SIZE = 2047;

export function isPageSize(value: unknown): boolean {
  return (
    typeof value === 'string' &&
    /^[0-9]{1,6}$/.test(value) &&
    Number(value) >= 1 &&
    Number(value) <= MAX_PAGE_SIZE
  );
}

/**
 * Each route states the operation it serves; if the validator matched the request to another one
 * (or to none), the request is refused instead of being served unvalidated.
 */
function operation(operationId: string) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    const matched = (req as { openapi?: { schema?: { operationId?: string } } }).openapi?.schema?.operationId;
    if (matched !== operationId) {
      next(
        new ValidationError([
          {
            path: 'request target',
            message: `is ambiguous: routed to ${operationId} but validated as ${matched ?? 'no operation'}`,
          },
        ]),
      );
      return;
    }
    next();
  };
}

import { join } from 'node:path';
import querystring from 'node:querystring';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import type { Config } from './config/schema.js';
import type { Logger } from './logger.js';
import type { TaskStore } from './store/task-store.js';
import { errorHandler, notFoundHandler } from './api/error-handler.js';
import { requestContext } from './api/request-context.js';
import { taskHandlers, type Enqueuer } from './api/handlers/tasks.js';
import { buildServiceInfo, serviceInfoHandler } from './api/handlers/service-info.js';
import { normalizeTaskBody } from './tes/normalize.js';
import { packageVersion, projectRoot } from './version.js';

export const BASE_PATHS = ['/ga4gh/tes/v1', '/v1'] as const;

export interface AppDeps {
  config: Config;
  store: TaskStore;
  queues: Enqueuer;
  logger: Logger;
  backendParameters: readonly string[];
  storage: readonly string[];
  /** Check every response against the spec too (tests switch this on). */
  validateResponses?: boolean;
}

export function specPath(): string {
  return join(projectRoot(), 'spec', 'tes.openapi.yaml');
}

/** The HTTP application, without a listener: main.ts listens, tests use it directly. */
export function createApp(deps: AppDeps): Express {
  const { config } = deps;
  const rules = {
    maxContentBytes: config.server.maxContentBytes,
    supportedBackendParameters: deps.backendParameters,
  };
  const tasks = taskHandlers({ store: deps.store, queues: deps.queues, rules });
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
  app.use(requestContext(deps.logger));
  app.use(
    express.json({
      limit: config.server.bodyLimitBytes,
      strict: false,
      type: ['application/json', 'application/*+json'],
    }),
  );
  app.use(normalizeBodies);
  app.use(
    OpenApiValidator.middleware({
      apiSpec: specPath(),
      validateRequests: { allErrors: true },
      validateResponses: deps.validateResponses ?? false,
      validateApiSpec: true,
    }),
  );

  const router = express.Router();
  const info$ = serviceInfoHandler(info);
  router.get('/service-info', info$);
  router.get('/tasks/service-info', info$);
  router.get('/tasks', tasks.list);
  router.post('/tasks', tasks.create);
  // The colon is escaped: `{id}:cancel` is one path segment, as the validator matches it too.
  router.post('/tasks/:id\\:cancel', tasks.cancel);
  router.get('/tasks/:id', tasks.get);
  for (const base of BASE_PATHS) app.use(base, router);

  app.use(notFoundHandler);
  app.use(errorHandler(rules));
  return app;
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

/** Tolerant input happens before validation: see tes/normalize.ts. */
function normalizeBodies(req: Request, _res: Response, next: NextFunction): void {
  if (req.method === 'POST') {
    if (/\/tasks\/?$/.test(req.path)) req.body = normalizeTaskBody(req.body);
    else if (/:cancel$/.test(req.path)) req.body = {};
  }
  next();
}

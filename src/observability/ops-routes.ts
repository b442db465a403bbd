import { createServer, type Server } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Logger } from '../logger.js';
import type { GatewayMetrics } from './metrics.js';
import type { Readiness } from './readiness.js';

/**
 * The operator's paths, outside the TES base paths and the spec: /healthz (liveness: the event loop
 * answers, no I/O), /readyz (readiness, each check named with its latency), /metrics (Prometheus).
 * They are mounted before authentication and the OpenAPI validator, so neither ever sees them; a
 * probe works whatever auth.mode is. /metrics asks for `metrics.token` as a bearer token when one is
 * set. The API serves them on its own port; a worker on its listener (worker.http).
 */

export const OPS_PATHS = ['/healthz', '/readyz', '/metrics'] as const;

export interface OpsDeps {
  /** Absent with `metrics.enabled: false`: /metrics then answers 404 saying so. */
  metrics?: GatewayMetrics | undefined;
  readiness: Readiness;
  /** Required on /metrics as `Authorization: Bearer <token>` when set. */
  metricsToken?: string | undefined;
}

export function opsRoutes(deps: OpsDeps): RequestHandler {
  const token = deps.metricsToken === undefined ? undefined : Buffer.from(`Bearer ${deps.metricsToken}`);
  const readyz = (res: Response, next: NextFunction): void => {
    deps.readiness.report().then((report) => {
      const failing = report.checks.filter((c) => !c.ok).map((c) => c.name);
      res
        .status(report.ready ? 200 : 503)
        .set('cache-control', 'no-store')
        .json({
          status: report.ready ? 'ready' : 'not ready',
          ...(failing.length > 0 ? { failing } : {}),
          checks: report.checks,
        });
    }, next);
  };
  const metrics = (req: Request, res: Response, next: NextFunction): void => {
    const registry = deps.metrics;
    if (!registry) {
      res.status(404).json({ message: 'metrics are off on this gateway (metrics.enabled: false)' });
      return;
    }
    if (token && !sameSecret(req.get('authorization'), token)) {
      res
        .status(401)
        .set('www-authenticate', 'Bearer realm="metrics"')
        .json({ message: 'metrics need the bearer token that metrics.token sets' });
      return;
    }
    registry.metrics().then((text) => {
      res.set('content-type', registry.contentType).set('cache-control', 'no-store').send(text);
    }, next);
  };
  // One comparison of the path for every API request that passes by, rather than a router's
  // pattern matching: this sits in front of the hot read path.
  return (req, res, next) => {
    const path = req.path;
    if (path !== '/healthz' && path !== '/readyz' && path !== '/metrics') {
      next();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res
        .status(405)
        .set('allow', 'GET, HEAD')
        .json({ message: `${req.method} ${path}: only GET and HEAD are allowed` });
      return;
    }
    if (path === '/healthz') res.set('cache-control', 'no-store').json({ status: 'ok' });
    else if (path === '/readyz') readyz(res, next);
    else metrics(req, res, next);
  };
}

function sameSecret(given: string | undefined, expected: Buffer): boolean {
  if (given === undefined) return false;
  const bytes = Buffer.from(given);
  return bytes.length === expected.length && timingSafeEqual(bytes, expected);
}

/** What the validator leaves on a request it matched: the route template of the spec. */
interface RoutedRequest extends Request {
  openapi?: { openApiRoute?: string };
}

const STARTED = Symbol('request started');

interface TimedResponse extends Response {
  [STARTED]?: number;
}

/**
 * Times every request that passes it, labelled by the route template the OpenAPI validator matched
 * (`/ga4gh/tes/v1/tasks/{id}`); a request it did not match (refused before, or unknown) is `unmatched`.
 * One histogram observation per request, and no function made per request: one listener serves all.
 */
export function httpMetrics(metrics: Pick<GatewayMetrics, 'httpRequest'>): RequestHandler {
  function finished(this: TimedResponse): void {
    const req = this.req as RoutedRequest;
    const seconds = (performance.now() - (this[STARTED] ?? 0)) / 1000;
    metrics.httpRequest(req.openapi?.openApiRoute ?? 'unmatched', req.method, this.statusCode, seconds);
  }
  return (_req: Request, res: TimedResponse, next: NextFunction): void => {
    res[STARTED] = performance.now();
    res.once('finish', finished);
    next();
  };
}

/**
 * A worker's own small HTTP listener: the operator's paths and nothing else. Resolves once it
 * listens.
 */
export async function startOpsServer(
  deps: OpsDeps,
  host: string,
  port: number,
  logger: Logger,
): Promise<Server> {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(opsRoutes(deps));
  app.use((req, res) => {
    res
      .status(404)
      .json({ message: `${req.method} ${req.path}: this listener serves ${OPS_PATHS.join(', ')}` });
  });
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    logger.error({ err }, 'the operations listener failed a request');
    res.status(500).json({ message: (err as Error).message });
  });
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

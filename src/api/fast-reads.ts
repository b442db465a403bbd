import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { TaskStore } from '../store/task-store.js';
import type { TesView } from '../tes/types.js';
import type { Identity } from '../identity/identity.js';
import type { Identified } from './authenticate.js';
import { readTask } from './handlers/tasks.js';
import { requestIdOf } from './request-context.js';

/**
 * GET /tasks/{id} answered before Express: clients poll every task about once a second, and the
 * framework's layers (routing, the OpenAPI validator's lookup and checks, the middleware chain) cost
 * about twice the Redis read itself. Only a request whose whole meaning is plain here is taken:
 *
 * - the path is exactly `<base path>/tasks/<task id>` and the query is empty or exactly
 *   `view=MINIMAL`, `view=BASIC` or `view=FULL`: nothing for the validator to check or refuse;
 * - with auth on, its credentials name a user (checked as the app checks them, api/authenticate.ts)
 *   who may see the task: a refusal, with its audit record and its challenge, is the app's;
 * - debug logging is off (the app logs every request at debug level);
 * - the task exists: a 404, like every error, is the app's to answer (one place maps errors).
 *
 * Anything else, and any failure before the answer is written (Redis away, say), is handed to the
 * app untouched, which answers it as it always does. The answer is the app's byte for byte, with the
 * same headers (Content-Type, Content-Length, Cache-Control, X-Request-Id); the tests compare both
 * and check it against the spec. It is counted in the HTTP metrics under the same route template.
 */
export type FastPath = (req: IncomingMessage, res: ServerResponse, app: () => void) => void;

/** `<base>/tasks/<candidate id>` with an optional `?view=...`; the id is checked by readTask. */
const TASK_TARGET = /^(\/ga4gh\/tes\/v1|\/v1)\/tasks\/([0-9a-z]{26})(?:\?view=(MINIMAL|BASIC|FULL))?$/;

export function fastTaskReads(deps: {
  store: Pick<TaskStore, 'get' | 'getHead'>;
  logger: Logger;
  metrics?: Pick<GatewayMetrics, 'httpRequest'> | undefined;
  /** With auth on: who the request's credentials name. */
  identify?: ((headers: IncomingHttpHeaders) => Promise<Identified>) | undefined;
}): FastPath {
  const { store, logger, metrics, identify } = deps;
  return (req, res, app) => {
    const match = req.method === 'GET' ? TASK_TARGET.exec(req.url ?? '') : null;
    if (!match || logger.isLevelEnabled('debug')) {
      app();
      return;
    }
    const started = performance.now();
    const [, base, taskId, view] = match;
    const read = async (): Promise<object | undefined> => {
      let who: Identity | undefined;
      if (identify) {
        const found = await identify(req.headers);
        if (!('identity' in found)) return undefined;
        who = found.identity;
      }
      return readTask(store, taskId!, (view ?? 'MINIMAL') as TesView, who);
    };
    read().then(
      (task) => {
        if (!task) {
          app();
          return;
        }
        const body = JSON.stringify(task);
        res.writeHead(200, {
          'X-Request-Id': requestIdOf(req.headers['x-request-id']),
          'Cache-Control': 'no-store',
          'Content-Type': 'application/json; charset=utf-8',
          'Content-Length': Buffer.byteLength(body),
        });
        res.end(body);
        metrics?.httpRequest(`${base}/tasks/{id}`, 'GET', 200, (performance.now() - started) / 1000);
      },
      () => app(),
    );
  };
}

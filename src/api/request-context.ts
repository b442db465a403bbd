import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from '../logger.js';
import { redactUrl } from '../staging/url-redaction.js';

declare module 'express-serve-static-core' {
  interface Request {
    /** The request's id: the client's X-Request-Id when it is sane, else a new one. */
    id: string;
    /** A logger that carries the request id. */
    log: Logger;
    /** The request target as logs may show it: secrets in the query (an API key) redacted. */
    loggedUrl: string;
  }
}

/** The client's X-Request-Id when it is sane (1 to 128 of A-Z a-z 0-9 _ . -), else a new one. */
export function requestIdOf(given: string | string[] | undefined): string {
  return typeof given === 'string' && /^[\w.-]{1,128}$/.test(given) ? given : randomUUID();
}

/**
 * Gives every request an id (echoed in X-Request-Id) and a logger carrying it. The child logger is
 * made only when something logs: reads are hot (clients poll every task every second) and most log
 * nothing. Each request is logged at debug level when it ends.
 */
export function requestContext(logger: Logger, secretParams: readonly string[] = []): RequestHandler {
  return (req, res, next) => {
    const id = requestIdOf(req.headers['x-request-id']);
    req.id = id;
    res.setHeader('X-Request-Id', id);
    let child: Logger | undefined;
    Object.defineProperty(req, 'log', {
      configurable: true,
      get: () => (child ??= logger.child({ reqId: id })),
    });
    Object.defineProperty(req, 'loggedUrl', {
      configurable: true,
      get: () => redactUrl(req.originalUrl, secretParams),
    });
    if (logger.isLevelEnabled('debug')) {
      const start = performance.now();
      res.on('finish', () => {
        req.log.debug(
          {
            method: req.method,
            url: req.loggedUrl,
            status: res.statusCode,
            ms: Math.round(performance.now() - start),
          },
          'request',
        );
      });
    }
    next();
  };
}

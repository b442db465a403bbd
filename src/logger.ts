import { pino, type Logger } from 'pino';

/** JSON logs; anything that can hold a secret is redacted wherever it appears. */
export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { service: 'tes-gateway', ...base },
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers.cookie',
        'req.headers["x-api-key"]',
        '*.password',
        '*.secretAccessKey',
        '*.sessionToken',
        'config.redis.url',
        'config.redis.sentinel.password',
        'config.redis.sentinel.sentinelPassword',
        'config.storage.s3.secretAccessKey',
        'storage.s3.secretAccessKey',
      ],
      censor: '[redacted]',
    },
  });
}

export type { Logger };

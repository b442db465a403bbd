import type { Request } from 'express';
import type { Logger } from '../logger.js';

/** Records one event a security review asks about: who, what, which task, from where. */
export type Audit = (req: AuditSource, event: AuditEvent, fields?: Record<string, unknown>) => void;

/** What an audit line reads of a request: an Express request, or the fast path's own (api/fast-creates.ts). */
export type AuditSource = Pick<Request, 'identity' | 'socket' | 'id' | 'method' | 'path'>;

export type AuditEvent = 'task created' | 'task canceled' | 'refused';

/**
 * Audit lines are JSON like every log line, marked `audit: true`, and written at info level even
 * when the gateway logs only warnings (only `silent` turns them off).
 */
export function createAudit(logger: Logger): Audit {
  const log =
    logger.level === 'silent' ? logger : logger.child({ audit: true }, { level: lowerOf(logger.level) });
  return (req, event, fields = {}) => {
    log.info(
      {
        event,
        user: req.identity?.user,
        ...(req.identity?.admin ? { admin: true } : {}),
        client: req.socket.remoteAddress,
        reqId: req.id,
        method: req.method,
        path: req.path,
        ...fields,
      },
      event,
    );
  };
}

const LEVELS = ['trace', 'debug', 'info'];

function lowerOf(level: string): string {
  return LEVELS.includes(level) ? level : 'info';
}

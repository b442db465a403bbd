import { DownloadBudgetError } from './download-budget.js';
import { AddressRefusedError } from './network-policy.js';
import { scrubSecrets } from './url-redaction.js';

/**
 * How one try of an http(s) download failed, and whether another try could succeed: permanent
 * failures (refused addresses, spent budgets, 4xx, TLS) end the input at once; the rest are retried,
 * after the wait a server's Retry-After asks for when it gives one.
 */

/** Node error codes of a network that may work again on the next try. */
export const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** How one try failed, and whether another could succeed. */
export class AttemptFailure extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'AttemptFailure';
  }
}

export function failureForStatus(
  status: number,
  statusText: string | undefined,
  retryAfter: string | undefined,
) {
  const what = `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
  if (status === 408 || status === 429 || status >= 500) {
    return new AttemptFailure(what, false, parseRetryAfter(retryAfter));
  }
  // The body is not quoted: error pages can echo the request, signature included.
  return new AttemptFailure(what, true);
}

/** A Node or stream error as an AttemptFailure, its message scrubbed of the URL's secrets. */
export function toFailure(err: unknown, secrets: readonly string[]): AttemptFailure {
  if (err instanceof AttemptFailure) return err;
  if (err instanceof AddressRefusedError || err instanceof DownloadBudgetError) {
    return new AttemptFailure(err.message, true);
  }
  const e = err as NodeJS.ErrnoException;
  const code = e?.code ?? '';
  const message = scrubSecrets(e?.message ?? String(err), secrets);
  const text = code && !message.includes(code) ? `${code}: ${message}` : message;
  if (TRANSIENT_CODES.has(code)) return new AttemptFailure(text, false);
  if (/^(CERT_|UNABLE_TO_|ERR_TLS_)|SELF_SIGNED/.test(code)) {
    return new AttemptFailure(`TLS: ${text}`, true);
  }
  if (code === 'ERR_INVALID_URL' || code === 'ERR_INVALID_HTTP_TOKEN') return new AttemptFailure(text, true);
  // Unknown: a later try may well work, and failing a task for a hiccup is worse than a slow failure.
  return new AttemptFailure(text, false);
}

/** Retry-After in milliseconds: delay-seconds or an HTTP date. */
export function parseRetryAfter(value: string | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

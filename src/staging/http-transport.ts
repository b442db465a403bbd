import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { AttemptFailure } from './http-failures.js';

/** One GET over Node's http(s), and the clocks that abort a try which stalls or runs too long. */

export function contentLength(res: IncomingMessage): number | undefined {
  const raw = res.headers['content-length'];
  return raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : undefined;
}

export function get(
  url: URL,
  headers: OutgoingHttpHeaders,
  signal: AbortSignal,
  agents: { http: http.Agent; https: https.Agent },
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req =
      url.protocol === 'https:'
        ? https.get(url, { headers, signal, agent: agents.https }, resolve)
        : http.get(url, { headers, signal, agent: agents.http }, resolve);
    // Also after the response: a later socket error then reaches the body stream, not the process.
    req.on('error', reject);
  });
}

/**
 * The two clocks of a try: no progress for `stallMs`, and the input's overall deadline. Either aborts
 * `signal` and records why in `reason`.
 */
export class Watchdog {
  private readonly controller = new AbortController();
  private stall: NodeJS.Timeout;
  private readonly overall: NodeJS.Timeout;
  reason: AttemptFailure | undefined;

  constructor(
    private readonly stallMs: number,
    deadline: number,
    timeoutMs: number,
  ) {
    this.stall = setTimeout(
      () => this.fire(`no data for ${formatMs(stallMs)} (storage.http.stallTimeoutMs)`),
      stallMs,
    );
    this.overall = setTimeout(
      () => this.fire(`not finished within ${formatMs(timeoutMs)} (storage.http.timeoutMs)`),
      Math.max(0, deadline - Date.now()),
    );
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  progress(): void {
    this.stall.refresh();
  }

  dispose(): void {
    clearTimeout(this.stall);
    clearTimeout(this.overall);
  }

  private fire(message: string): void {
    this.reason ??= new AttemptFailure(message, false);
    this.controller.abort(this.reason);
  }
}

export function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}

import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { dirname } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { retry, type RetryGaveUp } from '../retry.js';
import { DownloadBudget } from './download-budget.js';
import { AddressRefusedError, NetworkPolicy } from './network-policy.js';
import type { InputFetcher } from './stage-inputs.js';
import { StagingError } from './staging-error.js';
import { AttemptFailure, failureForStatus, toFailure } from './http-failures.js';
import { contentLength, get, Watchdog } from './http-transport.js';
import { parseTarget, redactUrl, type Target } from './url-redaction.js';

export interface HttpFetcherOptions {
  /** Largest body accepted, in bytes (`storage.http.maxBytes`). */
  maxBytes: number;
  /** Budget for one input: every try and every wait between tries (`storage.http.timeoutMs`). */
  timeoutMs: number;
  /** A try that receives nothing for this long is abandoned, and retried (`storage.http.stallTimeoutMs`). */
  stallTimeoutMs: number;
  /** Tries per input, the first included (`storage.http.attempts`). */
  attempts: number;
  /** Wait before the second try; it doubles for each further one (`storage.http.backoffMs`). */
  backoffMs: number;
  /** Longest wait between tries, also when a server's Retry-After asks for more. Default 60 s. */
  maxDelayMs?: number;
  /** Redirects followed per try. Default 10. */
  maxRedirects?: number;
  /**
   * Private networks (CIDRs, addresses) and host names the gateway may download from
   * (`storage.http.allowedPrivateNetworks`); loopback, link-local and private addresses are refused
   * otherwise. Default none.
   */
  allowedPrivateNetworks?: readonly string[];
}

/**
 * Downloads `http://` and `https://` inputs. The body is streamed into a temporary file beside the
 * destination and renamed into place when complete, so the destination is either whole or absent.
 *
 * Permanent failures (a 4xx other than 408 and 429, a body over `maxBytes`, an invalid URL or TLS
 * certificate, a DIRECTORY input) throw StagingError at once. Transient ones (refused or reset
 * connections, DNS errors, stalls, 408, 429, 5xx, a truncated body) are retried with exponential backoff
 * within `attempts` and `timeoutMs`; the last one is thrown as a plain Error, so the caller retries the
 * whole submission later. Messages never carry the URL's userinfo or signature-like query parameters.
 *
 * Every connection, the first and each redirect's, goes only to an address the NetworkPolicy allows,
 * checked on the address connected to (see network-policy.ts); a refusal is permanent. The bytes of a
 * task's inputs count against its DownloadBudget as they arrive.
 */
export class HttpFetcher implements InputFetcher {
  readonly schemes = ['http', 'https'] as const;
  private readonly maxDelayMs: number;
  private readonly maxRedirects: number;
  private readonly policy: NetworkPolicy;
  // Our own agents, so that every connection they open resolves through the policy's lookup, and no
  // socket opened elsewhere (without the check) is ever reused for a download.
  private readonly agents: { http: http.Agent; https: https.Agent };

  constructor(private readonly options: HttpFetcherOptions) {
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
    this.maxRedirects = options.maxRedirects ?? 10;
    this.policy = new NetworkPolicy(options.allowedPrivateNetworks ?? []);
    const lookup = this.policy.lookup;
    this.agents = {
      http: new http.Agent({ keepAlive: true, lookup }),
      https: new https.Agent({ keepAlive: true, lookup }),
    };
  }

  /** Closes idle connections. */
  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  async fetch(
    url: string,
    dest: string,
    type: 'FILE' | 'DIRECTORY',
    field: string,
    budget: DownloadBudget = DownloadBudget.unlimited(),
  ): Promise<void> {
    const target = parseTarget(url, field);
    if (type === 'DIRECTORY') {
      throw new StagingError(
        field,
        `${target.shown} cannot be a DIRECTORY input: plain HTTP cannot list a folder ` +
          `(use s3:// or a path on the shared filesystem, or one FILE input per file)`,
      );
    }
    const deadline = Date.now() + this.options.timeoutMs;
    const partial = `${dest}.part-${randomBytes(6).toString('hex')}`;
    await mkdir(dirname(dest), { recursive: true });
    let renamed = false;
    try {
      await retry(
        async () => {
          try {
            await this.attempt(target, partial, deadline, budget);
            await rename(partial, dest);
            renamed = true;
          } catch (err) {
            throw toFailure(err, target.secrets);
          }
        },
        {
          attempts: this.options.attempts,
          backoffMs: this.options.backoffMs,
          maxDelayMs: this.maxDelayMs,
          jitter: true,
          retryable: (f) => !(f as AttemptFailure).permanent,
          // A server's Retry-After wins when longer than the backoff.
          delayOf: (f) => (f as AttemptFailure).retryAfterMs,
          deadline,
        },
      ).catch((err: unknown) => {
        const { error, attempts } = err as RetryGaveUp;
        const failure = error as AttemptFailure;
        if (failure.permanent) {
          throw new StagingError(field, `cannot download ${target.shown}: ${failure.message}`);
        }
        const tries = attempts === 1 ? '1 attempt' : `${attempts} attempts`;
        throw new Error(`${field}: cannot download ${target.shown} after ${tries}: ${failure.message}`);
      });
    } finally {
      if (!renamed) await rm(partial, { force: true });
    }
  }

  /** One try: request (following redirects), then stream the body into `partial`. */
  private async attempt(
    target: Target,
    partial: string,
    deadline: number,
    budget: DownloadBudget,
  ): Promise<void> {
    const watch = new Watchdog(this.options.stallTimeoutMs, deadline, this.options.timeoutMs);
    let received = 0;
    try {
      const res = await this.follow(target, watch);
      const maxBytes = this.options.maxBytes;
      const announced = contentLength(res);
      if (announced !== undefined && announced > maxBytes) {
        res.destroy();
        throw new AttemptFailure(
          `the server announces ${announced} bytes, more than the limit of ${maxBytes} (storage.http.maxBytes)`,
          true,
        );
      }
      if (announced !== undefined) {
        try {
          budget.expect(announced);
        } catch (err) {
          res.destroy();
          throw err;
        }
      }
      const meter = new Transform({
        transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
          received += chunk.length;
          watch.progress();
          try {
            budget.take(chunk.length);
          } catch (err) {
            done(err as Error);
            return;
          }
          if (received > maxBytes) {
            done(
              new AttemptFailure(
                `the body is larger than the limit of ${maxBytes} bytes (storage.http.maxBytes)`,
                true,
              ),
            );
          } else {
            done(null, chunk);
          }
        },
      });
      await pipeline(res, meter, createWriteStream(partial), { signal: watch.signal });
      if (announced !== undefined && received !== announced) {
        throw new AttemptFailure(`the connection closed after ${received} of ${announced} bytes`, false);
      }
    } catch (err) {
      // The next try starts the file afresh: what this one wrote no longer counts.
      budget.give(received);
      throw watch.reason ?? err;
    } finally {
      watch.dispose();
    }
  }

  /** The first 2xx response, after following redirects; any other status becomes an AttemptFailure. */
  private async follow(target: Target, watch: Watchdog): Promise<IncomingMessage> {
    let url = target.url;
    let authorization = target.authorization;
    for (let hop = 0; ; hop++) {
      const headers: OutgoingHttpHeaders = { 'accept-encoding': 'identity', 'user-agent': 'tes-gateway' };
      if (authorization) headers.authorization = authorization;
      let res: IncomingMessage;
      try {
        // Node connects to an address written in the URL without resolving it: check it here.
        const literal = this.policy.checkLiteral(url.hostname);
        if (literal) throw literal;
        res = await get(url, headers, watch.signal, this.agents);
      } catch (err) {
        if (hop > 0 && err instanceof AddressRefusedError) {
          throw new AttemptFailure(`redirected to ${redactUrl(url.href)}: ${err.message}`, true);
        }
        throw err;
      }
      watch.progress();
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) return res;
      res.resume();
      if (REDIRECTS.has(status)) {
        const location = res.headers.location;
        if (!location) throw new AttemptFailure(`HTTP ${status} without a Location header`, true);
        if (hop >= this.maxRedirects)
          throw new AttemptFailure(`more than ${this.maxRedirects} redirects`, true);
        let next: URL;
        try {
          next = new URL(location, url);
        } catch {
          throw new AttemptFailure(`HTTP ${status} with an invalid Location header`, true);
        }
        if (next.protocol !== 'http:' && next.protocol !== 'https:') {
          throw new AttemptFailure(`redirected to an unsupported ${next.protocol} URL`, true);
        }
        // Credentials are for the origin the client named; another host must not see them.
        if (next.origin !== url.origin) authorization = undefined;
        url = next;
        continue;
      }
      throw failureForStatus(status, res.statusMessage, res.headers['retry-after']);
    }
  }
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { dirname } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DownloadBudget, DownloadBudgetError } from './download-budget.js';
import { AddressRefusedError, NetworkPolicy } from './network-policy.js';
import type { InputFetcher } from './stage-inputs.js';
import { StagingError } from './staging-error.js';

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
      for (let attempt = 1; ; attempt++) {
        let failure: AttemptFailure;
        try {
          await this.attempt(target, partial, deadline, budget);
          await rename(partial, dest);
          renamed = true;
          return;
        } catch (err) {
          failure = toFailure(err, target.secrets);
        }
        const reason = failure.message;
        if (failure.permanent) throw new StagingError(field, `cannot download ${target.shown}: ${reason}`);
        const wait = this.delayBefore(attempt + 1, failure.retryAfterMs);
        if (attempt >= this.options.attempts || Date.now() + wait >= deadline) {
          const tries = attempt === 1 ? '1 attempt' : `${attempt} attempts`;
          throw new Error(`${field}: cannot download ${target.shown} after ${tries}: ${reason}`);
        }
        await sleep(wait);
      }
    } finally {
      if (!renamed) await rm(partial, { force: true });
    }
  }

  /** Exponential backoff with jitter; a server's Retry-After wins when longer; both capped. */
  private delayBefore(attempt: number, retryAfterMs: number | undefined): number {
    const backoff = this.options.backoffMs * 2 ** (attempt - 2) * (0.5 + Math.random() / 2);
    return Math.min(this.maxDelayMs, Math.max(backoff, retryAfterMs ?? 0));
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

/** Node error codes of a network that may work again on the next try. */
const TRANSIENT_CODES = new Set([
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
class AttemptFailure extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'AttemptFailure';
  }
}

function failureForStatus(status: number, statusText: string | undefined, retryAfter: string | undefined) {
  const what = `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
  if (status === 408 || status === 429 || status >= 500) {
    return new AttemptFailure(what, false, parseRetryAfter(retryAfter));
  }
  // The body is not quoted: error pages can echo the request, signature included.
  return new AttemptFailure(what, true);
}

/** A Node or stream error as an AttemptFailure, its message scrubbed of the URL's secrets. */
function toFailure(err: unknown, secrets: readonly string[]): AttemptFailure {
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
function parseRetryAfter(value: string | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function contentLength(res: IncomingMessage): number | undefined {
  const raw = res.headers['content-length'];
  return raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : undefined;
}

function get(
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
class Watchdog {
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

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}

interface Target {
  /** Without userinfo: those travel in `authorization`. */
  url: URL;
  authorization: string | undefined;
  /** The URL as messages may show it. */
  shown: string;
  /** Values that must never appear in a message. */
  secrets: string[];
}

function parseTarget(raw: string, field: string): Target {
  const shown = redactUrl(raw);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new StagingError(field, `${shown} is not a valid URL`);
  }
  const secrets = secretsOf(raw);
  let authorization: string | undefined;
  if (url.username || url.password) {
    const user = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    secrets.push(user, password, authorization.slice('Basic '.length));
    url.username = '';
    url.password = '';
  }
  url.hash = '';
  return { url, authorization, shown, secrets: secrets.filter((s) => s.length >= 3) };
}

/** Query parameters whose values are credentials: AWS/GCS signatures, Azure SAS `sig`, API keys, tokens. */
const SECRET_PARAM = /sig|token|secret|passw|pwd|credential|key|auth|session/i;

const USERINFO = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*@)/;

/**
 * A URL as it may be shown in messages and logs: userinfo becomes `***@` and the values of
 * signature- or token-like query parameters become `***`; everything else is kept as the client wrote
 * it, so the reader can still recognise it.
 */
export function redactUrl(raw: string): string {
  const noFragment = raw.split('#', 1)[0]!;
  const withoutUser = noFragment.replace(USERINFO, '$1***@');
  const q = withoutUser.indexOf('?');
  if (q < 0) return withoutUser;
  const params = withoutUser
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      return SECRET_PARAM.test(safeDecode(name)) ? `${name}=***` : pair;
    });
  return `${withoutUser.slice(0, q)}?${params.join('&')}`;
}

/** The credential values in a URL as written, encoded and decoded, so messages can be scrubbed of them. */
function secretsOf(raw: string): string[] {
  const out: string[] = [];
  const user = USERINFO.exec(raw.split('#', 1)[0]!)?.[2]?.slice(0, -1);
  if (user) out.push(user, ...user.split(':'), ...user.split(':').map(safeDecode));
  const q = raw.indexOf('?');
  if (q >= 0) {
    for (const pair of raw
      .slice(q + 1)
      .split('#', 1)[0]!
      .split('&')) {
      const eq = pair.indexOf('=');
      if (eq < 0 || !SECRET_PARAM.test(safeDecode(pair.slice(0, eq)))) continue;
      const value = pair.slice(eq + 1);
      out.push(value, safeDecode(value));
    }
  }
  return out.filter((s) => s.length > 0);
}

/** `text` with every occurrence of each secret replaced by `***`. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) {
    if (s.length >= 3) out = out.split(s).join('***');
  }
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

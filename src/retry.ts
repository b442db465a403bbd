import { setTimeout as sleep } from 'node:timers/promises';

/** How `retry` spaces and bounds its tries. */
export interface RetryOptions {
  /** Tries, the first included. */
  attempts: number;
  /** Wait after the first failed try; it doubles after each one that follows. */
  backoffMs: number;
  /** Longest wait between tries, also when a failure asks for more. Default: no cap. */
  maxDelayMs?: number | undefined;
  /** Each wait drawn between half and all of its backoff, so that many callers do not retry in step. */
  jitter?: boolean | undefined;
  /** Whether a failure may pass on a later try; false gives up at once. Default: every failure. */
  retryable?: ((err: unknown) => boolean) | undefined;
  /** A wait the failure itself asks for (a server's Retry-After): used when longer than the backoff. */
  delayOf?: ((err: unknown) => number | undefined) | undefined;
  /** Epoch milliseconds: no try starts after this, so a wait that would end later gives up instead. */
  deadline?: number | undefined;
  /** Ends a wait early, and with it the retrying (`RetryAborted`). */
  signal?: AbortSignal | undefined;
  /** Told before each wait: what failed, which try it was, how long the wait is. */
  onRetry?: ((err: unknown, attempt: number, delayMs: number) => void) | undefined;
}

/** The last failure of `retry`, with the number of tries made. */
export class RetryGaveUp extends Error {
  constructor(
    readonly error: unknown,
    readonly attempts: number,
  ) {
    super((error as Error)?.message ?? String(error));
    this.name = 'RetryGaveUp';
  }
}

/** The signal ended a wait between tries. */
export class RetryAborted extends Error {
  constructor(
    readonly error: unknown,
    readonly attempts: number,
  ) {
    super('retrying was aborted');
    this.name = 'RetryAborted';
  }
}

/** The wait after failed try `attempt` (1 for the first): exponential, perhaps jittered, then capped. */
export function retryDelay(options: RetryOptions, attempt: number, requestedMs?: number): number {
  const spread = options.jitter ? 0.5 + Math.random() / 2 : 1;
  const backoff = options.backoffMs * 2 ** (attempt - 1) * spread;
  return Math.min(options.maxDelayMs ?? Infinity, Math.max(backoff, requestedMs ?? 0));
}

/**
 * Runs `fn` (given the number of the try, from 1) until it succeeds, a failure is not retryable, the
 * tries are spent or the deadline would pass; then throws RetryGaveUp with the last failure. The
 * callers decide what is permanent and word their own messages.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (options.retryable && !options.retryable(err)) throw new RetryGaveUp(err, attempt);
      const delayMs = retryDelay(options, attempt, options.delayOf?.(err));
      if (attempt >= options.attempts) throw new RetryGaveUp(err, attempt);
      if (options.deadline !== undefined && Date.now() + delayMs >= options.deadline) {
        throw new RetryGaveUp(err, attempt);
      }
      options.onRetry?.(err, attempt, delayMs);
      try {
        await sleep(delayMs, undefined, { signal: options.signal });
      } catch {
        throw new RetryAborted(err, attempt);
      }
    }
  }
}

/** Whether `work` ended within `ms`; it goes on either way. */
export async function within(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([work.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

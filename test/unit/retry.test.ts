import { retry, RetryAborted, retryDelay, RetryGaveUp } from '../../src/retry.js';

class Permanent extends Error {}

/** A function that fails with each of `failures` in turn, then returns 'done'. */
function failing(...failures: Error[]): { fn: (attempt: number) => Promise<string>; tries: number[] } {
  const tries: number[] = [];
  return {
    tries,
    fn: (attempt) => {
      tries.push(attempt);
      const failure = failures[attempt - 1];
      return failure ? Promise.reject(failure) : Promise.resolve('done');
    },
  };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('retry', () => {
  it('returns what a later try returns, telling each retry with its doubling wait', async () => {
    const { fn, tries } = failing(new Error('a'), new Error('b'));
    const told: [string, number, number][] = [];
    const out = await retry(fn, {
      attempts: 3,
      backoffMs: 1,
      onRetry: (err, attempt, delayMs) => told.push([(err as Error).message, attempt, delayMs]),
    });
    expect(out).toBe('done');
    expect(tries).toEqual([1, 2, 3]);
    expect(told).toEqual([
      ['a', 1, 1],
      ['b', 2, 2],
    ]);
  });

  it('gives up after the last try with its failure and the number of tries', async () => {
    const last = new Error('c');
    const { fn, tries } = failing(new Error('a'), new Error('b'), last);
    const err = await rejection(retry(fn, { attempts: 3, backoffMs: 0 }));
    expect(err).toBeInstanceOf(RetryGaveUp);
    expect(err).toMatchObject({ error: last, attempts: 3 });
    expect(tries).toEqual([1, 2, 3]);
  });

  it('does not retry a failure that is not retryable', async () => {
    const permanent = new Permanent('no such thing');
    const { fn, tries } = failing(new Error('a'), permanent);
    const err = await rejection(
      retry(fn, { attempts: 5, backoffMs: 0, retryable: (e) => !(e instanceof Permanent) }),
    );
    expect(err).toMatchObject({ error: permanent, attempts: 2 });
    expect(tries).toEqual([1, 2]);
  });

  it('gives up rather than wait past the deadline', async () => {
    const { fn, tries } = failing(new Error('a'), new Error('b'));
    const err = await rejection(retry(fn, { attempts: 5, backoffMs: 60_000, deadline: Date.now() + 30_000 }));
    expect(err).toMatchObject({ attempts: 1 });
    expect(tries).toEqual([1]);
  });

  it('waits what the failure asks for when that is longer than the backoff, within the cap', async () => {
    const slow = Object.assign(new Error('busy'), { retryAfterMs: 3 });
    const { fn } = failing(slow, slow);
    const waits: number[] = [];
    await retry(fn, {
      attempts: 3,
      backoffMs: 1,
      maxDelayMs: 4,
      delayOf: (e) => (e as typeof slow).retryAfterMs,
      onRetry: (_err, _attempt, delayMs) => waits.push(delayMs),
    });
    expect(waits).toEqual([3, 3]);
    expect(retryDelay({ attempts: 9, backoffMs: 1, maxDelayMs: 4 }, 1, 60_000)).toBe(4);
  });

  it('ends a wait when the signal aborts, with the failure that caused it', async () => {
    const first = new Error('a');
    const { fn } = failing(first, new Error('b'));
    const controller = new AbortController();
    const err = retry(fn, {
      attempts: 3,
      backoffMs: 3_600_000,
      signal: controller.signal,
      onRetry: () => controller.abort(),
    });
    const caught = await rejection(err);
    expect(caught).toBeInstanceOf(RetryAborted);
    expect(caught).toMatchObject({ error: first, attempts: 1 });
  });
});

describe('retryDelay', () => {
  it('doubles after each failed try', () => {
    const options = { attempts: 9, backoffMs: 100 };
    expect([1, 2, 3, 4].map((n) => retryDelay(options, n))).toEqual([100, 200, 400, 800]);
  });

  it('draws a jittered wait between half and all of the backoff', () => {
    for (let i = 0; i < 50; i++) {
      const wait = retryDelay({ attempts: 9, backoffMs: 100, jitter: true }, 3);
      expect(wait).toBeGreaterThanOrEqual(200);
      expect(wait).toBeLessThanOrEqual(400);
    }
  });
});

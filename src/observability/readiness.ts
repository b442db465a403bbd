import { rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { CollectCache } from './collect-cache.js';

/**
 * Readiness: whether this process can do its work now. Each check is named, timed and bounded by a
 * timeout; the report names the ones that fail and why. Liveness (/healthz) is not here: it does no
 * I/O at all.
 */

export interface ReadinessCheck {
  name: string;
  /** Resolves when the dependency answers; rejects with what is wrong. */
  run(): Promise<void>;
}

export interface CheckResult {
  name: string;
  ok: boolean;
  latency_ms: number;
  error?: string;
}

export interface ReadinessReport {
  ready: boolean;
  checks: CheckResult[];
}

export class Readiness {
  constructor(
    readonly checks: readonly ReadinessCheck[],
    private readonly timeoutMs = 2000,
  ) {}

  async report(): Promise<ReadinessReport> {
    const checks = await Promise.all(this.checks.map((c) => this.runOne(c)));
    return { ready: checks.every((c) => c.ok), checks };
  }

  private async runOne(check: ReadinessCheck): Promise<CheckResult> {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    try {
      await Promise.race([check.run(), timeout]);
      return { name: check.name, ok: true, latency_ms: elapsedMs(started) };
    } catch (err) {
      return { name: check.name, ok: false, latency_ms: elapsedMs(started), error: messageOf(err) };
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A check whose outcome (pass or failure) is reused for `ttlMs`: for one that costs the cluster. */
export function cachedCheck(check: ReadinessCheck, ttlMs: number): ReadinessCheck {
  const cache = new CollectCache(() => check.run(), ttlMs);
  return { name: check.name, run: () => cache.get() };
}

/** Redis answers a PING. */
export function redisCheck(redis: Redis): ReadinessCheck {
  return {
    name: 'redis',
    run: async () => {
      // A connection that was lost queues commands until it is back: say so instead of waiting. One
      // still being made (at start) is given the check's time.
      const status = String(redis.status);
      if (status === 'reconnecting' || status === 'close' || status === 'end') {
        throw new Error(`the connection to Redis is ${status}`);
      }
      await redis.ping();
    },
  };
}

/** The work root takes a new file: task directories can be made there. */
export function workRootCheck(workRoot: string): ReadinessCheck {
  const probe = join(workRoot, `.readyz-${hostname()}-${process.pid}`);
  return {
    name: 'workRoot',
    run: async () => {
      try {
        await writeFile(probe, '', { mode: 0o600 });
        await rm(probe, { force: true });
      } catch (err) {
        throw new Error(`cannot write in ${workRoot}: ${messageOf(err)}`);
      }
    },
  };
}

function elapsedMs(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

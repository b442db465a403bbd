import type { Redis } from 'ioredis';
import { StoreUnavailableError } from '../errors.js';

/** Seconds since a replica's last acknowledgement beyond which it is not counted (they ack each second). */
const MAX_LAG_SECONDS = 2;

/** How long a count of healthy replicas is trusted before INFO is asked again. */
const CHECK_INTERVAL_MS = 1000;

/**
 * The replicas in an `INFO replication` answer that are in sync and acknowledged lately:
 * `slave0:ip=10.0.0.2,port=6379,state=online,offset=123,lag=0` lines with state online and a small lag.
 */
export function countHealthyReplicas(info: string): number {
  let healthy = 0;
  for (const line of info.split(/\r?\n/)) {
    const match = /^slave\d+:(.*)$/.exec(line.trim());
    if (!match) continue;
    const fields = new Map(
      match[1]!.split(',').map((pair) => {
        const at = pair.indexOf('=');
        return [pair.slice(0, at), pair.slice(at + 1)] as const;
      }),
    );
    const lag = Number(fields.get('lag'));
    if (fields.get('state') === 'online' && Number.isFinite(lag) && lag <= MAX_LAG_SECONDS) healthy += 1;
  }
  return healthy;
}

/**
 * Makes sure writes reached `count` replicas before they are confirmed to a client. Replication is
 * asynchronous, so a write a master took just before a failover is otherwise lost with it.
 *
 * WAIT blocks its connection until the replicas answer, and the connection is shared by every
 * request, so writes start only while INFO shows enough healthy replicas (`ready`): after a failover
 * the new master has none until the old one has resynchronised as its replica, and each creation
 * then fails at once instead of holding every other command for the WAIT timeout.
 */
export class ReplicaAcks {
  private healthy: { count: number; atMs: number } | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly count: number,
    private readonly timeoutMs: number,
  ) {
    // A new connection may reach another server (the master after a failover): count again.
    redis.on('ready', () => (this.healthy = undefined));
  }

  /**
   * Refuses before a write when too few replicas are in sync to acknowledge it, so that a refused
   * creation has usually written nothing (a client that tries again makes no second task).
   */
  async ready(): Promise<void> {
    if (this.count === 0) return;
    const healthy = await this.healthyReplicas();
    if (healthy < this.count) {
      throw this.shortfall(`${healthy} of the ${this.count} Redis replicas needed are in sync`);
    }
  }

  /**
   * Returns once the replicas hold every write sent so far on this connection. Asks INFO again
   * first when the connection changed server since `ready` (ioredis sends a command cut off by the
   * switch again, to the new master), so that no WAIT is sent that cannot succeed.
   */
  async await(): Promise<void> {
    if (this.count === 0) return;
    await this.ready();
    // WAIT covers every write sent before it on this connection, whichever request sent it.
    const acknowledged = Number(await this.redis.call('WAIT', this.count, this.timeoutMs));
    if (acknowledged < this.count) {
      this.healthy = undefined;
      throw this.shortfall(
        `${acknowledged} of ${this.count} Redis replicas acknowledged the write in ${this.timeoutMs} ms`,
      );
    }
  }

  private async healthyReplicas(): Promise<number> {
    const now = Date.now();
    if (this.healthy && now - this.healthy.atMs < CHECK_INTERVAL_MS) return this.healthy.count;
    const count = countHealthyReplicas(await this.redis.info('replication'));
    this.healthy = { count, atMs: now };
    return count;
  }

  private shortfall(what: string): StoreUnavailableError {
    return new StoreUnavailableError(
      new Error(`${what} (a failover under way, or a replica down); the write may not last, try again`),
    );
  }
}

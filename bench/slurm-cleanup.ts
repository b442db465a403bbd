import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import type { Keys } from '../src/store/keys.js';

const run = promisify(execFile);

/**
 * Cancels every Slurm job that a gateway under `keys` still counts as its tasks' (the jobs index),
 * arrays whole, so that a bench that failed half way leaves nothing queued on the cluster. Returns
 * how many jobs it asked Slurm to cancel.
 */
export async function cancelGatewayJobs(redis: Redis, keys: Keys): Promise<number> {
  const jobs = Object.values(await redis.hgetall(keys.jobs));
  const ids = [...new Set(jobs.map((id) => id.split('_')[0]!))];
  for (let i = 0; i < ids.length; i += 500) {
    await run('scancel', ids.slice(i, i + 500)).catch(() => undefined);
  }
  return ids.length;
}

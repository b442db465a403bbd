import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { createApp, createFastPaths, type AppDeps } from '../../src/app.js';
import { createHttpServer } from '../../src/api/http-server.js';
import { loadConfig } from '../../src/config/load-config.js';
import type { Config } from '../../src/config/schema.js';
import { createLogger, type Logger } from '../../src/logger.js';
import { TaskQueues } from '../../src/queue/producer.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import { SLURM_BACKEND_PARAMETERS } from '../../src/compute/slurm/sbatch-args.js';
import { connect, dropPrefix, testPrefix } from './redis.js';
import { identitySetup } from '../../src/identity/setup.js';

export interface TestApi {
  url: string;
  base: string;
  config: Config;
  store: RedisTaskStore;
  queues: TaskQueues;
  redis: Redis;
  prefix: string;
  close(): Promise<void>;
}

/**
 * The real HTTP app on a free port, against the real Redis under a prefix of its own, with every
 * response checked against the spec. Nothing consumes the queues: tests see what was enqueued.
 */
export async function startTestApi(
  name: string,
  overrides: Record<string, unknown> = {},
  options: { logger?: Logger; fastPaths?: boolean } = {},
): Promise<TestApi> {
  const prefix = testPrefix(name);
  const config = loadConfig({
    env: {},
    overrides: { redis: { prefix }, log: { level: 'silent' }, ...overrides },
  });
  const redis = connect();
  const store = new RedisTaskStore(redis, { prefix, maxBacklog: config.server.maxBacklog });
  const queues = new TaskQueues(redis, store.keys.bullPrefix, { submitAttempts: 3, submitBackoffMs: 100 });
  const deps: AppDeps = {
    config,
    store,
    queues,
    logger: options.logger ?? createLogger('silent'),
    backendParameters: SLURM_BACKEND_PARAMETERS,
    storage: ['file'],
    identity: identitySetup(config, redis, store.keys.tokens),
    validateResponses: true,
  };
  const app = createApp(deps);
  // With `fastPaths`, as the gateway serves: some requests are answered before the app.
  const server: Server = await new Promise((resolve) => {
    const s = options.fastPaths
      ? createHttpServer(app, deps.logger, createFastPaths(deps)).listen(0, '127.0.0.1', () => resolve(s))
      : app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    base: `${url}/ga4gh/tes/v1`,
    config,
    store,
    queues,
    redis,
    prefix,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await queues.close();
      await dropPrefix(redis, prefix);
      redis.disconnect();
    },
  };
}

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

export async function getJson(url: string): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(url);
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

export const SIMPLE_TASK = { executors: [{ image: 'alpine', command: ['echo', 'hello'] }] };

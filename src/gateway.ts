import type { Server } from 'node:http';
import type { Redis } from 'ioredis';
import type { Express } from 'express';
import { createApp, createFastPaths, type AppDeps } from './app.js';
import { closeHttpServer, createHttpServer } from './api/http-server.js';
import { within } from './retry.js';
import type { Config } from './config/schema.js';
import { checkStartup } from './config/startup-checks.js';
import type { Logger } from './logger.js';
import type { ComputeDriver } from './compute/driver.js';
import { LocalDriver } from './compute/local/local-driver.js';
import { SlurmDriver } from './compute/slurm/slurm-driver.js';
import type { PrepareDeps } from './queue/processors/prepare-job.js';
import { DirectImages, type ImageResolver } from './apptainer/images.js';
import { ImageCache } from './apptainer/image-cache.js';
import type { ContainerRuntime } from './apptainer/render-job-script.js';
import { RedisTaskStore } from './store/redis-task-store.js';
import { TaskQueues } from './queue/producer.js';
import { TaskWorkers } from './queue/worker.js';
import { TASK_LEASE_MS } from './queue/processors/held-lease.js';
import { Reconciler } from './reconciler/reconciler.js';
import { LeaderLock } from './store/leader-lock.js';
import { TaskLease } from './store/task-lease.js';
import { openRedis } from './store/redis-connection.js';
import { AllowedRoots } from './staging/allowed-roots.js';
import { OutputDeliverer } from './staging/deliver-outputs.js';
import { inputSchemes } from './staging/stage-inputs.js';
import { HttpFetcher } from './staging/http-fetcher.js';
import { S3Storage } from './staging/s3-storage.js';
import { projectRoot } from './version.js';
import { policyFor, type Policy } from './identity/policy.js';
import { identitySetup } from './identity/setup.js';
import type { TaskOwner } from './tes/types.js';
import { TaskRetention } from './task-retention.js';
import { UserHelper } from './run-as/user-helper.js';
import { LEDGERS_DIR } from './tes/task-directory.js';
import { GatewayMetrics } from './observability/metrics.js';
import {
  cachedCheck,
  Readiness,
  redisCheck,
  workRootCheck,
  type ReadinessCheck,
} from './observability/readiness.js';
import { startOpsServer } from './observability/ops-routes.js';
import { chmod, lstat, mkdir } from 'node:fs/promises';
import { posix } from 'node:path';

export interface Roles {
  api: boolean;
  worker: boolean;
}

export interface Gateway {
  config: Config;
  store: RedisTaskStore;
  queues: TaskQueues;
  driver: ComputeDriver;
  app?: Express;
  server?: Server;
  reconciler?: Reconciler;
  workers?: TaskWorkers;
  images?: ImageResolver;
  /** This process's metrics (its own registry); absent with `metrics.enabled: false`. */
  metrics: GatewayMetrics | undefined;
  readiness: Readiness;
  /** The port the API listens on (useful when the configured port is 0). */
  port?: number;
  /** A worker's listener for probes and metrics (worker.http), and its port. */
  opsServer?: Server;
  opsPort?: number;
  close(): Promise<void>;
}

/**
 * The helper through which the gateway acts as a task's owner, when tasks run as their owners
 * (identity.runAs user); none otherwise.
 */
export function userHelperOf(config: Config): UserHelper | undefined {
  if (config.identity.runAs !== 'user') return undefined;
  return new UserHelper(config.identity.helper);
}

/** The exhaustive choice of launcher. */
export function buildDriver(
  config: Config,
  logger: Logger,
  runAs?: UserHelper,
  metrics?: GatewayMetrics,
): ComputeDriver {
  switch (config.backend) {
    case 'slurm':
      return new SlurmDriver({
        runAs,
        metrics,
        binDir: config.slurm.binDir,
        timeoutMs: config.slurm.commandTimeoutMs,
        maxConcurrentCalls: config.slurm.maxConcurrentCalls,
        sacctChunkSize: config.slurm.sacctChunkSize,
        arrayWindowMs: config.slurm.arrayWindowMs,
        maxArraySize: config.slurm.maxArraySize,
        tmpDiskRefreshMs: config.slurm.tmpDiskRefreshMs,
        logger,
      });
    case 'local':
      return new LocalDriver({
        workRoot: config.workRoot,
        maxConcurrentTasks: config.local.maxConcurrentTasks,
        logger,
      });
    default: {
      const never: never = config.backend;
      throw new Error(`unknown backend ${String(never)}`);
    }
  }
}

export function containerRuntime(config: Config): ContainerRuntime {
  const c = config.container;
  const executable =
    c.executable ??
    (c.runtime === 'bwrap-host'
      ? `${projectRoot()}/libexec/apptainer-bwrap`
      : c.runtime === 'singularity'
        ? 'singularity'
        : 'apptainer');
  return { flavor: c.runtime, executable, extraArgs: c.extraArgs };
}

/**
 * Images are pulled once on the gateway host into the shared cache, so compute nodes never pull.
 * The bwrap-host runtime ignores images, so it needs no cache.
 */
export function buildImageResolver(
  config: Config,
  redis: Redis,
  store: RedisTaskStore,
  logger: Logger,
  metrics?: GatewayMetrics,
): ImageResolver {
  if (config.container.runtime === 'bwrap-host') return new DirectImages();
  const c = config.container;
  const cache: ImageCache = new ImageCache({
    redis,
    keys: store.keys,
    cacheDir: c.imageCacheDir,
    executable: c.pullExecutable ?? containerRuntime(config).executable,
    pullTimeoutMs: c.pullTimeoutMs,
    attempts: c.pullAttempts,
    backoffMs: c.pullBackoffMs,
    maxBytes: c.imageCacheMaxBytes,
    policy: { imageRoots: c.imageRoots, allowedSchemes: c.allowedImageSchemes },
    logger,
    metrics,
    // Images of tasks not yet finished stay, whatever their age: those with a job, and the oldest
    // waiting ones (being submitted). Only their images are read, never their requests.
    inUse: async () => {
      const ids = [...(await store.activeJobs()).keys(), ...(await store.idsInState('QUEUED', 10_000))];
      return new Set([...(await store.imagesOf(ids))].map((image) => cache.pathOf(image)));
    },
  });
  return cache;
}

/**
 * The gateway's main connection, by `redis.url` or through Sentinel (store/redis-connection.ts); the
 * log hears when a connection ioredis gave up on is connected again.
 */
export function connectRedis(config: Config, logger?: Logger): Redis {
  return openRedis(
    config.redis,
    logger &&
      ((err, delayMs) =>
        logger.warn({ err, delayMs }, 'redis connection ended after a failed connect; connecting again')),
  );
}

/**
 * The validator loads the spec on the first request; asking for service-info once at start loads it
 * then, so a broken spec stops the start instead of failing every request, and the first client
 * request does not wait for it.
 */
async function checkApi(host: string, port: number, gateway: Gateway): Promise<void> {
  const target = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const url = `http://${target.includes(':') ? `[${target}]` : target}:${port}/ga4gh/tes/v1/service-info`;
  const res = await fetch(url).catch((err: unknown) => ({
    ok: false,
    status: 0,
    text: async () => String(err),
  }));
  if (!res.ok) {
    await gateway.close();
    throw new Error(
      `the API did not answer its own service-info at ${url} (${res.status}): ${await res.text()}`,
    );
  }
}

/**
 * Starts the roles asked for. Unsafe settings stop it first with a ConfigError (`configSource` names
 * where the settings came from, for its message).
 */
export async function startGateway(
  config: Config,
  roles: Roles,
  logger: Logger,
  configSource = '(settings)',
): Promise<Gateway> {
  await checkStartup(config, roles.worker, configSource);
  const redis = connectRedis(config, logger);
  const sentinel = config.redis.sentinel;
  const store = new RedisTaskStore(redis, {
    prefix: config.redis.prefix,
    maxBacklog: config.server.maxBacklog,
    replicas: sentinel && { count: sentinel.acceptReplicas, timeoutMs: sentinel.acceptTimeoutMs },
  });
  const queues = new TaskQueues(redis, store.keys.bullPrefix, {
    submitAttempts: config.worker.submitAttempts,
    submitBackoffMs: config.worker.submitBackoffMs,
  });
  const runAs = userHelperOf(config);
  // Run as their owners, users make their task directories in the work root (sticky, 1733).
  if (runAs && roles.worker) await makeSharedWorkRoot(config.workRoot);
  const metrics = config.metrics.enabled
    ? new GatewayMetrics({
        sources: { taskStates: () => store.countByState(), queues: () => queues.depth() },
        cacheMs: config.metrics.cacheMs,
        userLabels: config.auth.mode === 'none' ? 0 : config.metrics.userLabels,
      })
    : undefined;
  const driver = buildDriver(config, logger, runAs, metrics);
  const roots = new AllowedRoots(config.storage.allowedRoots);
  const policy = policyFor(config);
  const s3 = new S3Storage(config.storage.s3);
  const http = new HttpFetcher(config.storage.http);
  const fetchers = [http, s3];
  const outputs = new OutputDeliverer(roots, [s3], metrics);
  const readiness = new Readiness(readinessChecks(config, roles, redis, driver));
  const gateway: Gateway = {
    config,
    store,
    queues,
    driver,
    metrics,
    readiness,
    close: async () => {
      const began = Date.now();
      const deadline = began + config.server.shutdownTimeoutMs;
      const left = (): number => Math.max(0, deadline - Date.now());
      // How long each step waited, for the log line that says the gateway stopped.
      const waitedMs: Record<string, number> = {};
      const step = async (name: string, work: () => Promise<unknown>): Promise<void> => {
        const t0 = Date.now();
        await work();
        waitedMs[name] = Date.now() - t0;
      };
      // No new connections; idle keep-alive ones go now, requests in flight may finish, and each
      // answered from now on closes its connection (api/http-server.ts).
      await step('requests', async () => gateway.server && closeHttpServer(gateway.server, left()));
      // The leader finishes its cycle and frees the lease for another gateway at once. A cycle still
      // running at the deadline (a slow sacct) is left: its writes are fenced, and the lease lapses.
      await step('reconciler', async () => {
        if (gateway.reconciler && !(await within(gateway.reconciler.stop(), left())))
          logger.warn(
            { shutdownTimeoutMs: config.server.shutdownTimeoutMs },
            'the reconciler was still in a cycle at the shutdown deadline; another gateway leads once ' +
              'its lease lapses (reconciler.leaderTtlMs)',
          );
      });
      // Running queue jobs may finish; past the deadline they are left to BullMQ, which hands a job
      // whose lock lapses to another worker (submission finds a job already made, so nothing doubles).
      const workers = gateway.workers;
      await step('queue jobs', async () => {
        if (workers && !(await within(workers.close(), left()))) await workers.close(true);
      });
      await step('connections', async () => {
        if (gateway.images instanceof ImageCache) gateway.images.close();
        await queues.close();
        await driver.close();
        s3.close();
        http.close();
        // Last: the probes and metrics of a worker stay while it finishes its queue jobs.
        if (gateway.opsServer) {
          const opsClosed = new Promise<void>((resolve) => gateway.opsServer!.close(() => resolve()));
          gateway.opsServer.closeAllConnections();
          await opsClosed;
        }
      });
      redis.disconnect();
      logger.info({ tookMs: Date.now() - began, waitedMs }, 'tes-gateway stopped');
    },
  };

  if (roles.worker) {
    const images = buildImageResolver(config, redis, store, logger, metrics);
    gateway.images = images;
    const prepare: PrepareDeps = {
      workRoot: config.workRoot,
      runtime: containerRuntime(config),
      policy: config.slurm,
      partitionDisks: driver instanceof SlurmDriver ? () => driver.partitionDisks.current() : undefined,
      staging: {
        roots,
        fetchers,
        parallel: config.storage.parallelDownloads,
        limits: {
          maxDownloadBytes: config.storage.maxTaskDownloadBytes,
          maxListedObjects: config.storage.s3.maxListedObjects,
        },
        metrics,
      },
      images,
      forOwner: ownerSettings(policy, roots),
      runAs: runAs && { helper: runAs },
    };
    gateway.workers = new TaskWorkers(
      redis,
      store.keys.bullPrefix,
      {
        store,
        driver,
        queues,
        prepare,
        outputs,
        logger,
        tailBytes: config.log.tailBytes,
        taskLogMaxBytes: config.log.taskLogMaxBytes,
        endStates: { preempted: config.slurm.preempted },
        taskLease: (work, taskId) =>
          new TaskLease(redis, store.keys.lock(`${work}:${taskId}`), TASK_LEASE_MS),
        metrics,
      },
      config.worker,
    );
    gateway.reconciler = new Reconciler({
      store,
      driver,
      queues,
      lock: new LeaderLock(redis, store.keys.lock('reconciler'), config.reconciler.leaderTtlMs),
      logger,
      workRoot: config.workRoot,
      dirOwner: runAs ? 'user' : 'service',
      pollIntervalMs: config.reconciler.pollIntervalMs,
      missingGraceMs: config.slurm.missingGraceMs,
      housekeeping: retentionOf(config, redis, queues, logger, runAs),
      housekeepingIntervalMs: config.retention.intervalMs,
      metrics,
    });
    gateway.reconciler.start();
    const listener = config.worker.http;
    if (!roles.api && listener.port !== undefined) {
      try {
        gateway.opsServer = await startOpsServer(
          { metrics, readiness, metricsToken: config.metrics.token },
          listener.host,
          listener.port,
          logger,
        );
      } catch (err) {
        await gateway.close();
        throw new Error(
          `the worker's listener could not listen on ${listener.host}:${listener.port} (worker.http): ` +
            (err as Error).message,
        );
      }
      const address = gateway.opsServer.address();
      if (address && typeof address === 'object') gateway.opsPort = address.port;
    }
  }

  if (roles.api) {
    const appDeps: AppDeps = {
      config,
      store,
      queues,
      logger,
      backendParameters: driver.supportedBackendParameters,
      identity: { ...identitySetup(config, redis, store.keys.tokens), policy },
      storage: [...new Set([...inputSchemes(fetchers), ...outputs.schemes])],
      observability: { metrics, readiness, metricsToken: config.metrics.token },
    };
    const app = createApp(appDeps);
    // GET /tasks/{id} and POST /tasks before the app: the reads clients poll with, and the creates
    // of their bursts (api/fast-reads.ts, api/fast-creates.ts).
    const fastPaths = createFastPaths(appDeps);
    gateway.app = app;
    await new Promise<void>((resolve, reject) => {
      const server = createHttpServer(app, logger, fastPaths).listen(
        config.server.port,
        config.server.host,
        () => resolve(),
      );
      server.on('error', reject);
      gateway.server = server;
    });
    const address = gateway.server!.address();
    if (address && typeof address === 'object') gateway.port = address.port;
    await checkApi(config.server.host, gateway.port!, gateway);
    if (config.auth.mode === 'none' && !isLoopback(config.server.host)) {
      logger.warn(
        { host: config.server.host, port: gateway.port },
        'the API answers on a network address without authentication (auth.mode none): anyone who ' +
          'reaches it can list, create and cancel tasks; set auth.mode (docs/authentication.md)',
      );
    }
  }
  return gateway;
}

/**
 * What this process needs to do its work: Redis always; a worker also the Slurm controller (asked at
 * most every 5 s: `scontrol ping`) and a work root it can write in.
 */
function readinessChecks(
  config: Config,
  roles: Roles,
  redis: Redis,
  driver: ComputeDriver,
): ReadinessCheck[] {
  const checks = [redisCheck(redis)];
  if (!roles.worker) return checks;
  if (driver instanceof SlurmDriver) {
    checks.push(cachedCheck({ name: 'slurm', run: () => driver.cli.ping() }, 5000));
  }
  checks.push(workRootCheck(config.workRoot));
  return checks;
}

/**
 * What a task's owner may use, for the workers: their roots (the site's and their policy's, each set
 * resolved once and kept) and their default account. A task without an owner (auth.mode none) gets the
 * site's roots.
 */
function ownerSettings(policy: Policy, siteRoots: AllowedRoots) {
  const byRoots = new Map<string, AllowedRoots>();
  return (owner: TaskOwner | undefined) => {
    if (!owner) return { roots: siteRoots };
    const mine = policy.forUser(owner.user, owner.groups ?? []);
    const key = JSON.stringify(mine.roots);
    let roots = byRoots.get(key);
    if (!roots) {
      if (byRoots.size > 10_000) byRoots.clear();
      roots = new AllowedRoots(mine.roots);
      byRoots.set(key, roots);
    }
    return { roots, defaultAccount: mine.defaultAccount };
  };
}

/**
 * The leader's expiry of finished tasks (task-retention.ts), each run lasting at most one interval;
 * none when retention.terminalTasksDays is 0.
 */
function retentionOf(
  config: Config,
  redis: Redis,
  queues: TaskQueues,
  logger: Logger,
  runAs: UserHelper | undefined,
): ((signal: AbortSignal) => Promise<void>) | undefined {
  const retention = new TaskRetention({
    redis,
    prefix: config.redis.prefix,
    queues,
    workRoot: config.workRoot,
    runAs,
    terminalTasksDays: config.retention.terminalTasksDays,
    batchSize: config.retention.batchSize,
    logger,
  });
  if (!retention.enabled) return undefined;
  return async (signal) => {
    await retention.runFor(config.retention.intervalMs, signal);
  };
}

/**
 * The work root of tasks run as their owners: each user makes their own task directories there (through
 * the helper), so it is writable by all, but sticky (no one removes or renames another's) and not
 * readable (no one lists the others'). Made so when missing; startup checks refuse one that is not.
 */
async function makeSharedWorkRoot(workRoot: string): Promise<void> {
  try {
    await mkdir(workRoot, { recursive: false });
    await chmod(workRoot, 0o1733);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      await mkdir(posix.dirname(workRoot), { recursive: true });
      await mkdir(workRoot);
      await chmod(workRoot, 0o1733);
    } else if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  // The gateway's ledgers: anyone may make entries in the work root, so one made there by someone else
  // before the gateway's first start would let them rewrite every task's job script before the helper
  // copies it into place.
  const ledgers = posix.join(workRoot, LEDGERS_DIR);
  await mkdir(ledgers, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const st = await lstat(ledgers);
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) {
    throw new Error(
      `${ledgers} must be a directory of the gateway's own (uid ${process.getuid?.()}), mode 0700; it is ` +
        `${st.isSymbolicLink() ? 'a symbolic link' : `uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)}`}: ` +
        'someone else may have made it; remove it and start the gateway again (docs/security.md)',
    );
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

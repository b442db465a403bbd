import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { vanishedJob, type JobStatus } from '../../src/compute/job-end.js';
import { SlurmDriver } from '../../src/compute/slurm/slurm-driver.js';
import { createLogger } from '../../src/logger.js';
import type { ProcessorContext } from '../../src/queue/processors/context.js';
import { processFinalize } from '../../src/queue/processors/finalize.js';
import type { PrepareDeps } from '../../src/queue/processors/prepare-job.js';
import { Reconciler } from '../../src/reconciler/reconciler.js';
import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { OutputDeliverer } from '../../src/staging/deliver-outputs.js';
import { LeaderLock } from '../../src/store/leader-lock.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import type { TaskRequest } from '../../src/tes/types.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

/**
 * A job that neither accounting nor the controller knows any more (purged, or lost with the
 * controller's state), against real Redis, a real task directory and a Slurm driver whose sacct and
 * squeue know nothing: the task ends from its executors' exit_code files when they show the
 * executors finished, and as an unknown outcome otherwise.
 */
describe('a task whose job vanished', () => {
  const prefix = testPrefix('vanished-job');
  const bin = mkdtempSync('/tmp/tesgw-vanished-bin-');
  const workRoot = mkdtempSync(join('/var/tmp', 'tesgw-vanished-'));
  let redis: Redis;
  let store: RedisTaskStore;

  const driver = new SlurmDriver({
    binDir: bin,
    timeoutMs: 10_000,
    maxConcurrentCalls: 2,
    sacctChunkSize: 100,
    arrayWindowMs: 0,
    maxArraySize: 10,
  });

  function context(): ProcessorContext {
    return {
      store,
      driver,
      queues: {} as ProcessorContext['queues'],
      prepare: { workRoot } as PrepareDeps,
      outputs: new OutputDeliverer(new AllowedRoots([workRoot]), []),
      logger: createLogger('silent'),
      tailBytes: 1024,
      taskLogMaxBytes: 4096,
    };
  }

  /** A RUNNING task submitted two minutes ago; `codes[i]` is what executor i left (undefined: nothing). */
  async function ranTask(codes: ReadonlyArray<number | undefined>, ignore: boolean[] = []): Promise<string> {
    const request: TaskRequest = {
      executors: codes.map((_, i) => ({
        image: 'alpine',
        command: ['true'],
        ignore_error: ignore[i] ?? false,
      })),
    };
    const t = await store.create(request);
    const jobId = String(7000 + Math.floor(Math.random() * 1000));
    const run = {
      jobId,
      submittedAt: new Date(Date.now() - 120_000).toISOString(),
      workDir: join(workRoot, t.id),
    };
    await store.transition(t.id, 'QUEUED', { from: ['QUEUED'], run, job: jobId });
    await store.transition(t.id, 'RUNNING');
    codes.forEach((code, i) => {
      if (code === undefined) return;
      const exec = join(workRoot, t.id, `exec-${i}`);
      mkdirSync(exec, { recursive: true });
      writeFileSync(join(exec, 'start'), '2024-01-01T00:00:00.000Z\n');
      writeFileSync(join(exec, 'end'), '2024-01-01T00:00:01.000Z\n');
      writeFileSync(join(exec, 'exit_code'), `${code}\n`);
      writeFileSync(join(exec, 'stdout'), `out ${i}\n`);
    });
    return t.id;
  }

  beforeAll(() => {
    redis = connect();
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000 });
    for (const tool of ['sacct', 'squeue']) {
      writeFileSync(join(bin, tool), '#!/bin/sh\nexit 0\n');
      chmodSync(join(bin, tool), 0o755);
    }
  });
  afterAll(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(bin, { recursive: true, force: true });
    rmSync(workRoot, { recursive: true, force: true });
  });

  it('ends from the exit_code files when every executor finished, not as a node failure', async () => {
    const id = await ranTask([0, 0]);
    const statuses: JobStatus[] = [];
    const reconciler = new Reconciler({
      store,
      driver,
      queues: {
        enqueue: async (kind, payload) => {
          if (kind === 'finalize' && 'status' in payload && payload.taskId === id)
            statuses.push(payload.status);
          return false;
        },
      },
      lock: new LeaderLock(redis, store.keys.lock('reconciler'), 10_000),
      logger: createLogger('silent'),
      workRoot,
      pollIntervalMs: 60_000,
      missingGraceMs: 60_000,
    });
    await reconciler.cycle();
    expect(statuses).toHaveLength(1);
    await processFinalize(id, statuses[0]!, context());
    const record = await store.get(id);
    expect(record?.state).toBe('COMPLETE');
    expect(record?.logs?.[0]?.logs?.map((l) => [l.exit_code, l.stdout])).toEqual([
      [0, 'out 0\n'],
      [0, 'out 1\n'],
    ]);
    expect(record?.logs?.[0]?.system_logs).toEqual([
      expect.stringMatching(/^Slurm job \d+ is gone: .*; the executors' exit codes show how the task ended$/),
    ]);
  });

  it('ends EXECUTOR_ERROR when an executor failed and stopped the rest', async () => {
    const id = await ranTask([0, 3, undefined]);
    await processFinalize(id, vanishedJob('7999'), context());
    const record = await store.get(id);
    expect(record?.state).toBe('EXECUTOR_ERROR');
    expect(record?.logs?.[0]?.system_logs?.at(-1)).toBe('executor 1 exited 3');
  });

  it('ends COMPLETE past an executor whose failure is ignored', async () => {
    const id = await ranTask([5, 0], [true]);
    await processFinalize(id, vanishedJob('7998', true), context());
    const record = await store.get(id);
    expect(record?.state).toBe('COMPLETE');
    expect(record?.logs?.[0]?.system_logs).toEqual([
      "Slurm job 7998 is gone: its id now names another job, so the controller lost this one; the executors' exit codes show how the task ended",
      'executor 0 exited 5; ignored because ignore_error is set',
    ]);
  });

  it('still ends SYSTEM_ERROR, outcome unknown, when an executor never recorded its exit code', async () => {
    const id = await ranTask([0, undefined]);
    await processFinalize(id, vanishedJob('7997'), context());
    const record = await store.get(id);
    expect(record?.state).toBe('SYSTEM_ERROR');
    expect(record?.logs?.[0]?.system_logs?.at(-1)).toMatch(/the task's outcome is unknown$/);
  });
});

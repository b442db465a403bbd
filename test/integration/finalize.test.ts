import type { Redis } from 'ioredis';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ComputeDriver } from '../../src/compute/driver.js';
import type { JobStatus } from '../../src/compute/job-end.js';
import type { PrepareDeps } from '../../src/queue/processors/prepare-job.js';
import { createLogger } from '../../src/logger.js';
import type { ProcessorContext } from '../../src/queue/processors/context.js';
import { processFinalize } from '../../src/queue/processors/finalize.js';
import type { DeliveryResult, OutputDelivery } from '../../src/staging/deliver-outputs.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import type { TaskRequest } from '../../src/tes/types.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

/**
 * Finalizing against real Redis and a real task directory, with the files a job script leaves
 * written by hand: what makes a task SYSTEM_ERROR, and how much of the executors' logs is kept.
 */

const prefix = testPrefix('finalize');
let redis: Redis;
let store: RedisTaskStore;
let workRoot: string;
let delivery: DeliveryResult;

const completed: JobStatus = {
  jobId: '42',
  state: 'COMPLETED',
  rawState: 'COMPLETED',
  exitCode: { code: 0, signal: 0 },
};

function context(limits: { tailBytes: number; taskLogMaxBytes: number }): ProcessorContext {
  const outputs: OutputDelivery = { schemes: ['file'], deliver: async () => delivery };
  return {
    store,
    driver: { kind: 'slurm' } as ComputeDriver,
    queues: {} as ProcessorContext['queues'],
    prepare: { workRoot } as PrepareDeps,
    outputs,
    logger: createLogger('silent'),
    ...limits,
  };
}

/** A task whose job ran: each executor's files as the job script writes them. */
async function ranTask(
  request: TaskRequest,
  stdout: (index: number) => string = () => '',
  exitCode = 0,
): Promise<{ id: string; dir: string }> {
  const record = await store.create(request);
  await store.transition(record.id, 'RUNNING');
  const dir = join(workRoot, record.id);
  request.executors.forEach((_, i) => {
    const exec = join(dir, `exec-${i}`);
    mkdirSync(exec, { recursive: true });
    writeFileSync(join(exec, 'start'), '2024-01-01T00:00:00.000Z\n');
    writeFileSync(join(exec, 'end'), '2024-01-01T00:00:01.000Z\n');
    writeFileSync(join(exec, 'exit_code'), `${exitCode}\n`);
    writeFileSync(join(exec, 'stdout'), stdout(i));
    writeFileSync(join(exec, 'stderr'), '');
  });
  return { id: record.id, dir };
}

const task = (executors = 1): TaskRequest => ({
  outputs: [{ path: '/out/x', url: 'file:///dest/x', type: 'FILE' }],
  executors: Array.from({ length: executors }, () => ({ image: 'alpine', command: ['true'] })),
});

beforeAll(() => {
  redis = connect();
  store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000 });
  workRoot = mkdtempSync(join(tmpdir(), 'finalize-'));
});
beforeEach(() => {
  delivery = { files: [], errors: [], notes: [] };
});
afterAll(async () => {
  await dropPrefix(redis, prefix);
  redis.disconnect();
  rmSync(workRoot, { recursive: true, force: true });
});

describe('processFinalize', () => {
  const limits = { tailBytes: 1024, taskLogMaxBytes: 1024 * 1024 };

  it('ends a task SYSTEM_ERROR when the job script refused a path, though every executor succeeded', async () => {
    const { id, dir } = await ranTask(task());
    const refusal =
      "executors[0].stdout: /out/o resolves to /etc/passwd, outside the task's writable place /out; " +
      'the gateway does not follow links a task makes';
    writeFileSync(join(dir, 'system-error'), `${refusal}\n`);
    await processFinalize(id, { ...completed, state: 'FAILED', rawState: 'FAILED' }, context(limits));
    const record = await store.get(id);
    expect(record?.state).toBe('SYSTEM_ERROR');
    expect(record?.logs?.[0]?.system_logs).toEqual([refusal]);
  });

  it('ends a task SYSTEM_ERROR on a script error even when an executor failed', async () => {
    const { id, dir } = await ranTask(task(), () => '', 3);
    writeFileSync(join(dir, 'system-error'), 'executors[0].stdout: /out/o is not a regular file\n');
    await processFinalize(id, { ...completed, state: 'FAILED', rawState: 'FAILED' }, context(limits));
    const record = await store.get(id);
    expect(record?.state).toBe('SYSTEM_ERROR');
    expect(record?.logs?.[0]?.system_logs).toEqual([
      'executors[0].stdout: /out/o is not a regular file',
      'executor 0 exited 3',
    ]);
  });

  it('lets a cancel win over a script error', async () => {
    const { id, dir } = await ranTask(task());
    await store.transition(id, 'CANCELING');
    writeFileSync(join(dir, 'system-error'), 'executors[0].stdout: /out/o is not a regular file\n');
    await processFinalize(id, { ...completed, state: 'CANCELLED', rawState: 'CANCELLED' }, context(limits));
    expect((await store.get(id))?.state).toBe('CANCELED');
  });

  it('adds delivery notes to the system logs without failing the task', async () => {
    const { id } = await ranTask(task());
    delivery.notes = [
      'outputs[0]: a symbolic link in /out/d left out (/out/d/l); the gateway does not follow links a task makes',
    ];
    await processFinalize(id, completed, context(limits));
    const record = await store.get(id);
    expect(record?.state).toBe('COMPLETE');
    expect(record?.logs?.[0]?.system_logs).toEqual(delivery.notes);
  });

  it('keeps the executors’ log tails within the task’s total', async () => {
    const { id } = await ranTask(task(4), (i) => `${String(i).repeat(1000)}`);
    await processFinalize(id, completed, context({ tailBytes: 800, taskLogMaxBytes: 2000 }));
    const logs = (await store.get(id))?.logs?.[0]?.logs ?? [];
    // Four stdout streams share 2,000 bytes; the empty stderr streams leave theirs to them.
    expect(logs.map((l) => l.stdout)).toEqual(['0', '1', '2', '3'].map((c) => c.repeat(500)));
    expect(logs.map((l) => l.stderr)).toEqual(['', '', '', '']);
  });

  it('keeps each tail at tailBytes while the total allows', async () => {
    const { id } = await ranTask(task(2), (i) => `${String(i).repeat(1000)}`);
    await processFinalize(id, completed, context({ tailBytes: 800, taskLogMaxBytes: 1024 * 1024 }));
    const logs = (await store.get(id))?.logs?.[0]?.logs ?? [];
    expect(logs.map((l) => l.stdout)).toEqual(['0'.repeat(800), '1'.repeat(800)]);
  });
});

import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { ComputeDriver } from '../../src/compute/driver.js';
import type { JobStatus } from '../../src/compute/job-end.js';
import { createLogger } from '../../src/logger.js';
import type { ProcessorContext } from '../../src/queue/processors/context.js';
import { processFinalize } from '../../src/queue/processors/finalize.js';
import type { PrepareDeps } from '../../src/queue/processors/prepare-job.js';
import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { OutputDeliverer } from '../../src/staging/deliver-outputs.js';
import { RedisTaskStore } from '../../src/store/redis-task-store.js';
import type { TaskStore } from '../../src/store/task-store.js';
import type { TaskRequest } from '../../src/tes/types.js';
import { TaskLease } from '../../src/store/task-lease.js';
import { connect, dropPrefix, testPrefix } from '../helpers/redis.js';

/**
 * Finalize run again, as BullMQ does after a failed Redis write or a stalled worker, against real
 * Redis, a real task directory and real delivery into an allowed root: the task ends the same, with
 * the same outputs, and files already delivered are not written again.
 */
describe('finalize run again', () => {
  const prefix = testPrefix('finalize-repeat');
  const workRoot = mkdtempSync(join('/var/tmp', 'tesgw-finalize-repeat-'));
  const dest = join(workRoot, 'dest');
  let redis: Redis;
  let store: RedisTaskStore;

  const completed: JobStatus = {
    jobId: '42',
    state: 'COMPLETED',
    rawState: 'COMPLETED',
    exitCode: { code: 0, signal: 0 },
    endTime: 1700000060,
  };

  function context(taskStore: TaskStore = store): ProcessorContext {
    return {
      store: taskStore,
      driver: { kind: 'slurm' } as ComputeDriver,
      queues: {} as ProcessorContext['queues'],
      prepare: { workRoot } as PrepareDeps,
      outputs: new OutputDeliverer(new AllowedRoots([dest]), []),
      logger: createLogger('silent'),
      tailBytes: 1024,
      taskLogMaxBytes: 4096,
    };
  }

  /** The store, but its first transition fails as a Redis write does when the connection drops. */
  function failingOnce(): TaskStore {
    const wrapped = Object.create(store) as TaskStore;
    let failed = false;
    wrapped.transition = async (...args) => {
      if (!failed) {
        failed = true;
        throw new Error('Connection is closed.');
      }
      return store.transition(...args);
    };
    return wrapped;
  }

  /** A task whose one executor succeeded and wrote `/out/x` and `/out/d/{1,2}`, delivered under `to`. */
  async function ranTask(to: string): Promise<string> {
    const request: TaskRequest = {
      executors: [{ image: 'alpine', command: ['true'] }],
      outputs: [
        { path: '/out/x', url: `file://${dest}/${to}/a`, type: 'FILE' },
        // The same source twice: both are delivered.
        { path: '/out/x', url: `file://${dest}/${to}/b`, type: 'FILE' },
        { path: '/out/d', url: `file://${dest}/${to}/d`, type: 'DIRECTORY' },
      ],
    };
    const t = await store.create(request);
    await store.transition(t.id, 'RUNNING');
    const dir = join(workRoot, t.id);
    for (const place of ['tmp', 'var-tmp', 'mnt/out/d']) mkdirSync(join(dir, place), { recursive: true });
    writeFileSync(join(dir, 'mnt/out/x'), 'x'.repeat(3000));
    writeFileSync(join(dir, 'mnt/out/d/1'), 'one');
    writeFileSync(join(dir, 'mnt/out/d/2'), 'two');
    mkdirSync(join(dir, 'exec-0'));
    writeFileSync(join(dir, 'exec-0/start'), '2024-01-01T00:00:00.000Z\n');
    writeFileSync(join(dir, 'exec-0/end'), '2024-01-01T00:00:01.000Z\n');
    writeFileSync(join(dir, 'exec-0/exit_code'), '0\n');
    return t.id;
  }

  /** Each delivered file's content and identity (inode, change time): rewritten files differ. */
  function delivered(to: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const f of ['a', 'b', 'd/1', 'd/2']) {
      const path = join(dest, to, f);
      const st = statSync(path, { bigint: true });
      out[f] = `${readFileSync(path, 'utf8').length} ${st.ino} ${st.mtimeNs} ${st.ctimeNs}`;
    }
    return out;
  }

  const expectedOutputs = (to: string) => [
    { url: `file://${dest}/${to}/a`, path: '/out/x', size_bytes: '3000' },
    { url: `file://${dest}/${to}/b`, path: '/out/x', size_bytes: '3000' },
    { url: `file://${dest}/${to}/d/1`, path: '/out/d/1', size_bytes: '3' },
    { url: `file://${dest}/${to}/d/2`, path: '/out/d/2', size_bytes: '3' },
  ];

  beforeAll(() => {
    redis = connect();
    store = new RedisTaskStore(redis, { prefix, maxBacklog: 1000 });
    mkdirSync(dest);
  });
  afterAll(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(workRoot, { recursive: true, force: true });
  });

  it('lets only one of two finalizations running at once deliver, under the task lease', async () => {
    const id = await ranTask('together');
    const ctx: ProcessorContext = {
      ...context(),
      taskLease: (work, taskId) => new TaskLease(redis, store.keys.lock(`${work}:${taskId}`), 5_000),
    };
    const deliveries: string[] = [];
    const deliver = ctx.outputs.deliver.bind(ctx.outputs);
    ctx.outputs = {
      schemes: ctx.outputs.schemes,
      deliver: async (...args) => {
        deliveries.push(id);
        // Slow enough that the second finalization starts while the first delivers.
        await new Promise((r) => setTimeout(r, 300));
        return deliver(...args);
      },
    };
    await Promise.all([processFinalize(id, completed, ctx), processFinalize(id, completed, ctx)]);
    expect(deliveries).toHaveLength(1);
    expect(await store.getState(id)).toBe('COMPLETE');
    expect((await store.get(id))?.logs?.[0]?.outputs).toEqual(expectedOutputs('together'));
    expect(await redis.exists(store.keys.lock(`finalize:${id}`))).toBe(0);
  });

  it('ends the same after a failed Redis write, without writing delivered files again', async () => {
    const once = await ranTask('once');
    await processFinalize(once, completed, context());
    const retried = await ranTask('retried');
    await expect(processFinalize(retried, completed, context(failingOnce()))).rejects.toThrow(
      'Connection is closed.',
    );
    expect(await store.getState(retried)).toBe('RUNNING');
    const first = delivered('retried');
    // Time enough for a rewrite to show in the files' times.
    await new Promise((r) => setTimeout(r, 50));
    await processFinalize(retried, completed, context());

    const [a, b] = [(await store.get(once))!, (await store.get(retried))!];
    expect(b.state).toBe('COMPLETE');
    expect(b.state).toBe(a.state);
    expect(b.logs?.[0]?.outputs).toEqual(expectedOutputs('retried'));
    expect(a.logs?.[0]?.outputs).toEqual(expectedOutputs('once'));
    expect(b.logs?.[0]?.system_logs).toEqual(a.logs?.[0]?.system_logs);
    expect(delivered('retried')).toEqual(first);
    expect(readFileSync(join(dest, 'retried/b'), 'utf8')).toBe('x'.repeat(3000));
  });

  it('ends the same when run twice after a stall', async () => {
    const id = await ranTask('twice');
    await processFinalize(id, completed, context());
    const first = { record: await store.get(id), files: delivered('twice') };
    await new Promise((r) => setTimeout(r, 50));
    await processFinalize(id, completed, context());
    expect(await store.get(id)).toEqual(first.record);
    expect(delivered('twice')).toEqual(first.files);
  });

  it('never cuts short a delivered file of a finished task when a stalled run goes on late', async () => {
    const id = await ranTask('stalled');
    const big = 'y'.repeat(16 * 1024 * 1024);
    writeFileSync(join(workRoot, id, 'mnt/out/x'), big);
    const gate = () => {
      let open!: () => void;
      const opened = new Promise<void>((r) => (open = r));
      return { open, opened, reached: false };
    };
    // Run A delivers, then stalls before its write; run B (the job handed to another worker) reads
    // the task while it is still running, then waits.
    const [a, b] = [gate(), gate()];
    const storeA = Object.create(store) as TaskStore;
    storeA.transition = async (...args) => {
      a.reached = true;
      await a.opened;
      return store.transition(...args);
    };
    const storeB = Object.create(store) as TaskStore;
    storeB.get = async (taskId) => {
      const record = await store.get(taskId);
      b.reached = true;
      await b.opened;
      return record;
    };
    const runA = processFinalize(id, completed, context(storeA));
    while (!a.reached) await new Promise((r) => setTimeout(r, 5));
    const runB = processFinalize(id, completed, context(storeB));
    while (!b.reached) await new Promise((r) => setTimeout(r, 5));
    a.open();
    await runA;
    expect(await store.getState(id)).toBe('COMPLETE');
    // The client, told the task is COMPLETE, reads its output while run B goes on.
    const sizes: number[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        sizes.push(statSync(join(dest, 'stalled/a')).size);
        await new Promise((r) => setImmediate(r));
      }
    })();
    b.open();
    await runB;
    watching = false;
    await watcher;
    expect(Math.min(...sizes)).toBe(big.length);
    expect(readFileSync(join(dest, 'stalled/a'), 'utf8')).toBe(big);
  });

  it('delivers again a file that was changed at its destination since it was delivered', async () => {
    const id = await ranTask('changed');
    await expect(processFinalize(id, completed, context(failingOnce()))).rejects.toThrow();
    writeFileSync(join(dest, 'changed/a'), 'not what the task made');
    await processFinalize(id, completed, context());
    expect(readFileSync(join(dest, 'changed/a'), 'utf8')).toBe('x'.repeat(3000));
    expect((await store.get(id))?.logs?.[0]?.outputs).toEqual(expectedOutputs('changed'));
  });
});

import { jest } from '@jest/globals';
import type { JobStatus } from '../../src/compute/job-end.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/** What a job Slurm preempted for good makes of its task, by slurm.preempted, through the gateway's own finalizer. */
jest.setTimeout(60_000);

const preempted = (jobId: string): JobStatus => ({
  jobId,
  state: 'PREEMPTED',
  rawState: 'PREEMPTED',
  exitCode: { code: 0, signal: 15 },
});

describe.each([
  [undefined, 'PREEMPTED'],
  ['PREEMPTED', 'PREEMPTED'],
  ['SYSTEM_ERROR', 'SYSTEM_ERROR'],
] as const)('a task whose job is preempted for good, with slurm.preempted %s', (setting, expected) => {
  let gw: TestGateway;
  beforeAll(async () => {
    // Workers without an API: the task is stored directly, never submitted, only finalized.
    const slurm = setting ? { preempted: setting } : {};
    gw = await startTestGateway(
      `preempted-${setting ?? 'default'}`,
      { backend: 'local', slurm },
      {
        roles: { api: false, worker: true },
      },
    );
  });
  afterAll(async () => gw.close());

  it(`ends ${expected}, saying Slurm did not requeue the job`, async () => {
    const { store, queues } = gw.gateway;
    const record = await store.create({ executors: [{ image: 'alpine', command: ['true'] }] });
    // No job is recorded, so the reconciler never polls it: only the finalizer decides.
    await queues.enqueue('finalize', { taskId: record.id, status: preempted('77') });
    for (
      let i = 0;
      i < 100 && !['PREEMPTED', 'SYSTEM_ERROR'].includes((await store.getState(record.id))!);
      i++
    ) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const task = (await store.get(record.id))!;
    expect(task.state).toBe(expected);
    expect(task.logs?.[0]?.system_logs?.at(-1)).toMatch(
      /^Slurm job 77 ended PREEMPTED \(killed by signal 15\): Slurm preempted the job and did not requeue it/,
    );
  });
});

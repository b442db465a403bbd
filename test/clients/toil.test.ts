import { jest } from '@jest/globals';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { requireSlurm, type TestGateway } from '../helpers/gateway.js';
import {
  explainRun,
  listAllTasks,
  runClient,
  sharedRunner,
  startClientGateway,
  WORKFLOWS,
  type ClientRun,
} from './real-clients.js';

/**
 * Debian's toil 5.9.2 with `--batchSystem tes`, unchanged, on the real single-node Slurm: five jobs (a
 * parent, three children, a follow-on joining their files). Every job sends `disk_gb` (the cluster's
 * nodes have no TmpDisk) and writes into Toil's file job store, which Toil mounts as a DIRECTORY input
 * only because service-info's `storage` lists a writable allowed root holding it.
 */
jest.setTimeout(420_000);

let gw: TestGateway;
let data: string;
let run: ClientRun;
let output: string;

beforeAll(async () => {
  requireSlurm();
  const runner = sharedRunner('run-toil.sh');
  ({ gw, data } = await startClientGateway('toil'));
  output = join(data, 'joined.txt');
  run = await runClient(runner, [gw.url, join(WORKFLOWS, 'toil-fan-out.py'), output], {
    TOIL_TES_WORK: data,
  });
  process.stdout.write(`toil workflow: exit ${run.code} in ${(run.ms / 1000).toFixed(1)} s\n`);
});

afterAll(async () => {
  await gw?.close();
  if (run?.code === 0) rmSync(data, { recursive: true, force: true });
});

describe('Toil on the real cluster', () => {
  it('lists the writable allowed root in service-info as a file:// prefix', async () => {
    const info = (await (await fetch(`${gw.base}/service-info`)).json()) as { storage: string[] };
    expect(info.storage.some((s) => `file://${data}/toil-tes.x/jobstore`.startsWith(s))).toBe(true);
  });

  it('runs a workflow of several jobs to exit 0', async () => {
    if (run.code !== 0) throw new Error(await explainRun(run, gw.base));
  });

  it('delivers the joined output of the three children', () => {
    expect(readFileSync(output, 'utf8')).toBe('child 0\nchild 1\nchild 2\njoined 3 files\n');
  });

  it('ran each job as its own task on Slurm, each with a disk request', async () => {
    const tasks = await listAllTasks(gw.base);
    expect(tasks).toHaveLength(5);
    for (const task of tasks) {
      expect(task.state).toBe('COMPLETE');
      expect(task.resources.disk_gb).toBeGreaterThan(0);
      expect(task.logs[0].metadata).toMatchObject({ backend: 'slurm', job_id: expect.any(String) });
      const store = task.inputs.find((i: any) => i.type === 'DIRECTORY');
      expect(store?.url).toMatch(new RegExp(`^file://${data}/toil-tes\\.\\w+/jobstore$`));
    }
  });
});

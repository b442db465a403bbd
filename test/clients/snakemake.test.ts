import { jest } from '@jest/globals';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
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
 * Debian's snakemake 7.21 with `--tes`, unchanged, on the real single-node Slurm: two rules, each with
 * an input, an output, threads, mem_mb and disk_mb. Snakemake sends the Snakefile and the job script as
 * `content` inputs, the data as file:// inputs and outputs under the workflow folder, and runs
 * `python -m snakemake` in each task. The rules' resources never reach the gateway: Snakemake 7.21's
 * TES executor asks `"mem_mb" in job.resources`, which searches the values, not the names (and py-tes
 * 1.x models would refuse its item assignment anyway), so every task goes without `resources`.
 */
jest.setTimeout(300_000);

let gw: TestGateway;
let data: string;
let run: ClientRun;
let workdir: string;

beforeAll(async () => {
  requireSlurm();
  const runner = sharedRunner('run-snakemake7.sh');
  ({ gw, data } = await startClientGateway('snakemake'));
  run = await runClient(runner, [gw.url, join(WORKFLOWS, 'snakemake-two-rules')], { SMK_TES_WORK: data });
  process.stdout.write(`snakemake workflow: exit ${run.code} in ${(run.ms / 1000).toFixed(1)} s\n`);
  // The runner copies the workflow into a fresh folder of its own under SMK_TES_WORK.
  workdir = join(data, readdirSync(data).find((d) => d.startsWith('smk-tes.')) ?? 'smk-tes.missing');
});

afterAll(async () => {
  await gw?.close();
  if (run?.code === 0) rmSync(data, { recursive: true, force: true });
});

describe('Snakemake on the real cluster', () => {
  it('runs a workflow of two rules to exit 0', async () => {
    if (run.code !== 0) throw new Error(await explainRun(run, gw.base));
  });

  it('delivers each rule’s output, the second made from the first', () => {
    expect(readFileSync(join(workdir, 'mid', 'upper.txt'), 'utf8')).toBe('ALPHA\nBETA\nGAMMA\n');
    expect(readFileSync(join(workdir, 'out', 'summary.txt'), 'utf8')).toBe(
      'ALPHA\nBETA\nGAMMA\n3\nthreads=1\n',
    );
  });

  it('ran each rule as a task on Slurm, the workflow as content and its data as file:// URLs', async () => {
    const tasks = await listAllTasks(gw.base, 'FULL');
    expect(tasks.map((t) => t.state)).toEqual(['COMPLETE', 'COMPLETE']);
    const snakefile = readFileSync(join(workdir, 'Snakefile'), 'utf8');
    for (const task of tasks) {
      expect(task.logs[0].metadata).toMatchObject({ backend: 'slurm', job_id: expect.any(String) });
      expect(task.inputs).toEqual(
        expect.arrayContaining([
          { path: '/tmp/Snakefile', content: snakefile, type: 'FILE' },
          expect.objectContaining({ path: '/tmp/run_snakemake.sh', content: expect.any(String) }),
          expect.objectContaining({ url: expect.stringMatching(`^file://${workdir}/(in|mid)/`) }),
        ]),
      );
      expect(task.outputs).toEqual([
        expect.objectContaining({ url: expect.stringMatching(`^file://${workdir}/(mid|out)/`) }),
      ]);
    }
  });
});

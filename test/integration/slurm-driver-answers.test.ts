import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SlurmDriver } from '../../src/compute/slurm/slurm-driver.js';

/**
 * The Slurm driver against recorded answers of sacct, squeue and sinfo (scripts in a binDir that
 * print what the test wrote), for what the single-node cluster cannot show: preemption.
 */
describe('the Slurm driver, from recorded answers', () => {
  const bin = mkdtempSync('/tmp/tesgw-fake-slurm-');
  afterAll(() => rmSync(bin, { recursive: true, force: true }));

  /** `tool` prints `out` on stdout, `err` on stderr, and exits `code`; each call is counted. */
  function answer(tool: string, out: string, code = 0, err = ''): void {
    writeFileSync(join(bin, `${tool}.out`), out);
    writeFileSync(join(bin, `${tool}.err`), err);
    writeFileSync(
      join(bin, tool),
      `#!/bin/sh\necho "$*" >> '${bin}/${tool}.calls'\ncat '${bin}/${tool}.out'\ncat '${bin}/${tool}.err' >&2\nexit ${code}\n`,
    );
    chmodSync(join(bin, tool), 0o755);
    writeFileSync(join(bin, `${tool}.calls`), '');
  }

  const driver = () =>
    new SlurmDriver({
      binDir: bin,
      timeoutMs: 10_000,
      maxConcurrentCalls: 2,
      sacctChunkSize: 100,
      arrayWindowMs: 0,
      maxArraySize: 10,
    });
  const row = (id: string, state: string, reason = 'None') =>
    `${id}|tes_x|${state}|0:15|${reason}|vm|60|1700000000|1700000060|00:00:01`;

  it('reports a preempted job that the controller has pending again as requeued', async () => {
    answer('sacct', `${row('42', 'PREEMPTED')}\n${row('43', 'RUNNING')}\n`);
    answer('squeue', '42|PENDING|BeginTime\n');
    const { jobs, errors } = await driver().poll(['42', '43']);
    expect(errors).toEqual([]);
    expect(jobs.get('42')).toMatchObject({ state: 'PENDING', reason: 'preempted, BeginTime' });
    expect(jobs.get('43')).toMatchObject({ state: 'RUNNING' });
  });

  it('reports a job preempted for good as PREEMPTED, whether the controller shows it so or forgot it', async () => {
    answer('sacct', `${row('42', 'PREEMPTED')}\n`);
    answer('squeue', '42|PREEMPTED|None\n');
    expect((await driver().poll(['42'])).jobs.get('42')).toMatchObject({ state: 'PREEMPTED' });
    answer('squeue', '', 1, 'slurm_load_jobs error: Invalid job id specified\n');
    expect((await driver().poll(['42'])).jobs.get('42')).toMatchObject({ state: 'PREEMPTED' });
  });

  it('decides nothing about a preempted job while squeue fails, and says why', async () => {
    answer('sacct', `${row('42', 'PREEMPTED')}\n${row('43', 'COMPLETED')}\n`);
    answer('squeue', '', 1, 'squeue: error: Unable to contact slurm controller\n');
    const { jobs, errors } = await driver().poll(['42', '43']);
    expect(jobs.has('42')).toBe(false);
    expect(jobs.get('43')).toMatchObject({ state: 'COMPLETED' });
    expect(errors).toEqual([
      expect.stringMatching(
        /^job 42 is PREEMPTED; whether Slurm requeues it is not known yet: .*Unable to contact/,
      ),
    ]);
  });

  it('asks squeue nothing when no job is preempted', async () => {
    answer('sacct', `${row('42', 'COMPLETED')}\n`);
    answer('squeue', '');
    await driver().poll(['42']);
    expect(readCalls('squeue')).toEqual([]);
  });

  it("reads the partitions' TmpDisk from sinfo once for many submissions", async () => {
    answer('sinfo', 'debug* 0\nbig 4096\n');
    const d = driver();
    const all = await Promise.all([d.partitionDisks.current(), d.partitionDisks.current()]);
    expect(all[1]?.partitions.get('big')).toEqual({ minMB: 4096, maxMB: 4096 });
    expect(all[0]?.defaultPartition).toBe('debug');
    expect(readCalls('sinfo')).toEqual(['--all --noheader --format=%P %d']);
  });

  function readCalls(tool: string): string[] {
    return readFileSync(join(bin, `${tool}.calls`), 'utf8')
      .split('\n')
      .filter(Boolean);
  }
});

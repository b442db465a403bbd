import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  arrayKey,
  buildArrayArgs,
  expandJobId,
  renderDispatcher,
} from '../../src/compute/slurm/job-arrays.js';
import { SlurmDriver } from '../../src/compute/slurm/slurm-driver.js';
import { expectGolden } from '../helpers/golden.js';

const args = (id: string) => [
  '--parsable',
  `--job-name=tes_${id}`,
  `--comment=name_${id}`,
  '--export=NONE',
  `--chdir=/w/${id}`,
  `--output=/w/${id}/slurm.out`,
  `--error=/w/${id}/slurm.err`,
  '--cpus-per-task=2',
  '--mem=512M',
  `/w/${id}/job.sh`,
];

describe('job arrays', () => {
  it('groups tasks whose Slurm requests differ only in per-task fields', () => {
    expect(arrayKey(args('a'))).toBe(arrayKey(args('b')));
    expect(arrayKey(args('a'))).not.toBe(arrayKey([...args('a').slice(0, -2), '--mem=1024M', '/w/a/job.sh']));
  });

  it('builds the array submission from the shared arguments', () => {
    expect(buildArrayArgs(args('a'), 'b1', 3, '/w/.arrays/b1.sh', '/w/.arrays')).toEqual([
      '--parsable',
      '--export=NONE',
      '--cpus-per-task=2',
      '--mem=512M',
      '--job-name=tes_array_b1',
      '--comment=tes-array',
      '--array=0-2',
      '--chdir=/w/.arrays',
      '--output=/w/.arrays/b1_%a.out',
      '--error=/w/.arrays/b1_%a.err',
      '/w/.arrays/b1.sh',
    ]);
  });

  it('renders a dispatcher that runs the job script of its element', () => {
    const script = renderDispatcher('b1', ['/w/task one', "/w/it's"]);
    expectGolden('job-script/dispatcher.sh', script);
    const dir = mkdtempSync(join(tmpdir(), 'dispatch-'));
    const file = join(dir, 'd.sh');
    writeFileSync(file, script);
    execFileSync('bash', ['-n', file]);
    const sc = spawnSync('shellcheck', ['--shell=bash', file], { encoding: 'utf8' });
    expect(sc.stdout + sc.stderr).toBe('');
    // Element 1 enters the second directory and runs its job.sh.
    const task = join(dir, "it's");
    execFileSync('mkdir', ['-p', task]);
    writeFileSync(join(task, 'job.sh'), 'pwd > where\n');
    writeFileSync(join(dir, 'd3.sh'), renderDispatcher('b1', [join(dir, 'none'), task]));
    spawnSync('bash', [join(dir, 'd3.sh')], { env: { ...process.env, SLURM_ARRAY_TASK_ID: '1' } });
    expect(execFileSync('cat', [join(task, 'where')], { encoding: 'utf8' }).trim()).toBe(task);
  });

  it('writes the array sbatch command quoted, so that it runs as exactly what was submitted', async () => {
    // A stand-in sbatch records the arguments it gets, one per line, and answers a job id.
    const dir = mkdtempSync(join(tmpdir(), "arrays-it's $(x) "));
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(
      join(bin, 'sbatch'),
      '#!/bin/bash\nprintf "%s\\0" "$@" > "$(dirname "$0")/received"\necho 4242\n',
      { mode: 0o755 },
    );
    const driver = new SlurmDriver({
      binDir: bin,
      timeoutMs: 10_000,
      maxConcurrentCalls: 1,
      sacctChunkSize: 100,
      arrayWindowMs: 10,
      maxArraySize: 100,
    });
    const hostile = [
      '--account=a b',
      "--qos=it's",
      '--constraint=$(touch pwned) `id` "q"',
      '--partition=x;y',
    ];
    const submit = (id: string) => {
      const workDir = join(dir, 'w', id);
      mkdirSync(workDir, { recursive: true });
      return driver.submit({
        taskId: id,
        workDir,
        ledgerDir: workDir,
        args: [...hostile, ...args(id)],
        since: new Date(),
        marker: `2026-12-02T15:00:00.000Z\nnote prepared ${id}\n`,
      });
    };
    const jobs = await Promise.all([submit('a'), submit('b')]);
    expect(jobs.map((j) => j.jobId)).toEqual(['4242_0', '4242_1']);
    expect(new Set(jobs.map((j) => j.jobName)).size).toBe(1);
    expect(jobs[0].jobName).toMatch(/^tes_array_[0-9a-f]{12}$/);
    // Each attempt's marker is written whole, with the task's place in the array.
    for (const [i, id] of ['a', 'b'].entries()) {
      expect(readFileSync(join(dir, 'w', id, 'submit-attempted'), 'utf8')).toBe(
        `2026-12-02T15:00:00.000Z\nnote prepared ${id}\narray ${jobs[i]!.jobName} ${i}\n`,
      );
    }
    const arrays = join(dir, 'w', '.arrays');
    const [commandFile] = readdirSync(arrays).filter((f) => f.endsWith('.sbatch-command'));
    const command = readFileSync(join(arrays, commandFile!), 'utf8');
    const received = readFileSync(join(bin, 'received'), 'utf8');
    // Run the file as written, with the stand-in first on the PATH: it must pass the same arguments.
    execFileSync('bash', [join(arrays, commandFile!)], {
      cwd: dir,
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    });
    expect(readFileSync(join(bin, 'received'), 'utf8')).toBe(received);
    expect(received.split('\0')).toEqual(expect.arrayContaining([...hostile, '--array=0-1']));
    expect(command).toContain(`'--constraint=$(touch pwned) \`id\` "q"'`);
    expect(readdirSync(dir)).not.toContain('pwned');
    rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    ['123', ['123']],
    ['123_4', ['123_4']],
    ['123_[0-2]', ['123_0', '123_1', '123_2']],
    ['123_[1,3-4]', ['123_1', '123_3', '123_4']],
    ['123_[0-3%2]', ['123_0', '123_1', '123_2', '123_3']],
    ['123_[0-4:2]', ['123_0', '123_2', '123_4']],
  ])('expands %s', (raw, ids) => {
    expect(expandJobId(raw)).toEqual(ids);
  });
});

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  arrayKey,
  buildArrayArgs,
  expandJobId,
  renderDispatcher,
} from '../../src/compute/slurm/job-arrays.js';
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

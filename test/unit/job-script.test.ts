import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planContainer, type StagedInput } from '../../src/apptainer/container-plan.js';
import { renderJobScript, type ContainerRuntime } from '../../src/apptainer/render-job-script.js';
import type { TaskRequest } from '../../src/tes/types.js';
import { expectGolden } from '../helpers/golden.js';
import { HOSTILE_TASK, TYPICAL_TASK } from '../fixtures/tasks.js';

const WORK = '/var/lib/tes-gateway/tasks/01jd0000000000000000000000';
const APPTAINER: ContainerRuntime = { flavor: 'apptainer', executable: 'apptainer', extraArgs: [] };

function staged(task: TaskRequest): StagedInput[] {
  return (task.inputs ?? []).map((input, index) => ({
    index,
    containerPath: input.path,
    hostPath: input.content !== undefined ? `${WORK}/inputs/${index}/content` : `/shared/input ${index}`,
    kind: input.type === 'DIRECTORY' ? 'dir' : 'file',
  }));
}

function render(task: TaskRequest, runtime = APPTAINER, gpus = false): string {
  const plan = planContainer(task, WORK, staged(task), (i) =>
    i.includes('://') || i.startsWith('/') ? i : `docker://${i}`,
  );
  return renderJobScript({ taskId: '01jd0000000000000000000000', workDir: WORK, runtime, plan, gpus });
}

function checkShell(script: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'job-script-'));
  const file = join(dir, 'job.sh');
  writeFileSync(file, script);
  execFileSync('bash', ['-n', file]);
  const sc = spawnSync('shellcheck', ['--shell=bash', '--severity=style', file], { encoding: 'utf8' });
  if (sc.error)
    throw new Error(`shellcheck is needed for this test (apt-get install shellcheck): ${sc.error.message}`);
  expect(sc.stdout + sc.stderr).toBe('');
  expect(sc.status).toBe(0);
}

const CASES: Array<[string, () => string]> = [
  ['typical.sh', () => render(TYPICAL_TASK)],
  ['hostile.sh', () => render(HOSTILE_TASK)],
  [
    'singularity-gpu.sh',
    () =>
      render(
        TYPICAL_TASK,
        { flavor: 'singularity', executable: '/opt/singularity/bin/singularity', extraArgs: ['--no-home'] },
        true,
      ),
  ],
  ['minimal.sh', () => render({ executors: [{ image: '/images/busybox.sif', command: ['echo', 'hello'] }] })],
];

describe('renderJobScript', () => {
  it.each(CASES)('renders %s as its golden file', (name, make) => {
    expectGolden(`job-script/${name}`, make());
  });

  it.each(CASES)('renders %s as a script that passes bash -n and shellcheck', (_name, make) => {
    checkShell(make());
  });

  it('passes environment values through the runtime prefix of its flavor', () => {
    expect(render(TYPICAL_TASK)).toContain('APPTAINERENV_SAMPLE=NA12878 ');
    expect(
      render(TYPICAL_TASK, { flavor: 'singularity', executable: 'singularity', extraArgs: [] }),
    ).toContain('SINGULARITYENV_SAMPLE=NA12878 ');
  });

  it('stops at a failing executor unless it ignores errors', () => {
    const script = render(TYPICAL_TASK);
    const [first, second] = script.split('# executor 1');
    expect(first).toContain('[ "$rc" -eq 0 ] || exit "$rc"');
    expect(second).not.toContain('|| exit "$rc"');
  });
});

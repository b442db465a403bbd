import {
  buildSbatchArgs,
  ResourceLimitError,
  sanitizeComment,
  timeLimitMinutes,
  type SbatchPolicy,
} from '../../src/compute/slurm/sbatch-args.js';
import type { TaskRequest } from '../../src/tes/types.js';
import { expectGolden } from '../helpers/golden.js';
import { HOSTILE_TASK, TYPICAL_TASK } from '../fixtures/tasks.js';

const POLICY: SbatchPolicy = {
  defaultPartition: 'debug',
  shortPartition: 'short',
  shortMaxMinutes: 60,
  gpuPartition: 'gpu',
  preemptiblePartition: 'scavenger',
  zonePartitions: true,
  limits: { small: { maxCpus: 2, maxMemoryMiB: 1024 } },
  overLimit: 'refuse',
  extraArgs: ['--signal=B:USR1@60'],
};
const W = '/w/01jd0000000000000000000000';
const ID = '01jd0000000000000000000000';

const args = (task: TaskRequest, policy: SbatchPolicy = POLICY) => buildSbatchArgs(ID, task, W, policy);
const one = (image = 'alpine'): TaskRequest['executors'] => [{ image, command: ['true'] }];

describe('buildSbatchArgs', () => {
  it('renders a typical task as its golden argument list', () => {
    expectGolden('sbatch/typical.txt', args(TYPICAL_TASK).args.join('\n') + '\n');
  });

  it('renders every backend parameter as its golden argument list', () => {
    const task: TaskRequest = {
      executors: one(),
      resources: {
        backend_parameters: {
          partition: 'debug',
          account: 'lab',
          qos: 'high',
          time_limit: '2:00:00',
          constraint: 'avx2',
          gpus: '1',
          gres: 'gpu:1',
          nodelist: 'n1',
          exclude: 'n2',
          reservation: 'r1',
        },
      },
    };
    expectGolden('sbatch/backend-parameters.txt', args(task).args.join('\n') + '\n');
  });

  it('keeps hostile task names out of Slurm (job name is the task marker)', () => {
    const a = args(HOSTILE_TASK).args;
    expect(a).toContain(`--job-name=tes_${ID}`);
    expect(a.find((x) => x.startsWith('--comment='))).toMatch(/^--comment=[\w.@+-]+$/);
  });

  it('rounds fractional cores up and gives memory in MiB', () => {
    const a = args({ executors: one(), resources: { cpu_cores: 2.1, ram_gb: 0.5 } }).args;
    expect(a).toContain('--cpus-per-task=3');
    expect(a).toContain('--mem=512M');
  });

  it('exports no environment from the gateway', () => {
    expect(args({ executors: one() }).args).toContain('--export=NONE');
  });

  it.each([
    ['a backend parameter', { backend_parameters: { partition: 'p1' }, zones: ['z'] }, 'p1'],
    ['a zone', { zones: ['zonepart'] }, 'zonepart'],
    ['a GPU request', { backend_parameters: { gpus: '1' } }, 'gpu'],
    ['preemptible', { preemptible: true }, 'scavenger'],
    ['a short time limit', { backend_parameters: { time_limit: '30' } }, 'short'],
    ['a long time limit', { backend_parameters: { time_limit: '2-00:00:00' } }, 'debug'],
    ['nothing special', {}, 'debug'],
  ])('routes %s to its partition', (_what, resources, partition) => {
    expect(args({ executors: one(), resources }).partition).toBe(partition);
  });

  it('refuses resources above a partition limit when so configured, naming the limit', () => {
    const task: TaskRequest = {
      executors: one(),
      resources: { cpu_cores: 4, backend_parameters: { partition: 'small' } },
    };
    expect(() => args(task)).toThrow(ResourceLimitError);
    expect(() => args(task)).toThrow('partition small allows at most 2');
  });

  it('clamps resources above a partition limit with a warning when so configured', () => {
    const task: TaskRequest = {
      executors: one(),
      resources: { ram_gb: 8, backend_parameters: { partition: 'small' } },
    };
    const plan = args(task, { ...POLICY, overLimit: 'clamp' });
    expect(plan.args).toContain('--mem=1024M');
    expect(plan.warnings[0]).toMatch(/clamped to 1024 MiB/);
  });

  it('reads Slurm time limits in minutes', () => {
    expect(timeLimitMinutes('90')).toBe(90);
    expect(timeLimitMinutes('1:30:00')).toBe(90);
    expect(timeLimitMinutes('1-00:00:00')).toBe(1440);
    expect(timeLimitMinutes('10:30')).toBe(10.5);
    expect(timeLimitMinutes('soon')).toBeUndefined();
  });

  it('sanitizes task names for the comment', () => {
    expect(sanitizeComment('wf.task (1)')).toBe('wf.task_1');
  });
});

import {
  buildSbatchArgs,
  needsPartitionDisks,
  planDiskRequest,
  ResourceLimitError,
  sanitizeComment,
  timeLimitMinutes,
  type SbatchPolicy,
} from '../../src/compute/slurm/sbatch-args.js';
import { arrayKey } from '../../src/compute/slurm/job-arrays.js';
import { parseSinfoTmpDisk, type PartitionDisks } from '../../src/compute/slurm/sinfo.js';
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

/** What sinfo says of the partitions here: debug (the default) and short without TmpDisk, big with. */
const DISKS: PartitionDisks = parseSinfoTmpDisk('debug* 0\nshort 0\nbig 0\nbig 20480\nwide 100000\n').disks;

/** `null`: sinfo has not answered. */
const args = (task: TaskRequest, policy: SbatchPolicy = POLICY, disks: PartitionDisks | null = DISKS) =>
  buildSbatchArgs(ID, task, W, policy, disks ?? undefined);
const one = (image = 'alpine'): TaskRequest['executors'] => [{ image, command: ['true'] }];

describe('buildSbatchArgs', () => {
  it('renders a typical task as its golden argument list', () => {
    // Its 10 GiB disk request goes to Slurm: the partition's nodes advertise enough TmpDisk.
    const plan = args(TYPICAL_TASK, POLICY, parseSinfoTmpDisk('debug* 10240\n').disks);
    expect(plan.warnings).toEqual([]);
    expectGolden('sbatch/typical.txt', plan.args.join('\n') + '\n');
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

  it('exports only the clean environment sbatch runs in, and loads a login environment only when asked', () => {
    expect(args({ executors: one() }).args).toContain('--export=ALL');
    expect(args({ executors: one() }, { ...POLICY, loginEnvironment: true }).args).toContain('--export=NONE');
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

  it('sanitizes task names for the comment', () => {
    expect(sanitizeComment('wf.task (1)')).toBe('wf.task_1');
  });
});

describe('disk requests', () => {
  const disk = (disk_gb: number, extra: TaskRequest['resources'] = {}): TaskRequest => ({
    executors: one(),
    resources: { disk_gb, ...extra },
  });
  const tmpOf = (a: string[]) => a.filter((x) => x.startsWith('--tmp='));

  it('drops a request the nodes of the partition cannot satisfy, with a note (auto, the default)', () => {
    const plan = args(disk(2));
    expect(tmpOf(plan.args)).toEqual([]);
    expect(plan.warnings).toEqual([
      'resources.disk_gb: 2 GiB not requested from Slurm: nodes of partition debug advertise 0 MB of TmpDisk',
    ]);
  });

  it('passes a request some node of the partition can satisfy, in MiB, with no note (auto)', () => {
    const plan = args(disk(2, { backend_parameters: { partition: 'big' } }));
    expect(tmpOf(plan.args)).toEqual(['--tmp=2048M']);
    expect(plan.warnings).toEqual([]);
    expect(tmpOf(args(disk(20, { backend_parameters: { partition: 'big' } })).args)).toEqual([
      '--tmp=20480M',
    ]);
  });

  it('names the most TmpDisk of a partition with unlike nodes when even that is too little', () => {
    expect(args(disk(21, { backend_parameters: { partition: 'big' } })).warnings).toEqual([
      'resources.disk_gb: 21 GiB not requested from Slurm: nodes of partition big advertise at most 20480 MB of TmpDisk',
    ]);
  });

  it("judges by Slurm's default partition when the task and the site name none", () => {
    const noDefault = { ...POLICY, defaultPartition: undefined };
    const wide = parseSinfoTmpDisk('debug 0\nwide* 100000\n').disks;
    expect(tmpOf(args(disk(2), noDefault, wide).args)).toEqual(['--tmp=2048M']);
    expect(args(disk(2), noDefault, parseSinfoTmpDisk('debug 0\n').disks).warnings).toEqual([
      'resources.disk_gb: 2 GiB not requested from Slurm: sinfo names no default partition',
    ]);
  });

  it('drops the request while sinfo has not answered, or does not list the partition', () => {
    expect(args(disk(0.5), POLICY, null).warnings).toEqual([
      "resources.disk_gb: 0.5 GiB not requested from Slurm: the partitions' TmpDisk is not known yet (sinfo has not answered)",
    ]);
    expect(args(disk(1.3333, { backend_parameters: { partition: 'nope' } })).warnings).toEqual([
      'resources.disk_gb: 1.33 GiB not requested from Slurm: sinfo lists no partition nope',
    ]);
  });

  it('refuses an unsatisfiable request when the site says so, naming the partition and its TmpDisk', () => {
    const refuse: SbatchPolicy = { ...POLICY, unsatisfiableDisk: 'refuse' };
    expect(() => args(disk(2), refuse)).toThrow(
      new ResourceLimitError(
        'resources.disk_gb: 2 GiB cannot be requested from Slurm: nodes of partition debug advertise 0 MB of TmpDisk',
      ),
    );
    // Satisfiable, or not known: Slurm judges.
    expect(tmpOf(args(disk(2, { backend_parameters: { partition: 'big' } }), refuse).args)).toEqual([
      '--tmp=2048M',
    ]);
    expect(tmpOf(args(disk(2), refuse, null).args)).toEqual(['--tmp=2048M']);
  });

  it('always passes the request in tmp mode, whatever the nodes advertise', () => {
    const plan = args(disk(2), { ...POLICY, diskRequests: 'tmp' });
    expect(tmpOf(plan.args)).toEqual(['--tmp=2048M']);
    expect(plan.warnings).toEqual([]);
  });

  it('never passes the request in ignore mode, and says it was dropped', () => {
    const plan = args(disk(2, { backend_parameters: { partition: 'big' } }), {
      ...POLICY,
      diskRequests: 'ignore',
    });
    expect(tmpOf(plan.args)).toEqual([]);
    expect(plan.warnings).toEqual([
      'resources.disk_gb: 2 GiB not requested from Slurm (slurm.diskRequests is ignore)',
    ]);
  });

  it('says nothing of a task that asks for no disk', () => {
    for (const resources of [{}, { disk_gb: 0 }]) {
      const plan = args({ executors: one(), resources }, POLICY, null);
      expect(tmpOf(plan.args)).toEqual([]);
      expect(plan.warnings).toEqual([]);
    }
    expect(planDiskRequest(undefined, 'debug', POLICY, undefined)).toEqual({});
  });

  it('reads sinfo only for a disk request in auto mode', () => {
    expect(needsPartitionDisks(disk(2), POLICY)).toBe(true);
    expect(needsPartitionDisks(disk(2), { ...POLICY, diskRequests: 'tmp' })).toBe(false);
    expect(needsPartitionDisks(disk(2), { ...POLICY, diskRequests: 'ignore' })).toBe(false);
    expect(needsPartitionDisks({ executors: one() }, POLICY)).toBe(false);
  });

  it('groups tasks into job arrays by their final arguments', () => {
    const key = (task: TaskRequest, disks: PartitionDisks | undefined = DISKS) =>
      arrayKey(buildSbatchArgs(ID, task, W, POLICY, disks).args);
    // A dropped request makes the same job as no request; a passed one makes another.
    expect(key(disk(2))).toBe(key({ executors: one() }));
    expect(key(disk(2), parseSinfoTmpDisk('debug* 4096\n').disks)).not.toBe(key({ executors: one() }));
    expect(key(disk(2), parseSinfoTmpDisk('debug* 4096\n').disks)).not.toBe(
      key(disk(3), parseSinfoTmpDisk('debug* 4096\n').disks),
    );
  });
});

describe('time limits', () => {
  it('reads Slurm time limits in minutes', () => {
    expect(timeLimitMinutes('90')).toBe(90);
    expect(timeLimitMinutes('1:30:00')).toBe(90);
    expect(timeLimitMinutes('1-00:00:00')).toBe(1440);
    expect(timeLimitMinutes('10:30')).toBe(10.5);
    expect(timeLimitMinutes('soon')).toBeUndefined();
  });
});

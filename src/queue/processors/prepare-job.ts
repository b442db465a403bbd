import { planContainer, type LayoutEntry } from '../../apptainer/container-plan.js';
import type { ImageResolver } from '../../apptainer/images.js';
import { renderJobScript, type ContainerRuntime } from '../../apptainer/render-job-script.js';
import { quoteAll } from '../../shell/quote.js';
import type { TaskOwner, TaskRecord } from '../../tes/types.js';
import type { AllowedRoots } from '../../staging/allowed-roots.js';
import { stageInputs, type StagingDeps } from '../../staging/stage-inputs.js';
import { buildSbatchArgs, needsPartitionDisks, type SbatchPolicy } from '../../compute/slurm/sbatch-args.js';
import type { PartitionDisks } from '../../compute/slurm/sinfo.js';
import { makeLayout, makeTaskDir, writePrivateFile } from '../../compute/task-dir.js';
import { executorDir, TASK_FILE, taskDirOf, taskFile } from '../../tes/task-directory.js';

/**
 * Everything between a stored task and a job ready to launch: inputs staged, images resolved, the
 * task directory laid out (private to the gateway's user, without following links), the job script
 * and the exact sbatch command written into it.
 */
export interface PrepareDeps {
  workRoot: string;
  runtime: ContainerRuntime;
  policy: SbatchPolicy;
  /** The partitions' TmpDisk as sinfo last said (Slurm only): decides whether disk_gb becomes --tmp. */
  partitionDisks?: (() => Promise<PartitionDisks | undefined>) | undefined;
  staging: StagingDeps;
  images: ImageResolver;
  /**
   * What the task's owner may use (identity.policy): their allowed roots, in place of the site's, and
   * their default Slurm account. Absent, or for a task without an owner: the site's roots, no account.
   */
  forOwner?: ((owner: TaskOwner | undefined) => OwnerSettings) | undefined;
}

export interface OwnerSettings {
  roots: AllowedRoots;
  defaultAccount?: string | undefined;
}

export interface PreparedJob {
  workDir: string;
  args: string[];
  /** Notes for the task's system logs. */
  warnings: string[];
}

export async function prepareJob(record: TaskRecord, deps: PrepareDeps): Promise<PreparedJob> {
  const task = record.request;
  const workDir = taskDirOf(deps.workRoot, record.id);
  await makeTaskDir(workDir);

  const owner = deps.forOwner?.(record.owner);
  const staging = owner ? { ...deps.staging, roots: owner.roots } : deps.staging;
  const staged = await stageInputs(task.inputs ?? [], workDir, staging);
  const images = new Map<string, string>();
  for (const [i, ex] of task.executors.entries()) {
    if (!images.has(ex.image))
      images.set(ex.image, await deps.images.resolve(ex.image, `executors[${i}].image`));
  }
  const plan = planContainer(task, workDir, staged, (image) => images.get(image) ?? image);
  const execDirs = plan.executors.map((ex): LayoutEntry => ({
    path: executorDir(workDir, ex.index),
    kind: 'dir',
    base: workDir,
  }));
  await makeLayout([...plan.layout, ...execDirs]);

  // Without Slurm (the local launcher ignores sbatch arguments) there is no TmpDisk to judge a disk
  // request by, and nothing to note about it.
  const policy: SbatchPolicy = {
    ...deps.policy,
    ...(deps.partitionDisks ? {} : { diskRequests: 'tmp' as const }),
    ...(owner?.defaultAccount ? { defaultAccount: owner.defaultAccount } : {}),
  };
  const disks = needsPartitionDisks(task, policy) ? await deps.partitionDisks?.() : undefined;
  const sbatch = buildSbatchArgs(record.id, task, workDir, policy, disks);
  const script = renderJobScript({
    taskId: record.id,
    workDir,
    runtime: deps.runtime,
    plan,
    gpus: sbatch.gpus,
  });
  await writePrivateFile(taskFile(workDir, TASK_FILE.jobScript), script, 0o700);
  await writePrivateFile(taskFile(workDir, TASK_FILE.sbatchCommand), `sbatch ${quoteAll(sbatch.args)}\n`);

  const warnings = [...sbatch.warnings];
  if (deps.runtime.flavor === 'bwrap-host') {
    warnings.push(
      `container images ignored (${[...images.keys()].join(', ')}): the bwrap-host runtime runs executors ` +
        `over the gateway host's own filesystem, read-only; configure container.runtime apptainer for real images`,
    );
  }
  return { workDir, args: sbatch.args, warnings };
}

import { lstat, mkdir, rm } from 'node:fs/promises';
import { posix } from 'node:path';
import { planContainer } from '../../apptainer/container-plan.js';
import type { ImageResolver } from '../../apptainer/images.js';
import { renderJobScript, type ContainerRuntime } from '../../apptainer/render-job-script.js';
import type { TaskOwner, TaskRecord } from '../../tes/types.js';
import type { AllowedRoots } from '../../staging/allowed-roots.js';
import { stageInputs, type StagingDeps } from '../../staging/stage-inputs.js';
import {
  buildSbatchArgs,
  needsPartitionDisks,
  renderSbatchCommand,
  type SbatchPolicy,
} from '../../compute/slurm/sbatch-args.js';
import type { PartitionDisks } from '../../compute/slurm/sinfo.js';
import { layoutEntries, makeLayout, makeTaskDir, writePrivateFile } from '../../compute/task-dir.js';
import type { Handover } from '../../compute/driver.js';
import type { HandoverEntry } from '../../run-as/handover-archive.js';
import {
  endMarkerOf,
  LEDGER_PART,
  ledgerDirOf,
  TASK_FILE,
  taskDirOf,
  taskFile,
  type TaskFile,
} from '../../tes/task-directory.js';
import { PermanentError } from '../../errors.js';
import type { UserHelper } from '../../run-as/user-helper.js';

/** `path` with its prefix `from` replaced by `to`; a path elsewhere is left as it is. */
function movedUnder(path: string, from: string, to: string): string {
  return isBelow(path, from) ? posix.join(to, posix.relative(from, path)) : path;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined))?.isDirectory() ?? false;
}

function isBelow(path: string, dir: string): boolean {
  return path === dir || path.startsWith(`${dir}/`);
}

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
  /** Set when tasks run as their owners: the task directory is theirs, made through the helper. */
  runAs?: RunAsOwners | undefined;
}

/** Tasks run as their owners (identity.runAs user), through the helper. */
export interface RunAsOwners {
  helper: UserHelper;
}

export interface OwnerSettings {
  roots: AllowedRoots;
  defaultAccount?: string | undefined;
}

export interface PreparedJob {
  workDir: string;
  /** Where the gateway keeps its own files of the task (its ledger; the task directory in service mode). */
  ledgerDir: string;
  /** The task's owner, whose job it is, when tasks run as their owners. */
  user?: string | undefined;
  /** Then: the task directory, for the helper to make from it (run-as/handover-archive.ts). */
  handover?: Handover | undefined;
  args: string[];
  /** Notes for the task's system logs. */
  warnings: string[];
}

/**
 * The Unix user a task runs as when tasks run as their owners. A task without an owner (made before
 * authentication was on) cannot run so.
 */
export function runAsUser(record: Pick<TaskRecord, 'id' | 'owner'>): string {
  const user = record.owner?.user;
  if (!user) {
    throw new PermanentError(
      `task ${record.id} has no owner, and tasks run as their owners (identity.runAs user); ` +
        'create it again with authentication on',
    );
  }
  return user;
}

/** Where the gateway keeps its own files of a task (tes/task-directory.ts). */
export function ledgerOf(deps: Pick<PrepareDeps, 'workRoot' | 'runAs'>, taskId: string): string {
  return ledgerDirOf(deps.workRoot, taskId, deps.runAs ? 'user' : 'service');
}

export async function prepareJob(record: TaskRecord, deps: PrepareDeps): Promise<PreparedJob> {
  const task = record.request;
  const workDir = taskDirOf(deps.workRoot, record.id);
  const user = deps.runAs ? runAsUser(record) : undefined;
  // Run as its owner, the task directory is theirs, made by the helper from an archive
  // (run-as/handover-archive.ts): what the gateway renders and lays out goes into it from memory,
  // and what staging writes (content, downloads) from the task's stage in the gateway's ledger, where
  // every path it holds names the task directory.
  const stage = user ? posix.join(ledgerDirOf(deps.workRoot, record.id, 'user'), LEDGER_PART.stage) : workDir;
  // A task directory made just now needs no look before the layout goes into it (a stage, made by
  // staging, does).
  const made: string[] = [];
  if (user) {
    await rm(stage, { recursive: true, force: true });
    await mkdir(posix.dirname(stage), { recursive: true, mode: 0o700 });
  } else if (await makeTaskDir(workDir)) {
    made.push(workDir);
  }
  const there = (path: string): string => movedUnder(path, workDir, stage);

  const owner = deps.forOwner?.(record.owner);
  const staging = {
    ...deps.staging,
    ...(owner ? { roots: owner.roots } : {}),
    ...(user ? { asOwner: true } : {}),
  };
  const staged = (await stageInputs(task.inputs ?? [], stage, staging)).map((input) => ({
    ...input,
    hostPath: movedUnder(input.hostPath, stage, workDir),
  }));
  // Staging makes the stage when it writes something there.
  const onDisk = !user || (await isDirectory(stage));
  if (user && onDisk) await makeTaskDir(stage);
  const images = new Map<string, string>();
  for (const [i, ex] of task.executors.entries()) {
    if (!images.has(ex.image))
      images.set(ex.image, await deps.images.resolve(ex.image, `executors[${i}].image`));
  }
  const plan = planContainer(task, workDir, staged, (image) => images.get(image) ?? image);
  const warnings: string[] = [];
  // The job script makes the executors' folders and the container's /tmp and /var/tmp itself.
  const layout = plan.layout.filter((entry) => {
    if (!user || isBelow(entry.base, workDir)) return true;
    // A mount point inside a folder named by path: the owner's folder, which the gateway does not write.
    warnings.push(
      `${entry.path} is a mount point inside ${entry.base}, a folder named by path; tasks run as their ` +
        'owners, so the gateway does not make it there: it must exist already',
    );
    return false;
  });
  // Without a stage, nothing below the task directory exists yet: only staged inputs are bases there.
  const entries: HandoverEntry[] = onDisk ? [] : layoutEntries(layout, workDir);
  if (onDisk) {
    await makeLayout(
      layout.map((e) => ({ ...e, path: there(e.path), base: there(e.base) })),
      made,
    );
  }
  const put = async (name: TaskFile, text: string, mode = 0o600): Promise<void> => {
    if (user) entries.push({ kind: 'file', path: name, content: text, mode });
    else await writePrivateFile(taskFile(workDir, name), text, mode);
  };

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
    loginEnvironment: policy.loginEnvironment,
    // A job run as its owner may not write in the gateway's folders: the reconciler finds its end by
    // polling alone.
    endMarker: user ? undefined : endMarkerOf(deps.workRoot, record.id),
  });
  await put(TASK_FILE.jobScript, script, 0o700);
  if (user) {
    // What the helper's `submit` checks option by option, then runs. The launcher hands the task
    // directory to the helper's `prepare` together with the other tasks of its burst (one call for all).
    await put(TASK_FILE.sbatchArgs, sbatch.args.map((a) => `${a}\0`).join(''));
    // The directory is the owner's, made by the helper from these entries: the command, for people,
    // goes with them. A task run as the service account gets it from the Slurm driver, only when it
    // is submitted alone (an array's command is the array's, in `.arrays/`).
    await put(TASK_FILE.sbatchCommand, renderSbatchCommand(sbatch.args));
  }

  warnings.push(...sbatch.warnings);
  if (deps.runtime.flavor === 'bwrap-host') {
    warnings.push(
      `container images ignored (${[...images.keys()].join(', ')}): the bwrap-host runtime runs executors ` +
        `over the gateway host's own filesystem, read-only; configure container.runtime apptainer for real images`,
    );
  }
  return {
    workDir,
    ledgerDir: ledgerOf(deps, record.id),
    ...(user ? { user, handover: { entries, ...(onDisk ? { stageDir: stage } : {}) } } : {}),
    args: sbatch.args,
    warnings,
  };
}

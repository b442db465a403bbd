import {
  readExecutorResults,
  readSystemError,
  readTail,
  shareLogBytes,
  sizeOf,
} from '../../compute/executor-results.js';
import { decideEndState, effectiveExitCode, withScriptError, type JobStatus } from '../../compute/job-end.js';
import { isTerminal } from '../../tes/state.js';
import { posix } from 'node:path';
import { EXECUTOR_FILE, executorDirName, taskDirOf } from '../../tes/task-directory.js';
import { deliverAsOwner, resultsAsOwner, type FinishAsOwner } from '../../run-as/finish-as-owner.js';
import { ledgerOf, runAsUser } from './prepare-job.js';
import { withLog, withSystemLogs } from '../../tes/task-logs.js';
import type { TesExecutorLog } from '../../tes/types.js';
import type { Batcher } from '../../compute/batcher.js';
import type { DeliveryResult } from '../../staging/deliver-outputs.js';
import type { ProcessorContext } from './context.js';
import { underLease } from './held-lease.js';
import { HelperRefusedError } from '../../run-as/user-helper.js';

/**
 * Closes a task whose job ended, once: reads the executors' result files, delivers outputs, writes
 * executor logs, times and job metadata, then the terminal state, all in one atomic change. A cancel
 * requested before the end wins (CANCELED). A `system-error` the job script left (a path it refused,
 * a runtime it could not find) makes the task SYSTEM_ERROR whatever the executors did.
 */
export async function processFinalize(
  taskId: string,
  status: JobStatus,
  ctx: ProcessorContext,
  peaks?: PeakMemory,
): Promise<void> {
  // One finalization of a task at a time: a second one (a queue job run again after a stall) waits,
  // then finds the task terminal, instead of delivering its outputs over the first one's.
  await underLease(ctx.taskLease?.('finalize', taskId), taskId, 'finalization', ctx.logger, () =>
    finalize(taskId, status, ctx, peaks).catch((err: unknown) => {
      if (err instanceof HelperRefusedError) return endRefused(taskId, status, err, ctx);
      throw err;
    }),
  );
}

/**
 * The helper refused to read a task's results as its owner (the task directory is no longer theirs,
 * or the owner no longer passes its checks): no retry can change that, so the task ends with the
 * reason instead of staying active. What the job left stays where it is.
 */
async function endRefused(
  taskId: string,
  status: JobStatus,
  err: HelperRefusedError,
  ctx: ProcessorContext,
): Promise<void> {
  ctx.logger.warn({ taskId, jobId: status.jobId, err }, 'results refused by the helper');
  // Twice at most, like finalize: a cancel that came in meanwhile makes it CANCELED.
  for (let round = 0; round < 2; round++) {
    const record = await ctx.store.get(taskId);
    if (!record || isTerminal(record.state)) return;
    const canceling = record.state === 'CANCELING';
    const workDir = record.run?.workDir ?? taskDirOf(ctx.prepare.workRoot, taskId);
    const metadata = {
      ...(record.logs?.[0]?.metadata ?? {}),
      backend: ctx.driver.kind,
      job_id: status.jobId,
    };
    const logs = withSystemLogs(withLog(record.logs, { metadata }), [
      `job ${status.jobId} ended (${status.rawState}), but its results could not be read as the task's owner: ` +
        `${err.message}. Nothing of the job was collected or delivered; what it left is in ${workDir}`,
    ]);
    const t = await ctx.store.transition(taskId, canceling ? 'CANCELED' : 'SYSTEM_ERROR', {
      from: canceling ? ['CANCELING'] : ['QUEUED', 'INITIALIZING', 'RUNNING'],
      logs,
    });
    if (t.outcome === 'ok' || t.outcome === 'same') return;
  }
}

async function finalize(
  taskId: string,
  status: JobStatus,
  ctx: ProcessorContext,
  peaks: PeakMemory | undefined,
): Promise<void> {
  const { store } = ctx;
  for (let round = 0; round < 2; round++) {
    const record = await store.get(taskId);
    if (!record || isTerminal(record.state)) return;
    const workDir = record.run?.workDir ?? taskDirOf(ctx.prepare.workRoot, taskId);
    const canceling = record.state === 'CANCELING';
    const executors = record.request.executors;
    const outputsToSend = record.request.outputs ?? [];
    // Run as its owner, the task directory is theirs: the results come from the helper, into the
    // gateway's ledger, laid out as the task directory (run-as/finish-as-owner.ts).
    const user = ctx.prepare.runAs ? runAsUser(record) : undefined;
    const asOwner: FinishAsOwner | undefined = user
      ? {
          helper: ctx.prepare.runAs!.helper,
          user,
          taskDir: workDir,
          ledgerDir: ledgerOf(ctx.prepare, taskId),
          tailBytes: ctx.tailBytes,
        }
      : undefined;
    let owned = asOwner && (await resultsAsOwner(asOwner));
    let resultsDir = owned?.dir ?? workDir;
    const ignoreErrors = executors.map((e) => e.ignore_error === true);
    let results = await readExecutorResults(resultsDir, ignoreErrors);

    let outputs: DeliveryResult = { files: [], errors: [], notes: [] };
    const delivering = !canceling && results.some((r) => r.started) && outputsToSend.length > 0;
    if (delivering) {
      const roots = ctx.prepare.forOwner?.(record.owner).roots;
      if (asOwner) {
        const owners = roots ?? ctx.prepare.staging.roots;
        const sent = await deliverAsOwner(asOwner, outputsToSend, owners, ctx.outputs);
        outputs = sent.delivery;
        owned = sent;
        resultsDir = sent.dir;
        results = await readExecutorResults(resultsDir, ignoreErrors);
      } else {
        outputs = await ctx.outputs.deliver(outputsToSend, workDir, roots);
      }
    }
    const decision = withScriptError(
      decideEndState(status, results, canceling, ctx.endStates),
      await readSystemError(resultsDir),
      canceling,
    );
    const systemLogs = decision.systemLogs;
    let state = decision.state;
    if (delivering) {
      systemLogs.push(...outputs.errors, ...outputs.notes);
      if (outputs.errors.length > 0 && state === 'COMPLETE') state = 'SYSTEM_ERROR';
    }

    // stdout and stderr of each executor that started, in turn, sharing the task's log budget.
    const started = results.filter((r) => r.started);
    const names = started.flatMap((r) =>
      [EXECUTOR_FILE.stdout, EXECUTOR_FILE.stderr].map((s) => posix.join(executorDirName(r.index), s)),
    );
    const streams = names.map((name) => posix.join(resultsDir, name));
    const sizes = await Promise.all(streams.map(sizeOf));
    const wholeSizes = names.map((name, i) => owned?.fullSizes.get(name) ?? sizes[i]!);
    const keep = shareLogBytes(wholeSizes, ctx.tailBytes, ctx.taskLogMaxBytes);
    const execLogs: TesExecutorLog[] = [];
    for (const [k, r] of started.entries()) {
      const log: TesExecutorLog = {
        // An executor killed with its job (OOM, time limit, cancel) has no exit code of its own.
        exit_code: r.exitCode ?? effectiveExitCode(status.exitCode),
        stdout: await readTail(streams[2 * k]!, keep[2 * k]!),
        stderr: await readTail(streams[2 * k + 1]!, keep[2 * k + 1]!),
      };
      if (r.startTime) log.start_time = r.startTime;
      const end = r.endTime ?? (status.endTime ? new Date(status.endTime * 1000).toISOString() : undefined);
      if (end) log.end_time = end;
      execLogs.push(log);
    }
    const metadata: Record<string, string> = {
      backend: ctx.driver.kind,
      job_id: status.jobId,
      job_state: status.rawState,
    };
    if (status.node) metadata.node = status.node;
    if (status.elapsedSeconds !== undefined) metadata.elapsed_seconds = String(status.elapsedSeconds);
    if (status.cpuTimeSeconds !== undefined) metadata.cpu_time_seconds = String(status.cpuTimeSeconds);
    if (status.maxRssBytes !== undefined) metadata.max_rss_bytes = String(status.maxRssBytes);
    const start = results.find((r) => r.startTime)?.startTime ?? toIso(status.startTime);
    const end = toIso(status.endTime) ?? [...results].reverse().find((r) => r.endTime)?.endTime;
    let logs = withLog(record.logs, {
      logs: execLogs,
      outputs: outputs.files,
      metadata: { ...(record.logs?.[0]?.metadata ?? {}), ...metadata },
      ...(start ? { start_time: start } : {}),
      ...(end ? { end_time: end } : {}),
    });
    logs = withSystemLogs(logs, systemLogs);
    const t = await store.transition(taskId, state, {
      from: canceling ? ['CANCELING'] : ['QUEUED', 'INITIALIZING', 'RUNNING'],
      logs,
    });
    if (t.outcome === 'ok' || t.outcome === 'same') {
      if (t.outcome === 'ok' && status.endTime) ctx.metrics?.taskEnded(Date.now() / 1000 - status.endTime);
      ctx.logger.info({ taskId, state, jobId: status.jobId }, 'task finished');
      peaks?.lookUp(taskId, status);
      return;
    }
    // A cancel came in while this ran: decide again, as cancelled.
  }
}

function toIso(epochSeconds: number | undefined): string | undefined {
  return epochSeconds ? new Date(epochSeconds * 1000).toISOString() : undefined;
}

/**
 * Peak memory lives on the job's step rows, which accounting may fill in a little later. It is looked
 * up after the terminal state is written, in the background: clients are not kept waiting for it, nor
 * are the finalizations behind it, since a lookup waits for the others of its window (one sacct for
 * all jobs that ended together). A job that never started (cancelled while pending) has no steps and
 * is not looked up. `settle` waits for the lookups under way, before the process stops.
 */
export class PeakMemory {
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly ctx: Pick<ProcessorContext, 'store' | 'logger'>,
    private readonly usage: Batcher<string, number>,
  ) {}

  lookUp(taskId: string, status: JobStatus): void {
    if (status.maxRssBytes !== undefined || status.startTime === undefined) return;
    const lookup = this.record(taskId, status.jobId).finally(() => this.pending.delete(lookup));
    this.pending.add(lookup);
  }

  async settle(): Promise<void> {
    while (this.pending.size > 0) {
      this.usage.flushNow();
      await Promise.all(this.pending);
    }
  }

  private async record(taskId: string, jobId: string): Promise<void> {
    const { store, logger } = this.ctx;
    try {
      const bytes = await this.usage.request(jobId);
      if (bytes === undefined) return;
      const record = await store.get(taskId);
      if (!record?.logs?.[0]) return;
      const metadata = { ...(record.logs[0].metadata ?? {}), max_rss_bytes: String(bytes) };
      await store.setLogs(taskId, withLog(record.logs, { metadata }));
    } catch (err) {
      logger.warn({ err, taskId, jobId }, 'job memory usage unavailable');
    }
  }
}

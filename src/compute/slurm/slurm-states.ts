import { meaningfulReason, parseSlurmState, phaseOf, type JobStatus } from '../job-end.js';
import { expandJobId } from './job-arrays.js';

/**
 * What Slurm alone needs before a job's state goes through the table in ../job-end.ts: a PREEMPTED
 * job in accounting may be requeued already, which only the controller (squeue) knows.
 */

/** squeue's view of given jobs, one `id|STATE|reason` line each (`--jobs=` is added per call). */
export const SQUEUE_STATE_ARGS: readonly string[] = ['--noheader', '--states=all', '--format=%i|%T|%r'];

/**
 * Jobs accounting shows PREEMPTED, as the controller (squeue, SQUEUE_STATE_ARGS) now shows them:
 * a job preempted and requeued stays PREEMPTED in accounting for a few seconds while the controller
 * already has it completing, then pending again. Returned are the jobs that are not over: those the
 * controller holds waiting (the reconciler then requeues their tasks) or still completing (undecided:
 * the task stays where it is). A job the controller shows PREEMPTED, or no longer lists, is
 * preempted for good and keeps its accounting record.
 */
export function confirmPreempted(preempted: readonly JobStatus[], squeueText: string): JobStatus[] {
  const byId = new Map(preempted.map((s) => [s.jobId, s]));
  const out: JobStatus[] = [];
  for (const line of squeueText.split('\n')) {
    const [id, raw, reason] = line.trim().split('|');
    if (!id || !raw) continue;
    const state = parseSlurmState(raw);
    if (!state || phaseOf(state) === 'ended') continue;
    for (const jobId of expandJobId(id)) {
      const earlier = byId.get(jobId);
      if (!earlier) continue;
      const why = meaningfulReason(reason);
      out.push({
        jobId,
        state,
        rawState: raw.trim(),
        exitCode: earlier.exitCode,
        reason: why ? `preempted, ${why}` : 'preempted',
      });
    }
  }
  return out;
}

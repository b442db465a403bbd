import { expandJobId } from './job-arrays.js';

/**
 * The `squeue` look-ups of the Slurm driver and their parsers, side by side. The controller knows a
 * job from its submission until MinJobAge after its end; sacct.ts asks accounting, which remembers
 * longer. (The state query for preempted jobs lives in slurm-states.ts.)
 */

/**
 * Every job of `user`, in any state, with this name: one line per job or array element, `%F` its
 * array's id. Without `--user` squeue lists every user's jobs, and another user's job may carry the
 * name.
 */
export function buildSqueueLookupArgs(name: string, user: string): string[] {
  return ['-h', '-t', 'all', `--user=${user}`, `--name=${name}`, '-o', '%F'];
}

/** The first job id squeue listed (an array's own id, as `%F` gives), if any. */
export function parseSqueueLookup(text: string): string | undefined {
  for (const line of text.split('\n')) {
    const id = line.trim();
    if (/^\d+(_\d+)?$/.test(id)) return id;
  }
  return undefined;
}

/** The ids the controller still holds among these: `%i` names array elements (`12_3`). */
export function buildSqueueKnownArgs(jobIds: readonly string[]): string[] {
  return ['-h', '-t', 'all', `--jobs=${jobIds.join(',')}`, '-o', '%i'];
}

/** One id per line; the pending elements of an array come collapsed (`12_[3-9]`) and are expanded. */
export function parseSqueueKnown(text: string): Set<string> {
  return new Set(
    text
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .flatMap(expandJobId),
  );
}

/** What squeue says (exit 1) when none of the ids it was given is known any more. */
export const SQUEUE_NO_SUCH_JOB = /invalid job id/i;

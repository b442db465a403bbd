import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildSqueueKnownArgs,
  buildSqueueLookupArgs,
  parseSqueueKnown,
  parseSqueueLookup,
  SQUEUE_NO_SUCH_JOB,
} from '../../src/compute/slurm/squeue.js';

/** Output of the real squeue (Slurm 22.05) for one job 5066, an array 5067 of 4, and a held array 5071 of 6. */
const fixture = (name: string): string =>
  readFileSync(join(process.cwd(), 'test', 'fixtures', 'slurm', name), 'utf8');

describe('squeue look-up by name', () => {
  it("asks for the submitting user's jobs in every state and the array id of each row", () => {
    expect(buildSqueueLookupArgs('tes_01J', 'tes')).toEqual([
      '-h',
      '-t',
      'all',
      '--user=tes',
      '--name=tes_01J',
      '-o',
      '%F',
    ]);
  });

  it('reads a single job id', () => {
    expect(parseSqueueLookup(fixture('squeue-lookup-one.txt'))).toBe('5066');
  });

  it("reads an array's own id from the rows of its elements, running or held", () => {
    expect(parseSqueueLookup(fixture('squeue-lookup-array.txt'))).toBe('5067');
    expect(parseSqueueLookup(fixture('squeue-lookup-held-array.txt'))).toBe('5071');
  });

  it('finds nothing when the controller lists nothing, and skips lines that are not ids', () => {
    expect(parseSqueueLookup(fixture('squeue-lookup-none.txt'))).toBeUndefined();
    expect(parseSqueueLookup('slurm_load_jobs: warning\n  42  \n')).toBe('42');
  });
});

describe('squeue known jobs', () => {
  it('asks for the given ids in every state, with element ids', () => {
    expect(buildSqueueKnownArgs(['1', '2_3'])).toEqual(['-h', '-t', 'all', '--jobs=1,2_3', '-o', '%i']);
  });

  it('reads each id and expands the collapsed pending elements of an array', () => {
    expect(parseSqueueKnown(fixture('squeue-known.txt'))).toEqual(
      new Set([
        '5066',
        '5067_0',
        '5067_1',
        '5067_2',
        '5067_3',
        ...[0, 1, 2, 3, 4, 5].map((i) => `5071_${i}`),
      ]),
    );
  });

  it('reads an empty answer as no jobs', () => {
    expect(parseSqueueKnown('\n')).toEqual(new Set());
  });

  it("recognises squeue's answer for ids it no longer holds", () => {
    expect(SQUEUE_NO_SUCH_JOB.test('slurm_load_jobs error: Invalid job id specified')).toBe(true);
    expect(SQUEUE_NO_SUCH_JOB.test('slurm_load_jobs error: Unable to contact slurm controller')).toBe(false);
  });
});

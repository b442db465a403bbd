import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildSacctArgs,
  buildSacctLookupArgs,
  parseDuration,
  parseSacct,
  parseSacctLookup,
  parseSacctUsage,
} from '../../src/compute/slurm/sacct.js';
import {
  effectiveExitCode,
  meaningfulReason,
  parseExitCode,
  parseSlurmState,
} from '../../src/compute/job-end.js';

const TEXT = [
  '1|tes_a|COMPLETED|0:0|None|vm|5|1700000000|1700000005|00:01.250',
  '2|tes_b|FAILED|3:0|NonZeroExitCode|vm|1|1700000000|1700000001|00:00.010',
  '3|tes_c|OUT_OF_MEMORY|0:125|OutOfMemory|vm|2|1700000000|1700000002|00:01:02',
  '4|tes_d|CANCELLED by 0|0:15|None|vm|3|1700000000|1700000003|00:00:00',
  '5|tes_e|PENDING|0:0|Resources|None assigned|0|Unknown|Unknown|00:00:00',
  '6|garbled line',
  '7|tes_f|WEIRD|0:0|None|vm|0|0|0|00:00:00',
  '8.batch|batch|COMPLETED|0:0|None|vm|1|1|1|00:00:00',
].join('\n');

describe('parseSacct', () => {
  const { jobs, errors } = parseSacct(TEXT);

  it('reads each job record', () => {
    expect(jobs.get('1')).toEqual({
      jobId: '1',
      jobName: 'tes_a',
      state: 'COMPLETED',
      rawState: 'COMPLETED',
      exitCode: { code: 0, signal: 0 },
      node: 'vm',
      elapsedSeconds: 5,
      startTime: 1700000000,
      endTime: 1700000005,
      cpuTimeSeconds: 1.25,
    });
    expect(jobs.get('3')).toMatchObject({
      state: 'OUT_OF_MEMORY',
      exitCode: { code: 0, signal: 125 },
      cpuTimeSeconds: 62,
    });
    expect(jobs.get('5')).toMatchObject({ state: 'PENDING', reason: 'Resources' });
    expect(jobs.get('5')?.node).toBeUndefined();
  });

  it("keeps Slurm's reason only where it gives one", () => {
    expect(jobs.get('1')?.reason).toBeUndefined();
    expect(jobs.get('2')?.reason).toBe('NonZeroExitCode');
    expect(
      parseSacct('9|x|PENDING|0:0|(null)|None assigned|0|Unknown|Unknown|00:00:00').jobs.get('9')?.reason,
    ).toBeUndefined();
    expect([undefined, '', ' ', 'None', '(null)'].map(meaningfulReason)).toEqual(Array(5).fill(undefined));
    expect(meaningfulReason(' JobHeldUser ')).toBe('JobHeldUser');
  });

  it("leaves out a job whose row still has accounting's placeholder name, as not recorded yet", () => {
    const parsed = parseSacct('1613|allocation|PENDING|0:0|None|vm|1|1796048952|Unknown|00:00:00\n');
    expect(parsed.jobs.size).toBe(0);
    expect(parsed.errors).toEqual([]);
  });

  it('matches states by prefix and keeps the raw text', () => {
    expect(jobs.get('4')).toMatchObject({ state: 'CANCELLED', rawState: 'CANCELLED by 0' });
  });

  it('fails only the bad records and skips step rows', () => {
    expect(errors).toHaveLength(2);
    expect(jobs.has('6')).toBe(false);
    expect(jobs.has('7')).toBe(false);
    expect(jobs.has('8.batch')).toBe(false);
    expect(jobs.size).toBe(5);
  });

  it('asks for one allocation row per job', () => {
    expect(buildSacctArgs(['1', '2_3'])).toEqual([
      '--allusers',
      '--parsable2',
      '--noheader',
      '-X',
      '--format=JobID,JobName,State,ExitCode,Reason,NodeList,ElapsedRaw,Start,End,TotalCPU',
      '--jobs=1,2_3',
    ]);
  });
});

describe('exit codes and states', () => {
  it('turns a signal into 128 + signal', () => {
    expect(effectiveExitCode(parseExitCode('0:9'))).toBe(137);
    expect(effectiveExitCode(parseExitCode('3:0'))).toBe(3);
  });

  it('parses states with suffixes', () => {
    expect(parseSlurmState('CANCELLED by 1000')).toBe('CANCELLED');
    expect(parseSlurmState('COMPLETED+')).toBe('COMPLETED');
    expect(parseSlurmState('NOPE')).toBeUndefined();
  });

  it('reads MaxRSS from step rows in bytes', () => {
    expect(parseSacctUsage('10|\n10.batch|52428800\n10.extern|1024\n11.batch|2.5M\n')).toEqual(
      new Map([
        ['10', 52428800],
        ['11', 2621440],
      ]),
    );
  });

  it('reads durations', () => {
    expect(parseDuration('1-02:03:04')).toBe(93784);
    expect(parseDuration('02:03.500')).toBe(123.5);
  });
});

describe('sacct look-up by name', () => {
  /** Output of the real sacct (Slurm 22.05) for one job 5066 and an array 5067 of 4 elements. */
  const fixture = (name: string): string =>
    readFileSync(join(process.cwd(), 'test', 'fixtures', 'slurm', name), 'utf8');

  it("asks accounting for the submitting user's jobs of that name started within the window, one row each", () => {
    expect(buildSacctLookupArgs('tes_01J', 7, 'tes')).toEqual([
      '-n',
      '-X',
      '-P',
      '-S',
      'now-7minutes',
      '--user=tes',
      '--name=tes_01J',
      '--format=JobIDRaw,JobID',
    ]);
  });

  it('reads a single job id', () => {
    expect(parseSacctLookup(fixture('sacct-lookup-one.txt'))).toBe('5066');
  });

  it("reads an array's own id, not an element's raw id", () => {
    expect(parseSacctLookup(fixture('sacct-lookup-array.txt'))).toBe('5067');
  });

  it('finds nothing in empty output or rows without a job id', () => {
    expect(parseSacctLookup('')).toBeUndefined();
    expect(parseSacctLookup('garbled\n|\n')).toBeUndefined();
  });
});

import { phaseOf, type JobStatus } from '../../src/compute/job-end.js';
import { confirmPreempted, SQUEUE_STATE_ARGS } from '../../src/compute/slurm/slurm-states.js';

const preempted = (jobId: string): JobStatus => ({
  jobId,
  state: 'PREEMPTED',
  rawState: 'PREEMPTED',
  exitCode: { code: 0, signal: 15 },
});

describe('a PREEMPTED job, as the controller shows it', () => {
  it('asks squeue for the state and pending reason of every job it names', () => {
    expect(SQUEUE_STATE_ARGS).toEqual(['--noheader', '--states=all', '--format=%i|%T|%r']);
  });

  it('is requeued (waiting) when the controller holds it pending again, with the reason', () => {
    const back = confirmPreempted([preempted('42')], '42|PENDING|BeginTime\n');
    expect(back).toEqual([
      {
        jobId: '42',
        state: 'PENDING',
        rawState: 'PENDING',
        exitCode: { code: 0, signal: 15 },
        reason: 'preempted, BeginTime',
      },
    ]);
    expect(phaseOf(back[0]!.state)).toBe('waiting');
  });

  it.each(['REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED'])(
    'is requeued when the controller shows it %s',
    (state) => {
      const back = confirmPreempted([preempted('42')], `42|${state}|None\n`);
      expect(back).toMatchObject([{ jobId: '42', state, reason: 'preempted' }]);
      expect(phaseOf(back[0]!.state)).toBe('waiting');
    },
  );

  it('is not decided while the controller still completes it', () => {
    const back = confirmPreempted([preempted('42')], '42|COMPLETING|None\n');
    expect(back.map((s) => phaseOf(s.state))).toEqual(['started']);
  });

  it('is preempted for good when the controller shows it PREEMPTED or no longer lists it', () => {
    expect(confirmPreempted([preempted('42'), preempted('43')], '42|PREEMPTED|None\n')).toEqual([]);
    expect(confirmPreempted([preempted('42')], '')).toEqual([]);
  });

  it('matches array elements by their own ids and ignores jobs it was not asked about', () => {
    const back = confirmPreempted(
      [preempted('7_3')],
      '7_3|PENDING|Priority\n7_4|PENDING|Priority\n99|PENDING|None\n',
    );
    expect(back.map((s) => s.jobId)).toEqual(['7_3']);
  });
});

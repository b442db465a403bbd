import { SLURM_STATES, type JobStatus, type SlurmState } from '../../src/compute/job-status.js';
import type { ExecutorResult } from '../../src/compute/executor-results.js';
import {
  confirmPreempted,
  decideEndState,
  phaseOf,
  SLURM_STATE_TABLE,
  SQUEUE_STATE_ARGS,
} from '../../src/compute/slurm/slurm-states.js';

const status = (state: SlurmState, rawState: string = state, code = 0, signal = 0): JobStatus => ({
  jobId: '42',
  state,
  rawState,
  exitCode: { code, signal },
});
const ok: ExecutorResult[] = [{ index: 0, started: true, exitCode: 0, ignored: false }];
const failed3: ExecutorResult[] = [{ index: 0, started: true, exitCode: 3, ignored: false }];
const notStarted: ExecutorResult[] = [{ index: 0, started: false, ignored: false }];

describe('the Slurm state table', () => {
  it('has a row for every Slurm state', () => {
    expect(Object.keys(SLURM_STATE_TABLE).sort()).toEqual([...SLURM_STATES].sort());
  });

  it.each(['PENDING', 'REQUEUED', 'REQUEUE_FED', 'REQUEUE_HOLD', 'RESV_DEL_HOLD', 'SPECIAL_EXIT'] as const)(
    'keeps a %s job waiting (QUEUED)',
    (s) => expect(phaseOf(s)).toBe('waiting'),
  );

  it.each([
    'CONFIGURING',
    'RUNNING',
    'COMPLETING',
    'SUSPENDED',
    'STOPPED',
    'SIGNALING',
    'STAGE_OUT',
    'RESIZING',
  ] as const)('treats a %s job as started (INITIALIZING or RUNNING)', (s) =>
    expect(phaseOf(s)).toBe('started'),
  );

  it('maps COMPLETED with every executor at 0 to COMPLETE', () => {
    expect(decideEndState(status('COMPLETED'), ok, false).state).toBe('COMPLETE');
  });

  it('maps COMPLETED with a non-zero executor to EXECUTOR_ERROR', () => {
    const results: ExecutorResult[] = [{ index: 0, started: true, exitCode: 1, ignored: false }];
    expect(decideEndState(status('COMPLETED'), results, false)).toEqual({
      state: 'EXECUTOR_ERROR',
      systemLogs: ['executor 0 exited 1'],
    });
  });

  it('maps COMPLETED with an ignored failure to COMPLETE and notes it', () => {
    const results: ExecutorResult[] = [
      { index: 0, started: true, exitCode: 2, ignored: true },
      { index: 1, started: true, exitCode: 0, ignored: false },
    ];
    expect(decideEndState(status('COMPLETED'), results, false)).toEqual({
      state: 'COMPLETE',
      systemLogs: ['executor 0 exited 2; ignored because ignore_error is set'],
    });
  });

  it('maps FAILED after an executor failed to EXECUTOR_ERROR', () => {
    expect(decideEndState(status('FAILED', 'FAILED', 3), failed3, false).state).toBe('EXECUTOR_ERROR');
  });

  it('maps FAILED before any executor ran to SYSTEM_ERROR', () => {
    const d = decideEndState(status('FAILED', 'FAILED', 0, 53), notStarted, false);
    expect(d.state).toBe('SYSTEM_ERROR');
    expect(d.systemLogs[0]).toBe(
      'Slurm job 42 ended FAILED (killed by signal 53) before any executor started',
    );
  });

  it('maps OUT_OF_MEMORY to EXECUTOR_ERROR with the reason', () => {
    const d = decideEndState(status('OUT_OF_MEMORY', 'OUT_OF_MEMORY', 0, 125), notStarted, false);
    expect(d.state).toBe('EXECUTOR_ERROR');
    expect(d.systemLogs[0]).toMatch(/ran out of memory/);
  });

  it('maps TIMEOUT to EXECUTOR_ERROR with the reason', () => {
    const d = decideEndState(status('TIMEOUT'), notStarted, false);
    expect(d.state).toBe('EXECUTOR_ERROR');
    expect(d.systemLogs[0]).toMatch(/time limit/);
  });

  it.each(['NODE_FAIL', 'BOOT_FAIL', 'DEADLINE', 'REVOKED'] as const)(
    'maps %s to SYSTEM_ERROR with the reason',
    (s) => {
      const d = decideEndState(status(s), notStarted, false);
      expect(d.state).toBe('SYSTEM_ERROR');
      expect(d.systemLogs[0]).toContain(`(Slurm ${s})`);
    },
  );

  it('maps a job cancelled outside the gateway to SYSTEM_ERROR naming who', () => {
    const d = decideEndState(status('CANCELLED', 'CANCELLED by 1000'), ok, false);
    expect(d.state).toBe('SYSTEM_ERROR');
    expect(d.systemLogs[0]).toContain('cancelled outside the gateway (by uid 1000)');
  });

  it('maps a final PREEMPTED to PREEMPTED by default, saying it was not requeued', () => {
    expect(decideEndState(status('PREEMPTED'), notStarted, false)).toEqual({
      state: 'PREEMPTED',
      systemLogs: [
        'Slurm job 42 ended PREEMPTED (exit code 0): Slurm preempted the job and did not requeue it',
      ],
    });
  });

  it('maps a final PREEMPTED to SYSTEM_ERROR where the site says so (slurm.preempted)', () => {
    expect(decideEndState(status('PREEMPTED'), notStarted, false, { preempted: 'SYSTEM_ERROR' })).toEqual({
      state: 'SYSTEM_ERROR',
      systemLogs: [
        'Slurm job 42 ended PREEMPTED (exit code 0): Slurm preempted the job and did not requeue it; resubmit the task',
      ],
    });
  });

  it('leaves other end states alone whatever slurm.preempted says', () => {
    const policy = { preempted: 'SYSTEM_ERROR' } as const;
    expect(decideEndState(status('COMPLETED'), ok, false, policy).state).toBe('COMPLETE');
    expect(decideEndState(status('TIMEOUT'), ok, false, policy).state).toBe('EXECUTOR_ERROR');
    expect(decideEndState(status('PREEMPTED'), ok, true, policy).state).toBe('CANCELED');
  });

  it('maps any ended job of a task being cancelled to CANCELED', () => {
    for (const s of ['CANCELLED', 'COMPLETED', 'FAILED'] as const) {
      expect(decideEndState(status(s), ok, true).state).toBe('CANCELED');
    }
  });
});

describe('a PREEMPTED job, as the controller shows it', () => {
  const preempted = (jobId: string): JobStatus => ({
    ...status('PREEMPTED'),
    jobId,
    exitCode: { code: 0, signal: 15 },
  });

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

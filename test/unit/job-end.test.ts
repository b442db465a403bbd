import {
  heldAdvice,
  decideEndState,
  phaseOf,
  vanishedJob,
  withScriptError,
  SLURM_STATE_TABLE,
  SLURM_STATES,
  type JobStatus,
  type SlurmState,
} from '../../src/compute/job-end.js';
import type { ExecutorResult } from '../../src/compute/executor-results.js';

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

describe("the job script's own error", () => {
  const refused = 'executors[0].stdout: /out/o is not a regular file';

  it('changes nothing when the script left none', () => {
    const decision = decideEndState(status('COMPLETED'), ok, false);
    expect(withScriptError(decision, undefined, false)).toEqual(decision);
  });

  it("makes a job that completed SYSTEM_ERROR, saying why first and keeping the job's notes", () => {
    const decision = { state: 'COMPLETE' as const, systemLogs: ['executor 1 exited 2; ignored'] };
    expect(withScriptError(decision, refused, false)).toEqual({
      state: 'SYSTEM_ERROR',
      systemLogs: [refused, 'executor 1 exited 2; ignored'],
    });
  });

  it("replaces the end state's own explanation of a failed job", () => {
    const decision = decideEndState(status('FAILED', 'FAILED', 121), notStarted, false);
    expect(withScriptError(decision, refused, false)).toEqual({
      state: 'SYSTEM_ERROR',
      systemLogs: [refused],
    });
  });

  it('keeps a task being cancelled CANCELED, with both explanations', () => {
    const decision = decideEndState(status('CANCELLED'), notStarted, true);
    expect(withScriptError(decision, refused, true)).toEqual({
      state: 'CANCELED',
      systemLogs: [refused, ...decision.systemLogs],
    });
  });
});

describe('a job nobody knows any more', () => {
  it('is an ended job of the same id, whose task becomes SYSTEM_ERROR when no exit code tells more', () => {
    const gone = vanishedJob('77');
    expect(gone.jobId).toBe('77');
    expect(phaseOf(gone.state)).toBe('ended');
    expect(decideEndState(gone, [{ index: 0, started: true, ignored: false }], false).state).toBe(
      'SYSTEM_ERROR',
    );
  });

  it("ends as the executors' exit codes say when every executor recorded one", () => {
    expect(decideEndState(vanishedJob('77'), ok, false).state).toBe('COMPLETE');
  });
});

describe('held jobs', () => {
  it('says who can release a held job, and how', () => {
    expect(heldAdvice('launch failed requeued held', '42')).toBe(
      'its launch failed on the node and Slurm holds it: an administrator can release it ' +
        '(scontrol release 42) once the node is fixed, or cancel the task to give up',
    );
    expect(heldAdvice('JobHeldAdmin', '42_3')).toContain(
      'held by an administrator: it starts once released (scontrol release 42_3)',
    );
    expect(heldAdvice('JobHeldUser', '7')).toContain("held by the job's user");
    for (const passing of ['Priority', 'Resources', 'BeginTime', undefined])
      expect(heldAdvice(passing, '1')).toBeUndefined();
  });
});

import { UnrecoverableError } from 'bullmq';
import { PlanError } from '../../src/apptainer/container-plan.js';
import { ImagePullError } from '../../src/apptainer/image-cache.js';
import { BackendParameterError, ResourceLimitError } from '../../src/compute/slurm/sbatch-args.js';
import { LayoutError } from '../../src/compute/task-dir.js';
import {
  CommandError,
  isPermanent,
  PermanentError,
  StoreUnavailableError,
  SubmissionRejectedError,
} from '../../src/errors.js';
import { forQueue } from '../../src/queue/worker.js';
import { DownloadBudgetError } from '../../src/staging/download-budget.js';
import { StagingError } from '../../src/staging/staging-error.js';
import { IllegalTransitionError } from '../../src/tes/state.js';

describe('permanent errors', () => {
  it.each([
    ['SubmissionRejectedError', new SubmissionRejectedError('bad partition')],
    ['StagingError', new StagingError('inputs[0]', 'no such file')],
    ['PlanError', new PlanError('outputs[0]', 'outside')],
    ['ResourceLimitError', new ResourceLimitError('too many cpus')],
    ['BackendParameterError', new BackendParameterError('bad value')],
    ['LayoutError', new LayoutError('a link in the way')],
    ['DownloadBudgetError', new DownloadBudgetError('too many bytes')],
    ['IllegalTransitionError', new IllegalTransitionError('t', 'RUNNING', 'CANCELED')],
    ['ImagePullError (permanent)', new ImagePullError('executors[0].image', 'x', 'manifest unknown', true)],
  ])('%s is permanent and keeps its own name', (name, err) => {
    expect(err).toBeInstanceOf(PermanentError);
    expect(isPermanent(err)).toBe(true);
    expect(err.name).toBe(name.split(' ')[0]);
  });

  it.each([
    ['a transient image pull', new ImagePullError('executors[0].image', 'x', 'i/o timeout', false)],
    ['a failed command', new CommandError('sbatch', [], 1, 'busy', false, 'cannot submit')],
    ['an unreachable store', new StoreUnavailableError(new Error('ECONNREFUSED'))],
    ['a plain error', new Error('boom')],
    ['an object that only claims it', { permanent: true, message: 'duck' }],
    ['nothing', undefined],
  ])('%s is not permanent', (_what, err) => {
    expect(isPermanent(err)).toBe(false);
  });
});

describe('forQueue', () => {
  it('turns a permanent error into an UnrecoverableError that keeps it as its cause', () => {
    const err = new StagingError('inputs[0]', 'no such file');
    const out = forQueue(err);
    expect(out).toBeInstanceOf(UnrecoverableError);
    expect((out as Error).message).toBe('inputs[0]: no such file');
    expect((out as Error).cause).toBe(err);
  });

  it('hands any other error to BullMQ unchanged, so it is retried', () => {
    const err = new Error('connection reset');
    expect(forQueue(err)).toBe(err);
    const pull = new ImagePullError('executors[0].image', 'x', 'i/o timeout', false);
    expect(forQueue(pull)).toBe(pull);
  });
});

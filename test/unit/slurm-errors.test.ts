import { CommandError } from '../../src/errors.js';
import { isTransientSlurmError } from '../../src/compute/slurm/slurm-driver.js';

const failure = (stderr: string, exitCode: number | undefined = 1, timedOut = false): CommandError =>
  new CommandError('sbatch', [], exitCode, stderr, timedOut, 'failed to submit');
const notRun = (timedOut: boolean): CommandError =>
  new CommandError('sbatch', [], undefined, '', timedOut, 'failed to submit');

describe('isTransientSlurmError', () => {
  it.each([
    'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation',
    'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)',
    'sbatch: error: Munge encode failed: Failed to access "/run/munge/munge.socket.2": No such file or directory',
    'sbatch: error: Batch job submission failed: Resource temporarily unavailable',
  ])('retries %s', (stderr) => {
    expect(isTransientSlurmError(failure(stderr))).toBe(true);
  });

  it.each([
    'sbatch: error: Batch job submission failed: Invalid partition name specified',
    'sbatch: error: Batch job submission failed: Requested node configuration is not available',
    'sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified',
  ])('does not retry %s', (stderr) => {
    expect(isTransientSlurmError(failure(stderr))).toBe(false);
  });

  it('retries a call that timed out or could not run', () => {
    expect(isTransientSlurmError(notRun(true))).toBe(true);
    expect(isTransientSlurmError(notRun(false))).toBe(true);
  });
});

import { jest } from '@jest/globals';
import { requireSlurm } from '../helpers/gateway.js';
import { runHostileSuite } from './hostile-suite.js';

/**
 * The hostile-task suite (issue 7) on the real single-node Slurm: every attack of attacks.ts through
 * the HTTP API, each job run by sbatch with its executors in the Apptainer stand-in.
 */
jest.setTimeout(150_000);

runHostileSuite({
  backend: 'slurm',
  require: requireSlurm,
  overrides: { backend: 'slurm', slurm: { defaultPartition: 'debug' } },
});

import { jest } from '@jest/globals';
import { runHostileSuite } from './hostile-suite.js';

/**
 * The hostile-task suite (issue 7) on the local backend: the same attacks, the same job script run
 * as a child process of the gateway. Executors run in the Apptainer stand-in with the test image
 * (not bwrap-host, whose executors see the host's files by design), so a canary is out of a task's
 * reach except through the gateway's own hands.
 */
jest.setTimeout(150_000);

runHostileSuite({
  backend: 'local',
  overrides: { backend: 'local', local: { maxConcurrentTasks: 24 } },
});

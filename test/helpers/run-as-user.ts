import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { FAKE_APPTAINER, ROOT, TEST_IMAGES_DIR } from './gateway.js';
import { RUN_AS } from './run-as-user-installation.js';

export { RUN_AS, unixUser } from './run-as-user-installation.js';

/**
 * The run-as-user test installation that scripts/run-as-user-setup.sh makes: test users, the service
 * account, the helper installed root-owned with its configuration, the sudoers rule and the shared
 * work root. Tests that need it call runAsUserSetup() (idempotent; scripts/test.sh runs it before jest).
 */
export function runAsUserSetup(): void {
  execFileSync('bash', [join(ROOT, 'scripts', 'run-as-user-setup.sh')], { stdio: 'pipe', timeout: 300_000 });
}

/**
 * The settings every gateway of the run-as-user tests shares: token auth, tasks run as their owners
 * through the installed helper, the test account as everyone's default, the stand-in runtime with
 * the test images, and no root. Tests add their own `slurm`, `storage` and `reconciler` parts.
 */
export function runAsUserSettings(imageCacheDir: string) {
  return {
    backend: 'slurm',
    auth: { mode: 'tokens' },
    identity: {
      runAs: 'user',
      helper: { path: RUN_AS.helper },
      policy: { everyone: { defaultAccount: RUN_AS.account } },
    },
    container: {
      runtime: 'apptainer',
      executable: FAKE_APPTAINER,
      imageCacheDir,
      imageRoots: [TEST_IMAGES_DIR],
    },
    security: { allowRoot: false },
  };
}

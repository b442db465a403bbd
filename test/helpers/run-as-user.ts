import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './gateway.js';

/**
 * The run-as-user test installation that scripts/run-as-user-setup.sh makes: test users, the service
 * account, the helper installed root-owned with its configuration, the sudoers rule and the shared
 * work root. Tests that need it call runAsUserSetup() (idempotent; scripts/test.sh runs it before jest).
 */
export const RUN_AS = {
  testDir: '/var/tmp/tes-gateway-test',
  workRoot: '/var/tmp/tes-gateway-test/work',
  helper: '/usr/local/libexec/tes-gateway-test/tes-gateway-helper',
  conf: '/etc/tes-gateway-test/helper.conf',
  serviceUser: 'tesgw',
  group: 'tes-users',
  account: 'tes-lab',
} as const;

export function runAsUserSetup(): void {
  execFileSync('bash', [join(ROOT, 'scripts', 'run-as-user-setup.sh')], { stdio: 'pipe', timeout: 300_000 });
}

/** A Unix user's ids, from the system's own database (`id` fails for a user that does not exist). */
export function unixUser(name: string): { uid: number; gid: number } {
  const id = (flag: string): number => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

import { execFileSync } from 'node:child_process';

/**
 * What scripts/run-as-user-setup.sh installs on this machine for the run-as-user tests and bench:
 * the paths, the service account, the users' group and their Slurm account. No imports of the
 * project, so that the bench can use it too.
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

/** A Unix user's ids, from the system's own database (`id` fails for a user that does not exist). */
export function unixUser(name: string): { uid: number; gid: number } {
  const id = (flag: string): number => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

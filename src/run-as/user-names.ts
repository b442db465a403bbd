import { execa } from 'execa';

/**
 * The login name of a uid, from the system's user database (`getent passwd`, so LDAP and SSSD
 * users are found too); undefined when the uid has no entry.
 */
export async function userNameOf(uid: number): Promise<string | undefined> {
  const result = await execa('getent', ['passwd', String(uid)], { reject: false, timeout: 10_000 });
  // getent exits 2 for a key it does not find; anything else is a failure to say.
  if (result.exitCode === 2) return undefined;
  if (result.exitCode !== 0) {
    throw new Error(`getent passwd ${uid} failed (exit ${result.exitCode}): ${result.stderr.trim()}`);
  }
  const name = result.stdout.split(':')[0];
  return name ? name : undefined;
}

/**
 * Who is asking: the identity every authenticated request carries, and the rules a user name must
 * keep before anything (a task's owner, a path template, later a Unix account) is made of it.
 */

export interface Identity {
  /** The POSIX user name the credentials map to. */
  user: string;
  /** Groups the identity carries (an OIDC groups claim); policy groups that list the user add theirs. */
  groups: readonly string[];
  /** Sees and cancels every task. */
  admin: boolean;
  /** What proved it: a personal access token (with its id) or an OIDC token. */
  via: { kind: 'token'; tokenId: string } | { kind: 'oidc'; issuer: string; subject: string };
}

/**
 * A portable POSIX user name, as useradd accepts by default: a lower-case letter or `_` first, then
 * lower-case letters, digits, `_` and `-`, at most 32 bytes. Nothing else reaches a path, a log line,
 * or (with run-as-user) sudo.
 */
const POSIX_USER = /^[a-z_][a-z0-9_-]{0,31}$/;

/** Why `name` cannot be a task's owner, or undefined when it can. */
export function userNameProblem(name: string, denied: readonly string[]): string | undefined {
  if (!POSIX_USER.test(name)) {
    return (
      `${JSON.stringify(name.slice(0, 64))} is not a valid POSIX user name ` +
      '(a lower-case letter or _ first, then lower-case letters, digits, _ or -, at most 32)'
    );
  }
  if (denied.includes(name)) return `the user ${name} may not use this service (identity.denyUsers)`;
  return undefined;
}

/** What a failed `apptainer pull` says: whether a later try may pass, and the lines worth showing. */

/**
 * Network trouble and overloaded registries pass; a registry's answer about the image does not.
 * Transient patterns are tried first because a 5xx or a timeout makes the rest of the text unreliable;
 * what matches neither is retried, since the attempts are bounded anyway.
 */
const TRANSIENT = [
  /time[sd]? ?out/i, // i/o timeout, TLS handshake timeout, Client.Timeout, timed out
  /connection (refused|reset)/i,
  /too many requests|\b429\b/i,
  /internal server error|bad gateway|service unavailable|status(?: code)?:? 5\d\d|\b50[0234] [A-Z]/i,
  /unexpected EOF|temporary failure in name resolution/i,
];
const PERMANENT = [
  /manifest unknown|name unknown/i,
  /unauthori[sz]ed|forbidden|denied/i,
  /not found/i,
  /invalid reference/i,
];

export function isPermanentPullFailure(message: string): boolean {
  if (TRANSIENT.some((re) => re.test(message))) return false;
  return PERMANENT.some((re) => re.test(message));
}

/** The lines of the tool's output that say what went wrong (Apptainer prints FATAL: ...). */
export function summarize(output: string): string {
  const lines = output
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '');
  const fatal = lines.filter((l) => /^(FATAL|ERROR)\b/.test(l));
  const text = (fatal.length > 0 ? fatal : lines.slice(-3)).join('; ');
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}

import { StagingError } from './staging-error.js';

/**
 * What of a URL is a credential: userinfo and signature- or token-like query parameters. They are
 * taken out of the URL to request, hidden in the URL that messages show, and scrubbed from any text.
 */

export interface Target {
  /** Without userinfo: those travel in `authorization`. */
  url: URL;
  authorization: string | undefined;
  /** The URL as messages may show it. */
  shown: string;
  /** Values that must never appear in a message. */
  secrets: string[];
}

export function parseTarget(raw: string, field: string): Target {
  const shown = redactUrl(raw);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new StagingError(field, `${shown} is not a valid URL`);
  }
  const secrets = secretsOf(raw);
  let authorization: string | undefined;
  if (url.username || url.password) {
    const user = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    secrets.push(user, password, authorization.slice('Basic '.length));
    url.username = '';
    url.password = '';
  }
  url.hash = '';
  return { url, authorization, shown, secrets: secrets.filter((s) => s.length >= 3) };
}

/** Query parameters whose values are credentials: AWS/GCS signatures, Azure SAS `sig`, API keys, tokens. */
const SECRET_PARAM = /sig|token|secret|passw|pwd|credential|key|auth|session/i;

const USERINFO = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*@)/;

/**
 * A URL as it may be shown in messages and logs: userinfo becomes `***@` and the values of
 * signature- or token-like query parameters (and of those named in `secretNames`) become `***`;
 * everything else is kept as the client wrote it, so the reader can still recognise it.
 */
export function redactUrl(raw: string, secretNames: readonly string[] = []): string {
  const noFragment = raw.split('#', 1)[0]!;
  const withoutUser = noFragment.replace(USERINFO, '$1***@');
  const q = withoutUser.indexOf('?');
  if (q < 0) return withoutUser;
  const params = withoutUser
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      const decoded = safeDecode(name);
      return SECRET_PARAM.test(decoded) || secretNames.includes(decoded) ? `${name}=***` : pair;
    });
  return `${withoutUser.slice(0, q)}?${params.join('&')}`;
}

/** The credential values in a URL as written, encoded and decoded, so messages can be scrubbed of them. */
export function secretsOf(raw: string): string[] {
  const out: string[] = [];
  const user = USERINFO.exec(raw.split('#', 1)[0]!)?.[2]?.slice(0, -1);
  if (user) out.push(user, ...user.split(':'), ...user.split(':').map(safeDecode));
  const q = raw.indexOf('?');
  if (q >= 0) {
    for (const pair of raw
      .slice(q + 1)
      .split('#', 1)[0]!
      .split('&')) {
      const eq = pair.indexOf('=');
      if (eq < 0 || !SECRET_PARAM.test(safeDecode(pair.slice(0, eq)))) continue;
      const value = pair.slice(eq + 1);
      out.push(value, safeDecode(value));
    }
  }
  return out.filter((s) => s.length > 0);
}

/** `text` with every occurrence of each secret replaced by `***`. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) {
    if (s.length >= 3) out = out.split(s).join('***');
  }
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

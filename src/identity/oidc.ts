/**
 * OIDC access tokens (JWTs): where the provider's keys are (discovery), whether a token is genuine
 * and current (jose), and which user and groups it names (auth.oidc.userClaim, userPattern,
 * groupsClaim).
 *
 * A token is the client's own input, so verify() never throws: every way a token can be wrong is an
 * `ok: false` with a short reason the HTTP layer may show (401). A provider that cannot be reached is
 * not the client's fault: those answers carry `unavailable: true` (503).
 *
 * Tested against a real provider on 127.0.0.1 in test/integration/oidc.test.ts; not tested here:
 * https with a real certificate chain (Node's fetch does that).
 */
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { userNameProblem } from './identity.js';

export type OidcOptions = NonNullable<Config['auth']['oidc']>;

export type OidcResult =
  | { ok: true; user: string; groups: string[]; issuer: string; subject: string }
  | { ok: false; reason: string; unavailable?: boolean };

export interface OidcVerifierTuning {
  /** The least time between two discovery attempts, or two key fetches, after one failed. */
  retryAfterFailureMs?: number;
}

/** Longer than any access token a provider issues; a longer header is refused unread. */
const MAX_TOKEN_CHARS = 16 * 1024;

/** The longest discovery document read; real ones are a few KiB. */
const MAX_DISCOVERY_BYTES = 256 * 1024;

const DEFAULT_RETRY_AFTER_FAILURE_MS = 5_000;

/** The provider (its discovery document or its keys) failed: the request may succeed later. */
class ProviderUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProviderUnavailable';
  }
}

/** Whether `url` may be fetched without TLS: only a provider on this host. */
function isLoopback(url: URL): boolean {
  const host = url.hostname;
  return host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** Why `url` must not be used to reach the provider, or undefined when it may. */
export function insecureUrlProblem(url: URL, what: string): string | undefined {
  if (url.protocol === 'https:') return undefined;
  if (url.protocol === 'http:' && isLoopback(url)) return undefined;
  return `${what} ${url.href} must use https (plain http is accepted only on loopback: 127.0.0.0/8, ::1, localhost)`;
}

/** The discovery document's address: OIDC Discovery 1.0 section 4, the issuer without its trailing slash. */
export function discoveryUrl(issuer: string): URL {
  return new URL(`${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`);
}

function messageOf(err: unknown): string {
  // Duck-typed: fetch's errors come from Node's own realm, where `instanceof Error` may not hold.
  if (typeof err === 'object' && err !== null && typeof (err as Error).message === 'string') {
    const { message, cause } = err as { message: string; cause?: unknown };
    // Node's fetch says only "fetch failed"; the reason (ECONNREFUSED, a certificate) is its cause.
    return message === 'fetch failed' && cause !== undefined ? `${message}: ${messageOf(cause)}` : message;
  }
  return String(err);
}

/** A claim as it may appear in a reason: short, quoted, never a whole token. */
function quote(value: unknown): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}…` : text);
}

function isoTime(seconds: unknown): string {
  return typeof seconds === 'number' && Number.isFinite(seconds)
    ? new Date(seconds * 1000).toISOString()
    : quote(seconds);
}

/** Groups from the groups claim: a list (members that are not strings are skipped) or one string. */
export function groupsFrom(claim: unknown): string[] {
  if (typeof claim === 'string') return [claim];
  if (Array.isArray(claim)) return claim.filter((g): g is string => typeof g === 'string');
  return [];
}

/** The user a verified token names, or why it names none. */
export function userFrom(
  payload: JWTPayload,
  options: Pick<OidcOptions, 'userClaim' | 'userPattern'>,
  pattern: RegExp | undefined,
  denyUsers: readonly string[],
): { user: string } | { problem: string } {
  const claim = payload[options.userClaim];
  if (typeof claim !== 'string') {
    return {
      problem:
        claim === undefined
          ? `the token has no ${options.userClaim} claim (auth.oidc.userClaim)`
          : `the token's ${options.userClaim} claim is not a string (auth.oidc.userClaim)`,
    };
  }
  let user = claim;
  if (pattern) {
    const match = pattern.exec(claim);
    if (!match) {
      return {
        problem: `the ${options.userClaim} claim ${quote(claim)} does not match auth.oidc.userPattern`,
      };
    }
    user = match[1] ?? match[0];
  }
  const problem = userNameProblem(user, denyUsers);
  return problem ? { problem } : { user };
}

/** A short reason, fit for a client, for why jose refused a token. */
export function reasonFor(
  err: unknown,
  options: Pick<OidcOptions, 'issuer' | 'audience' | 'algorithms'>,
): string {
  if (err instanceof errors.JWTExpired) return `the token expired at ${isoTime(err.payload.exp)}`;
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return `the token has no ${err.claim} claim`;
    switch (err.claim) {
      case 'nbf':
        return `the token is not valid before ${isoTime(err.payload.nbf)}`;
      case 'iat':
        return `the token's issue time (iat) ${isoTime(err.payload.iat)} is invalid`;
      case 'aud':
        return `the token's audience (aud) ${quote(err.payload.aud)} does not include ${[options.audience].flat().join(' or ')}`;
      case 'iss':
        return `the token's issuer (iss) ${quote(err.payload.iss)} is not ${options.issuer}`;
      default:
        return `the token's ${err.claim} claim is invalid (${err.reason})`;
    }
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return "the token's signature is invalid";
  if (err instanceof errors.JWKSNoMatchingKey)
    return 'no key of the identity provider matches the token (its kid and alg)';
  if (err instanceof errors.JWKSMultipleMatchingKeys)
    return 'several keys of the identity provider match the token; it needs a kid';
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) {
    return `the token's algorithm is not allowed (auth.oidc.algorithms: ${options.algorithms.join(', ')})`;
  }
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid)
    return `the token is malformed: ${messageOf(err)}`;
  return `the token cannot be verified: ${messageOf(err)}`;
}

interface Discovered {
  keys: ReturnType<typeof createRemoteJWKSet>;
}

/**
 * Verifies access tokens from one OIDC provider. The discovery document is read on the first
 * verify() and kept; jose keeps the keys (auth.oidc.jwksCacheMaxAgeMs) and fetches them again when
 * a token names a key id it does not know (rotation), at most once per auth.oidc.jwksCooldownMs.
 * After a failed discovery or key fetch, tokens are answered "unavailable" without asking the
 * provider again for a few seconds, so an outage does not make every request wait for a timeout.
 */
export class OidcVerifier {
  private readonly pattern: RegExp | undefined;
  private readonly retryAfterFailureMs: number;
  private discovered: Promise<Discovered> | undefined;
  /** The last failure to reach the provider, repeated to clients until `until` instead of asking again. */
  private failure: { message: string; until: number } | undefined;

  constructor(
    private readonly options: OidcOptions,
    private readonly denyUsers: readonly string[],
    tuning: OidcVerifierTuning = {},
  ) {
    const problem = insecureUrlProblem(new URL(options.issuer), 'the issuer');
    if (problem) throw new ConfigError('auth.oidc.issuer', [problem]);
    this.pattern = options.userPattern === undefined ? undefined : new RegExp(options.userPattern, 'u');
    this.retryAfterFailureMs = tuning.retryAfterFailureMs ?? DEFAULT_RETRY_AFTER_FAILURE_MS;
  }

  async verify(jwt: string): Promise<OidcResult> {
    try {
      return await this.verifyOrThrow(jwt);
    } catch (err) {
      if (err instanceof ProviderUnavailable) {
        return {
          ok: false,
          unavailable: true,
          reason: `the identity provider at ${this.options.issuer} cannot be reached: ${err.message}`,
        };
      }
      return { ok: false, reason: reasonFor(err, this.options) };
    }
  }

  private async verifyOrThrow(jwt: string): Promise<OidcResult> {
    // Refuse what cannot be a token before asking the provider anything.
    const problem = tokenShapeProblem(jwt, this.options.algorithms);
    if (problem) return { ok: false, reason: problem };

    const { keys } = await this.discover();
    const getKey: JWTVerifyGetKey = async (header, token) => {
      // Stale keys and a provider that just failed: answer now rather than wait for another timeout.
      if (!keys.fresh) this.throwRecentFailure();
      try {
        return await keys(header, token);
      } catch (err) {
        if (isTokenFault(err)) throw err;
        throw this.noteFailure(
          new ProviderUnavailable(`fetching its keys failed: ${messageOf(err)}`, { cause: err }),
        );
      }
    };
    const { payload } = await jwtVerify(jwt, getKey, {
      issuer: this.options.issuer,
      audience: this.options.audience,
      algorithms: this.options.algorithms,
      clockTolerance: this.options.clockToleranceSec,
      requiredClaims: ['exp'],
    });

    const mapped = userFrom(payload, this.options, this.pattern, this.denyUsers);
    if ('problem' in mapped) return { ok: false, reason: mapped.problem };
    return {
      ok: true,
      user: mapped.user,
      groups: groupsFrom(payload[this.options.groupsClaim]),
      issuer: this.options.issuer,
      // A provider may leave `sub` out of access tokens; the user claim then identifies the subject.
      subject: typeof payload.sub === 'string' ? payload.sub : String(payload[this.options.userClaim]),
    };
  }

  /** The discovery document, read once; a failure is forgotten so that a later verify() tries again. */
  private discover(): Promise<Discovered> {
    if (!this.discovered) {
      this.throwRecentFailure();
      this.discovered = this.fetchDiscovery().catch((err: unknown) => {
        this.discovered = undefined;
        throw this.noteFailure(
          err instanceof ProviderUnavailable ? err : new ProviderUnavailable(messageOf(err), { cause: err }),
        );
      });
    }
    return this.discovered;
  }

  private noteFailure(err: ProviderUnavailable): ProviderUnavailable {
    this.failure = { message: err.message, until: Date.now() + this.retryAfterFailureMs };
    return err;
  }

  private throwRecentFailure(): void {
    if (this.failure && Date.now() < this.failure.until) {
      throw new ProviderUnavailable(
        `${this.failure.message} (asked again at most every ${this.retryAfterFailureMs} ms)`,
      );
    }
  }

  private async fetchDiscovery(): Promise<Discovered> {
    const url = discoveryUrl(this.options.issuer);
    const response = await fetch(url, {
      redirect: 'error',
      signal: AbortSignal.timeout(this.options.timeoutMs),
      headers: { accept: 'application/json' },
    }).catch((err: unknown) => {
      const timedOut = (err as { name?: unknown } | null)?.name === 'TimeoutError';
      throw new ProviderUnavailable(
        timedOut
          ? `${url.href} did not answer within ${this.options.timeoutMs} ms`
          : `${url.href}: ${messageOf(err)}`,
        { cause: err },
      );
    });
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new ProviderUnavailable(`${url.href} answered HTTP ${response.status}`);
    }
    const text = await response.text();
    if (text.length > MAX_DISCOVERY_BYTES)
      throw new ProviderUnavailable(`${url.href} answered more than ${MAX_DISCOVERY_BYTES} bytes`);
    let document: { issuer?: unknown; jwks_uri?: unknown };
    try {
      document = JSON.parse(text) as typeof document;
    } catch {
      throw new ProviderUnavailable(`${url.href} did not answer JSON`);
    }
    if (document === null || typeof document !== 'object')
      throw new ProviderUnavailable(`${url.href} did not answer a JSON object`);
    if (document.issuer !== this.options.issuer) {
      throw new ProviderUnavailable(
        `its discovery document names the issuer ${quote(document.issuer)}, not ${this.options.issuer} (auth.oidc.issuer must match it exactly)`,
      );
    }
    if (typeof document.jwks_uri !== 'string') throw new ProviderUnavailable(`${url.href} names no jwks_uri`);
    let jwksUrl: URL;
    try {
      jwksUrl = new URL(document.jwks_uri);
    } catch {
      throw new ProviderUnavailable(`its jwks_uri ${quote(document.jwks_uri)} is not a URL`);
    }
    const problem = insecureUrlProblem(jwksUrl, 'its jwks_uri');
    if (problem) throw new ProviderUnavailable(problem);
    return {
      keys: createRemoteJWKSet(jwksUrl, {
        cacheMaxAge: this.options.jwksCacheMaxAgeMs,
        cooldownDuration: this.options.jwksCooldownMs,
        timeoutDuration: this.options.timeoutMs,
      }),
    };
  }
}

/** Why `jwt` cannot be a token this verifier accepts, judged without its keys; undefined when it may be. */
export function tokenShapeProblem(jwt: unknown, algorithms: readonly string[]): string | undefined {
  if (typeof jwt !== 'string' || jwt.length === 0) return 'the token is empty';
  if (jwt.length > MAX_TOKEN_CHARS)
    return `the token is ${jwt.length} characters; at most ${MAX_TOKEN_CHARS} are accepted`;
  let alg: unknown;
  try {
    ({ alg } = decodeProtectedHeader(jwt));
  } catch {
    return 'the token is malformed: it is not a signed JWT (three base64url parts, a JSON header first)';
  }
  if (typeof alg !== 'string' || !algorithms.includes(alg)) {
    return `the token's algorithm ${quote(alg)} is not allowed (auth.oidc.algorithms: ${algorithms.join(', ')})`;
  }
  return undefined;
}

/** Errors from finding a token's key that are the token's doing; the rest are the provider's. */
function isTokenFault(err: unknown): boolean {
  return (
    err instanceof errors.JWKSNoMatchingKey ||
    err instanceof errors.JWKSMultipleMatchingKeys ||
    err instanceof errors.JOSENotSupported ||
    err instanceof errors.JOSEAlgNotAllowed
  );
}

import type { IncomingHttpHeaders } from 'node:http';
import type { RequestHandler } from 'express';
import { IdentityUnavailableError, UnauthorizedError } from '../errors.js';
import { userNameProblem, type Identity } from '../identity/identity.js';
import type { Policy } from '../identity/policy.js';
import type { Audit } from './audit.js';

declare module 'express-serve-static-core' {
  interface Request {
    /** Who is asking; absent when the gateway does not authenticate (auth.mode none). */
    identity?: Identity;
  }
}

/** Checks a personal access token (identity/tokens.ts). */
export interface TokenVerifier {
  verify(text: string): Promise<{ ok: true; id: string; user: string } | { ok: false; reason: string }>;
}

/** Checks an OIDC access token (identity/oidc.ts). */
export interface JwtVerifier {
  verify(
    jwt: string,
  ): Promise<
    | { ok: true; user: string; groups: string[]; issuer: string; subject: string }
    | { ok: false; reason: string; unavailable?: boolean }
  >;
}

export interface AuthenticationDeps {
  realm: string;
  /** Query parameter and header an API key may come in (Nextflow). */
  apiKeyParamName: string;
  tokens?: TokenVerifier | undefined;
  oidc?: JwtVerifier | undefined;
  policy: Policy;
  denyUsers: readonly string[];
  audit: Audit;
  /** Paths served without credentials, compared in lower case without a trailing slash. */
  publicPaths: readonly string[];
}

/** Personal access tokens start so (identity/tokens.ts); anything else in a Bearer is taken for a JWT. */
const TOKEN_PREFIX = 'tesgw_';

/**
 * Every request but the public ones must carry credentials: a personal access token (as a Bearer
 * token, as the password of Basic auth, or as an API key in the configured query parameter or
 * header) or an OIDC access token (Bearer). The user name of Basic auth is not read: the token alone
 * says who is asking. What is refused gets 401 with a challenge for each accepted scheme and a reason
 * that never repeats the credentials; an identity provider that cannot be reached gets 503, since
 * the client's token may well be good.
 */
export function authenticate(deps: AuthenticationDeps): RequestHandler {
  const identify = requestIdentifier(deps);
  const publicPaths = new Set(deps.publicPaths);
  return (req, _res, next) => {
    const path = req.path.toLowerCase().replace(/\/+$/, '');
    if (publicPaths.has(path)) {
      next();
      return;
    }
    identify(req.headers, req.query[deps.apiKeyParamName]).then(
      (result) => {
        if ('identity' in result) {
          req.identity = result.identity;
          next();
          return;
        }
        deps.audit(req, 'refused', { reason: result.reason });
        next(result.error);
      },
      (err: unknown) => next(err),
    );
  };
}

/** Who a request's credentials name; or why they name nobody, with the error that answers it. */
export type Identified =
  { identity: Identity } | { reason: string; error: UnauthorizedError | IdentityUnavailableError };

/**
 * Checks the credentials a request carries (headers, and the API key's query parameter when given):
 * what `authenticate` does for every request, and the fast path of api/fast-reads.ts for its own.
 */
export function requestIdentifier(
  deps: AuthenticationDeps,
): (headers: IncomingHttpHeaders, queryKey?: unknown) => Promise<Identified> {
  const byUser = new Map<string, UserFacts>();
  const factsOf = (user: string, carried: readonly string[]): UserFacts => {
    if (carried.length > 0) return userFacts(user, carried, deps);
    let facts = byUser.get(user);
    if (!facts) {
      if (byUser.size >= 10_000) byUser.clear();
      facts = userFacts(user, [], deps);
      byUser.set(user, facts);
    }
    return facts;
  };
  const realm = `realm="${deps.realm}"`;
  const schemes = [...(deps.tokens ? [`Basic ${realm}`] : []), `Bearer ${realm}`];
  const headerName = deps.apiKeyParamName.toLowerCase();

  const refuse = (reason: string, invalidToken: boolean): UnauthorizedError => {
    const described = reason.replace(/["\\\x00-\x1f\x7f]/g, "'");
    const challenges = invalidToken
      ? schemes.map((s) =>
          s.startsWith('Bearer') ? `${s}, error="invalid_token", error_description="${described}"` : s,
        )
      : schemes;
    return new UnauthorizedError(reason, challenges);
  };

  return async (headers, queryKey) => {
    const found = credentialsOf(headers.authorization, queryKey, headers[headerName]);
    if ('problem' in found) {
      return { reason: found.problem, error: refuse(found.problem, found.problem !== NO_CREDENTIALS) };
    }
    const result = await identify(found.secret, found.where, deps, factsOf);
    if ('identity' in result) return result;
    return {
      reason: result.reason,
      error: result.unavailable ? new IdentityUnavailableError(result.reason) : refuse(result.reason, true),
    };
  };
}

const NO_CREDENTIALS =
  'the request carries no credentials: send a personal access token (Authorization: Bearer, or as ' +
  'the Basic password) or an OIDC access token';

type Found = { secret: string; where: string } | { problem: string };

/** The one secret a request presents, and where it came from; or why there is none to check. */
function credentialsOf(authorization: string | undefined, queryKey: unknown, headerKey: unknown): Found {
  const apiKey = queryKey ?? headerKey;
  if (authorization !== undefined) {
    if (apiKey !== undefined)
      return { problem: 'send one kind of credentials: an Authorization header or an API key, not both' };
    const match = /^(\S+)\s+(\S.*)?$/.exec(authorization.trim());
    const scheme = match?.[1]?.toLowerCase();
    const value = match?.[2]?.trim() ?? '';
    if (scheme === 'bearer' && value !== '') return { secret: value, where: 'Bearer token' };
    if (scheme === 'basic' && value !== '') {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return { problem: 'the Basic credentials are not user:password' };
      return { secret: decoded.slice(colon + 1), where: 'Basic password' };
    }
    return { problem: 'the Authorization header must be Bearer TOKEN or Basic with the token as password' };
  }
  if (apiKey !== undefined) {
    if (typeof apiKey !== 'string' || apiKey === '') return { problem: 'send one non-empty API key' };
    return { secret: apiKey, where: 'API key' };
  }
  return { problem: NO_CREDENTIALS };
}

/** What the configuration makes of a user name: whether it may be an owner, its groups, admin. */
interface UserFacts {
  problem?: string | undefined;
  groups: readonly string[];
  admin: boolean;
}

function userFacts(user: string, carried: readonly string[], deps: AuthenticationDeps): UserFacts {
  const groups = deps.policy.groupsOf(user, carried);
  return {
    problem: userNameProblem(user, deps.denyUsers),
    groups,
    admin: deps.policy.isAdmin(user, groups),
  };
}

async function identify(
  secret: string,
  where: string,
  deps: AuthenticationDeps,
  factsOf: (user: string, carried: readonly string[]) => UserFacts,
): Promise<{ identity: Identity } | { reason: string; unavailable?: boolean }> {
  if (secret.startsWith(TOKEN_PREFIX)) {
    if (!deps.tokens) return { reason: 'personal access tokens are not accepted here (auth.mode)' };
    const result = await deps.tokens.verify(secret);
    if (!result.ok) return { reason: result.reason };
    const facts = factsOf(result.user, []);
    if (facts.problem) return { reason: facts.problem };
    return {
      identity: {
        user: result.user,
        groups: facts.groups,
        admin: facts.admin,
        via: { kind: 'token', tokenId: result.id },
      },
    };
  }
  if (deps.oidc && secret.split('.').length === 3) {
    const result = await deps.oidc.verify(secret);
    if (!result.ok)
      return result.unavailable ? { reason: result.reason, unavailable: true } : { reason: result.reason };
    const facts = factsOf(result.user, result.groups);
    return {
      identity: {
        user: result.user,
        groups: facts.groups,
        admin: facts.admin,
        via: { kind: 'oidc', issuer: result.issuer, subject: result.subject },
      },
    };
  }
  const accepted = [
    deps.tokens ? 'a personal access token (tesgw_...)' : '',
    deps.oidc ? 'an OIDC access token' : '',
  ]
    .filter(Boolean)
    .join(' or ');
  return { reason: `the ${where} is not ${accepted}` };
}

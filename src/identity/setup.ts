import type { Redis } from 'ioredis';
import type { Config } from '../config/schema.js';
import { OidcVerifier } from './oidc.js';
import { policyFor, type Policy } from './policy.js';
import { TokenStore } from './tokens.js';

export interface IdentitySetup {
  policy: Policy;
  /** Present when auth.mode accepts personal access tokens. */
  tokens?: TokenStore | undefined;
  /** Present when auth.mode accepts OIDC access tokens. */
  oidc?: OidcVerifier | undefined;
}

/** The verifiers auth.mode asks for, and the per-user policy. `tokensKey`: the Redis hash of tokens. */
export function identitySetup(config: Config, redis: Redis, tokensKey: string): IdentitySetup {
  const { mode } = config.auth;
  return {
    policy: policyFor(config),
    tokens:
      mode === 'tokens' || mode === 'tokens+oidc'
        ? new TokenStore(redis, tokensKey, { cacheTtlMs: config.auth.tokens.cacheTtlMs })
        : undefined,
    oidc:
      (mode === 'oidc' || mode === 'tokens+oidc') && config.auth.oidc
        ? new OidcVerifier(config.auth.oidc, config.identity.denyUsers)
        : undefined,
  };
}

import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { base64url, SignJWT } from 'jose';
import { OidcVerifier, type OidcOptions, type OidcResult } from '../../src/identity/oidc.js';
import { startOidcProvider, type OidcProvider } from '../helpers/oidc-provider.js';

/**
 * OidcVerifier against a real OpenID provider on 127.0.0.1 (test/helpers/oidc-provider.ts): discovery,
 * keys fetched over HTTP and cached, rotation, outages, and every way a token can be refused.
 */
jest.setTimeout(20_000);

const DENIED = ['root', 'daemon', 'slurm'];

let provider: OidcProvider;

beforeAll(async () => {
  provider = await startOidcProvider();
});

afterAll(async () => {
  await provider.stop();
});

function optionsFor(p: OidcProvider, overrides: Partial<OidcOptions> = {}): OidcOptions {
  return {
    issuer: p.issuer,
    audience: p.audience,
    userClaim: 'preferred_username',
    groupsClaim: 'groups',
    algorithms: ['RS256', 'ES256'],
    clockToleranceSec: 30,
    jwksCacheMaxAgeMs: 600_000,
    jwksCooldownMs: 30_000,
    timeoutMs: 2_000,
    ...overrides,
  };
}

function verifierFor(
  p: OidcProvider,
  overrides: Partial<OidcOptions> = {},
  retryAfterFailureMs = 5_000,
): OidcVerifier {
  return new OidcVerifier(optionsFor(p, overrides), DENIED, { retryAfterFailureMs });
}

function reasonOf(result: OidcResult): string {
  if (result.ok) throw new Error(`expected a refusal, got the user ${result.user}`);
  return result.reason;
}

/** A refusal that is the token's fault (401), not the provider's (503). */
function refusal(result: OidcResult): string {
  expect(result).toMatchObject({ ok: false });
  expect(result).not.toHaveProperty('unavailable', true);
  return reasonOf(result);
}

function unavailability(result: OidcResult): string {
  expect(result).toMatchObject({ ok: false, unavailable: true });
  return reasonOf(result);
}

function encodeJson(value: unknown): string {
  return base64url.encode(JSON.stringify(value));
}

const now = (): number => Math.floor(Date.now() / 1000);

describe('a token from the provider', () => {
  it('maps to its user, groups, issuer and subject', async () => {
    const verifier = verifierFor(provider);
    const jwt = await provider.sign({
      sub: 'f3a1-77',
      preferred_username: 'alice',
      groups: ['lab', 7, 'hpc'],
    });
    expect(await verifier.verify(jwt)).toEqual({
      ok: true,
      user: 'alice',
      groups: ['lab', 'hpc'],
      issuer: provider.issuer,
      subject: 'f3a1-77',
    });
  });

  it('takes a groups claim that is one string, and none as no groups', async () => {
    const verifier = verifierFor(provider, { groupsClaim: 'roles' });
    const one = await verifier.verify(
      await provider.sign({ sub: 's', preferred_username: 'bob', roles: 'lab' }),
    );
    expect(one).toMatchObject({ ok: true, user: 'bob', groups: ['lab'] });
    const none = await verifier.verify(
      await provider.sign({ sub: 's', preferred_username: 'bob', groups: ['lab'] }),
    );
    expect(none).toMatchObject({ ok: true, user: 'bob', groups: [] });
  });

  it('verifies an ES256 token when the JWKS holds an EC key too', async () => {
    const p = await startOidcProvider({ alg: 'ES256' });
    try {
      const result = await verifierFor(p).verify(await p.sign({ sub: 's', preferred_username: 'erin' }));
      expect(result).toMatchObject({ ok: true, user: 'erin' });
    } finally {
      await p.stop();
    }
  });

  it('maps an e-mail claim through userPattern: its capture group, or the whole match', async () => {
    const byGroup = verifierFor(provider, {
      userClaim: 'email',
      userPattern: '^([a-z0-9_-]+)@example\\.org$',
    });
    const good = await provider.sign({ sub: 's', email: 'carol@example.org' });
    expect(await byGroup.verify(good)).toMatchObject({ ok: true, user: 'carol' });

    const elsewhere = await provider.sign({ sub: 's', email: 'carol@example.org.evil.net' });
    expect(refusal(await byGroup.verify(elsewhere))).toBe(
      'the email claim "carol@example.org.evil.net" does not match auth.oidc.userPattern',
    );

    const whole = verifierFor(provider, { userClaim: 'email', userPattern: '^[a-z]+' });
    expect(await whole.verify(good)).toMatchObject({ ok: true, user: 'carol' });
  });

  it('is refused when the user claim is missing or not a string', async () => {
    const verifier = verifierFor(provider);
    expect(refusal(await verifier.verify(await provider.sign({ sub: 's' })))).toBe(
      'the token has no preferred_username claim (auth.oidc.userClaim)',
    );
    expect(
      refusal(await verifier.verify(await provider.sign({ sub: 's', preferred_username: ['alice'] }))),
    ).toMatch(/preferred_username claim is not a string/);
  });

  it('is refused when it names an invalid or a denied user name', async () => {
    const verifier = verifierFor(provider);
    for (const name of ['Alice', '../etc', 'a b', '', '-x', 'x'.repeat(33), 'bob;id']) {
      const jwt = await provider.sign({ sub: 's', preferred_username: name });
      expect(refusal(await verifier.verify(jwt))).toMatch(/is not a valid POSIX user name/);
    }
    const root = await provider.sign({ sub: 's', preferred_username: 'root' });
    expect(refusal(await verifier.verify(root))).toBe(
      'the user root may not use this service (identity.denyUsers)',
    );
    const viaPattern = verifierFor(provider, { userClaim: 'email', userPattern: '^(.+)@example\\.org$' });
    const rootByMail = await provider.sign({ sub: 's', email: 'root@example.org' });
    expect(refusal(await viaPattern.verify(rootByMail))).toMatch(/the user root may not use this service/);
  });
});

describe('token validity', () => {
  it('refuses an expired token and says when it expired', async () => {
    const exp = now() - 600;
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice' }, { expiresIn: exp });
    expect(refusal(await verifierFor(provider).verify(jwt))).toBe(
      `the token expired at ${new Date(exp * 1000).toISOString()}`,
    );
  });

  it('accepts a token expired within the clock tolerance', async () => {
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice' }, { expiresIn: now() - 5 });
    expect(await verifierFor(provider, { clockToleranceSec: 30 }).verify(jwt)).toMatchObject({ ok: true });
    expect(refusal(await verifierFor(provider, { clockToleranceSec: 0 }).verify(jwt))).toMatch(/expired/);
  });

  it('refuses a token that is not yet valid (nbf)', async () => {
    const nbf = now() + 600;
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice', nbf }, { expiresIn: nbf + 600 });
    expect(refusal(await verifierFor(provider).verify(jwt))).toBe(
      `the token is not valid before ${new Date(nbf * 1000).toISOString()}`,
    );
  });

  it('refuses a token without exp', async () => {
    const key = await provider.rotate({ keepOld: true });
    const jwt = await new SignJWT({ sub: 's', preferred_username: 'alice' })
      .setProtectedHeader({ alg: key.alg, kid: key.kid })
      .setIssuer(provider.issuer)
      .setAudience(provider.audience)
      .sign(key.privateKey);
    expect(refusal(await verifierFor(provider).verify(jwt))).toBe('the token has no exp claim');
  });

  it('refuses a token for another audience, and accepts any of several configured ones', async () => {
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice' }, { audience: 'other-client' });
    expect(refusal(await verifierFor(provider).verify(jwt))).toBe(
      `the token's audience (aud) "other-client" does not include ${provider.audience}`,
    );
    const several = verifierFor(provider, { audience: ['tes-other', 'other-client'] });
    expect(await several.verify(jwt)).toMatchObject({ ok: true });
  });

  it('refuses a token from another issuer, even when the provider signed it', async () => {
    const jwt = await provider.sign(
      { sub: 's', preferred_username: 'alice' },
      { issuer: 'https://idp.example.org/realms/x' },
    );
    expect(refusal(await verifierFor(provider).verify(jwt))).toBe(
      `the token's issuer (iss) "https://idp.example.org/realms/x" is not ${provider.issuer}`,
    );
  });
});

describe('signatures and algorithms', () => {
  it('refuses alg none without asking the provider', async () => {
    const verifier = verifierFor(provider);
    const before = { ...provider.requests };
    const payload = {
      sub: 's',
      preferred_username: 'alice',
      iss: provider.issuer,
      aud: provider.audience,
      exp: now() + 300,
    };
    const unsigned = `${encodeJson({ alg: 'none' })}.${encodeJson(payload)}.`;
    expect(refusal(await verifier.verify(unsigned))).toBe(
      `the token's algorithm "none" is not allowed (auth.oidc.algorithms: RS256, ES256)`,
    );
    expect(provider.requests).toEqual(before);
  });

  it('refuses HS256, even keyed with the provider kid', async () => {
    const jwt = await new SignJWT({ sub: 's', preferred_username: 'alice' })
      .setProtectedHeader({ alg: 'HS256', kid: provider.currentKid })
      .setIssuer(provider.issuer)
      .setAudience(provider.audience)
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode('a shared secret of thirty-two bytes!'));
    expect(refusal(await verifierFor(provider).verify(jwt))).toMatch(/algorithm "HS256" is not allowed/);
  });

  it('refuses an algorithm the configuration leaves out', async () => {
    const ec = await provider.rotate({ keepOld: true, alg: 'ES256' });
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice' }, { kid: ec.kid });
    expect(await verifierFor(provider).verify(jwt)).toMatchObject({ ok: true });
    expect(refusal(await verifierFor(provider, { algorithms: ['RS256'] }).verify(jwt))).toMatch(
      /algorithm "ES256" is not allowed \(auth\.oidc\.algorithms: RS256\)/,
    );
    await provider.rotate({ keepOld: true, alg: 'RS256' });
  });

  it('refuses a token signed by a key the JWKS does not hold', async () => {
    const verifier = verifierFor(provider);
    const stranger = await provider.foreignKey();
    const unknownKid = await provider.sign({ sub: 's', preferred_username: 'alice' }, { key: stranger });
    expect(refusal(await verifier.verify(unknownKid))).toBe(
      'no key of the identity provider matches the token (its kid and alg)',
    );
    const borrowedKid = await provider.sign(
      { sub: 's', preferred_username: 'alice' },
      { key: { ...stranger, kid: provider.currentKid } },
    );
    expect(refusal(await verifier.verify(borrowedKid))).toBe("the token's signature is invalid");
  });

  it('refuses a token whose payload was changed after signing', async () => {
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice', groups: ['lab'] });
    const [header, payload, signature] = jwt.split('.') as [string, string, string];
    const claims = JSON.parse(new TextDecoder().decode(base64url.decode(payload))) as Record<string, unknown>;
    const forged = `${header}.${encodeJson({ ...claims, groups: ['admins'] })}.${signature}`;
    expect(refusal(await verifierFor(provider).verify(forged))).toBe("the token's signature is invalid");
  });
});

describe('keys', () => {
  it('fetches discovery and keys once for many verifications, concurrent or not', async () => {
    const verifier = verifierFor(provider);
    const before = { ...provider.requests };
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice' });
    const first = await Promise.all(Array.from({ length: 5 }, () => verifier.verify(jwt)));
    for (let i = 0; i < 5; i++) expect(await verifier.verify(jwt)).toMatchObject({ ok: true });
    expect(first.every((r) => r.ok)).toBe(true);
    expect(provider.requests).toEqual({ discovery: before.discovery + 1, jwks: before.jwks + 1 });
  });

  it('follows a rotation: the new kid is fetched at once, the old one is refused', async () => {
    const p = await startOidcProvider();
    try {
      const verifier = verifierFor(p, { jwksCooldownMs: 0 });
      const old = await p.sign({ sub: 's', preferred_username: 'alice' });
      expect(await verifier.verify(old)).toMatchObject({ ok: true });
      expect(p.requests.jwks).toBe(1);

      await p.rotate({ keepOld: false });
      const fresh = await p.sign({ sub: 's', preferred_username: 'alice' });
      expect(await verifier.verify(fresh)).toMatchObject({ ok: true });
      expect(p.requests.jwks).toBe(2);
      expect(refusal(await verifier.verify(old))).toMatch(/no key of the identity provider matches/);
    } finally {
      await p.stop();
    }
  });

  it('drops a retired key once the cached JWKS is older than jwksCacheMaxAgeMs', async () => {
    // EC keys: generating one (the rotation) takes far less than the cache age, unlike RSA.
    const p = await startOidcProvider({ alg: 'ES256' });
    try {
      const verifier = verifierFor(p, { jwksCacheMaxAgeMs: 1_000 });
      const old = await p.sign({ sub: 's', preferred_username: 'alice' });
      expect(await verifier.verify(old)).toMatchObject({ ok: true });
      await p.rotate({ keepOld: false });
      // Still cached: the old key verifies without a fetch.
      expect(await verifier.verify(old)).toMatchObject({ ok: true });
      expect(p.requests.jwks).toBe(1);
      await sleep(1_100);
      expect(refusal(await verifier.verify(old))).toMatch(/no key of the identity provider matches/);
      expect(p.requests.jwks).toBe(2);
    } finally {
      await p.stop();
    }
  });

  it('keeps verifying with both keys while the provider publishes both', async () => {
    const p = await startOidcProvider();
    try {
      const verifier = verifierFor(p, { jwksCooldownMs: 0 });
      const old = await p.sign({ sub: 's', preferred_username: 'alice' });
      expect(await verifier.verify(old)).toMatchObject({ ok: true });
      await p.rotate({ keepOld: true });
      const fresh = await p.sign({ sub: 's', preferred_username: 'alice' });
      expect(await verifier.verify(fresh)).toMatchObject({ ok: true });
      expect(await verifier.verify(old)).toMatchObject({ ok: true });
    } finally {
      await p.stop();
    }
  });

  it('fetches unknown kids at most once per jwksCooldownMs', async () => {
    const p = await startOidcProvider();
    try {
      const verifier = verifierFor(p, { jwksCooldownMs: 60_000 });
      expect(await verifier.verify(await p.sign({ sub: 's', preferred_username: 'alice' }))).toMatchObject({
        ok: true,
      });
      const stranger = await p.foreignKey();
      for (let i = 0; i < 5; i++) {
        const jwt = await p.sign({ sub: 's', preferred_username: 'alice' }, { key: stranger });
        expect(refusal(await verifier.verify(jwt))).toMatch(/no key/);
      }
      expect(p.requests.jwks).toBe(1);
    } finally {
      await p.stop();
    }
  });
});

describe('an unreachable provider', () => {
  it('makes tokens unavailable (not refused) and recovers when the provider is back', async () => {
    const p = await startOidcProvider();
    try {
      const jwt = await p.sign({ sub: 's', preferred_username: 'alice' });
      await p.stop();
      const verifier = verifierFor(p, {}, 300);
      expect(unavailability(await verifier.verify(jwt))).toMatch(
        new RegExp(`^the identity provider at ${p.issuer} cannot be reached: .*ECONNREFUSED`),
      );
      await p.start();
      // Within the retry interval the failure is repeated without asking the provider.
      expect(unavailability(await verifier.verify(jwt))).toMatch(/asked again at most every 300 ms/);
      expect(p.requests.discovery).toBe(0);
      await sleep(350);
      expect(await verifier.verify(jwt)).toMatchObject({ ok: true, user: 'alice' });
      expect(p.requests.discovery).toBe(1);
    } finally {
      await p.stop();
    }
  });

  it('keeps verifying with cached keys while the provider is down', async () => {
    const p = await startOidcProvider();
    const verifier = verifierFor(p);
    const jwt = await p.sign({ sub: 's', preferred_username: 'alice' });
    expect(await verifier.verify(jwt)).toMatchObject({ ok: true });
    await p.stop();
    expect(await verifier.verify(jwt)).toMatchObject({ ok: true });
  });

  it('treats a JWKS that answers 500 as unavailable, and recovers', async () => {
    const p = await startOidcProvider();
    try {
      const verifier = verifierFor(p, {}, 200);
      const jwt = await p.sign({ sub: 's', preferred_username: 'alice' });
      p.jwksMode = 'error';
      expect(unavailability(await verifier.verify(jwt))).toMatch(/fetching its keys failed: Expected 200 OK/);
      expect(unavailability(await verifier.verify(jwt))).toMatch(/asked again at most every 200 ms/);
      expect(p.requests.jwks).toBe(1);
      p.jwksMode = 'ok';
      await sleep(250);
      expect(await verifier.verify(jwt)).toMatchObject({ ok: true });
    } finally {
      await p.stop();
    }
  });

  it('gives up on a JWKS that hangs after timeoutMs', async () => {
    const p = await startOidcProvider();
    try {
      const verifier = verifierFor(p, { timeoutMs: 300 }, 100);
      const jwt = await p.sign({ sub: 's', preferred_username: 'alice' });
      p.jwksMode = 'hang';
      const started = Date.now();
      expect(unavailability(await verifier.verify(jwt))).toMatch(/fetching its keys failed: .*timed out/);
      expect(Date.now() - started).toBeLessThan(2_000);
      p.jwksMode = 'ok';
      await sleep(150);
      expect(await verifier.verify(jwt)).toMatchObject({ ok: true });
    } finally {
      await p.stop();
    }
  });

  it('treats a discovery document for another issuer as unavailable', async () => {
    // The configured issuer has a trailing slash the provider's own issuer lacks.
    const verifier = verifierFor(provider, { issuer: `${provider.issuer}/` });
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice' });
    expect(unavailability(await verifier.verify(jwt))).toMatch(
      /names the issuer ".*\/realms\/test", not .*\/realms\/test\/ \(auth\.oidc\.issuer must match it exactly\)/,
    );
  });
});

describe('transport security', () => {
  it('refuses an http issuer on a host other than loopback', () => {
    expect(() => verifierFor(provider, { issuer: 'http://idp.example.org/realms/x' })).toThrow(
      /the issuer http:\/\/idp\.example\.org\/realms\/x must use https \(plain http is accepted only on loopback/,
    );
    for (const issuer of [
      'https://idp.example.org/realms/x',
      'http://localhost:8080/r',
      'http://127.0.0.9/r',
      'http://[::1]:9/r',
    ]) {
      expect(() => verifierFor(provider, { issuer })).not.toThrow();
    }
  });

  it('refuses a jwks_uri over http on a host other than loopback', async () => {
    const p = await startOidcProvider();
    try {
      p.jwksUri = 'http://keys.example.org/certs';
      const jwt = await p.sign({ sub: 's', preferred_username: 'alice' });
      expect(unavailability(await verifierFor(p).verify(jwt))).toMatch(
        /its jwks_uri http:\/\/keys\.example\.org\/certs must use https/,
      );
    } finally {
      await p.stop();
    }
  });
});

describe('garbage', () => {
  it('refuses any string without throwing', async () => {
    const verifier = verifierFor(provider);
    const jwt = await provider.sign({ sub: 's', preferred_username: 'alice' });
    const [header, payload] = jwt.split('.') as [string, string, string];
    const inputs = [
      '',
      'abc',
      '...',
      'a.b.c',
      'a.b.c.d.e',
      '\u0000.\u0000.\u0000',
      'x'.repeat(20_000),
      `${header}.${payload}`,
      `${header}.${payload}.`,
      `${header}.${payload}.!!!`,
      `${header}.%%%.${'A'.repeat(342)}`,
      `${encodeJson({ alg: 'RS256', kid: provider.currentKid })}.${base64url.encode('null')}.AAAA`,
      `${encodeJson({ alg: 'RS256', kid: 7, crit: ['b64'] })}.${payload}.AAAA`,
      `${encodeJson({ alg: 'RS256', b64: false, crit: ['b64'] })}.${payload}.AAAA`,
      `${encodeJson('RS256')}.${payload}.AAAA`,
      `${encodeJson({ alg: ['RS256'] })}.${payload}.AAAA`,
      `${encodeJson({ alg: 'RS256', kid: { $ne: 1 } })}.${payload}.AAAA`,
      `${encodeJson({ alg: 'RS256', jwk: { kty: 'oct', k: 'AAAA' } })}.${payload}.AAAA`,
      `${encodeJson({ alg: 'RS256' })}.${encodeJson([1, 2, 3])}.AAAA`,
      `${header}.${encodeJson({ sub: 's' })}.${'A'.repeat(342)}`,
    ];
    for (let i = 0; i < 100; i++) {
      const parts = Array.from({ length: 1 + (i % 5) }, () =>
        randomBytes(i % 40).toString(i % 2 ? 'base64url' : 'latin1'),
      );
      inputs.push(parts.join('.'));
    }
    for (const input of inputs) {
      const result = await verifier.verify(input);
      expect(refusal(result)).toMatch(/^(the token|no key|several keys)/);
    }
    expect(refusal(await verifier.verify(undefined as unknown as string))).toBe('the token is empty');
  });
});

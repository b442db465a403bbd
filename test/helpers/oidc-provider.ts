import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

/**
 * A real OpenID provider for tests, on 127.0.0.1: it serves the discovery document and the JWKS
 * over HTTP and signs tokens with keys it made with jose. Its keys rotate on request, its JWKS can
 * answer 500 or hang, and it can stop and start again on the same port (an outage and a recovery).
 */

export type SigningAlg = 'RS256' | 'ES256';

export interface SigningKey {
  kid: string;
  alg: SigningAlg;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export interface SignOptions {
  /** The key to sign with (by kid); the current key when left out. */
  kid?: string;
  /** The newest published key of this algorithm. */
  alg?: SigningAlg;
  /** Any key, published or not (foreignKey() makes one the JWKS never lists). */
  key?: SigningKey;
  /** jose's expiration time: `'5m'`, `'-1m'`, or seconds since the epoch. Default `'5m'`. */
  expiresIn?: string | number;
  issuer?: string;
  audience?: string | string[];
}

export type JwksMode = 'ok' | 'error' | 'hang';

export interface OidcProvider {
  /** http://127.0.0.1:PORT/realms/test, as tokens and the discovery document name it. */
  issuer: string;
  jwksUri: string;
  /** The audience tokens carry unless told otherwise. */
  audience: string;
  /** The kid new tokens are signed with. */
  currentKid: string;
  /** Requests the provider has answered (or hung) since it started, by kind. */
  requests: { discovery: number; jwks: number };
  /** How the JWKS endpoint answers: keys, HTTP 500, or never. */
  jwksMode: JwksMode;
  sign(claims: JWTPayload, options?: SignOptions): Promise<string>;
  /** A key of `alg` that the JWKS never publishes (for tokens from an impostor). */
  foreignKey(alg?: SigningAlg): Promise<SigningKey>;
  /** Adds a new current key; the old one stays in the JWKS only when `keepOld`. */
  rotate(options: { keepOld: boolean; alg?: SigningAlg }): Promise<SigningKey>;
  /** Stops answering (connections refused) until start(). */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
}

let keyCounter = 0;

export async function makeSigningKey(alg: SigningAlg): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `key-${++keyCounter}-${alg.toLowerCase()}`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicJwk };
}

export async function startOidcProvider(
  options: { alg?: SigningAlg; audience?: string; realm?: string } = {},
): Promise<OidcProvider> {
  const published: SigningKey[] = [await makeSigningKey(options.alg ?? 'RS256')];
  const allKeys = new Map<string, SigningKey>(published.map((k) => [k.kid, k]));
  const hung = new Set<ServerResponse>();
  let port = 0;
  let server: Server | undefined;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === `/realms/${realm}/.well-known/openid-configuration`) {
      provider.requests.discovery++;
      json(res, 200, {
        issuer: provider.issuer,
        jwks_uri: provider.jwksUri,
        authorization_endpoint: `${provider.issuer}/protocol/openid-connect/auth`,
        token_endpoint: `${provider.issuer}/protocol/openid-connect/token`,
        id_token_signing_alg_values_supported: ['RS256', 'ES256'],
      });
      return;
    }
    if (path === `/realms/${realm}/protocol/openid-connect/certs`) {
      provider.requests.jwks++;
      switch (provider.jwksMode) {
        case 'ok':
          json(res, 200, { keys: published.map((k) => k.publicJwk) });
          return;
        case 'error':
          json(res, 500, { error: 'server_error' });
          return;
        case 'hang':
          hung.add(res);
          res.once('close', () => hung.delete(res));
          return;
      }
    }
    json(res, 404, { error: 'not_found' });
  };

  const listen = async (): Promise<void> => {
    const next = createServer(handle);
    await new Promise<void>((resolve, reject) => {
      next.once('error', reject);
      next.listen(port, '127.0.0.1', () => resolve());
    });
    port = (next.address() as AddressInfo).port;
    server = next;
  };

  const realm = options.realm ?? 'test';
  await listen();
  const issuer = `http://127.0.0.1:${port}/realms/${realm}`;

  const provider: OidcProvider = {
    issuer,
    jwksUri: `${issuer}/protocol/openid-connect/certs`,
    audience: options.audience ?? 'tes-gateway',
    currentKid: published[0]!.kid,
    requests: { discovery: 0, jwks: 0 },
    jwksMode: 'ok',

    async sign(claims, signOptions = {}) {
      const key =
        signOptions.key ??
        (signOptions.alg
          ? published.findLast((k) => k.alg === signOptions.alg)
          : allKeys.get(signOptions.kid ?? provider.currentKid));
      if (!key) throw new Error(`the test provider has no key ${signOptions.kid ?? signOptions.alg}`);
      return new SignJWT(claims)
        .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
        .setIssuer(signOptions.issuer ?? provider.issuer)
        .setAudience(signOptions.audience ?? provider.audience)
        .setIssuedAt()
        .setExpirationTime(signOptions.expiresIn ?? '5m')
        .sign(key.privateKey);
    },

    foreignKey: (alg = 'RS256') => makeSigningKey(alg),

    async rotate({ keepOld, alg }) {
      const key = await makeSigningKey(alg ?? options.alg ?? 'RS256');
      if (!keepOld) published.length = 0;
      published.push(key);
      allKeys.set(key.kid, key);
      provider.currentKid = key.kid;
      return key;
    },

    async stop() {
      const current = server;
      server = undefined;
      if (!current) return;
      for (const res of hung) res.destroy();
      current.closeAllConnections();
      await new Promise<void>((resolve, reject) => current.close((err) => (err ? reject(err) : resolve())));
    },

    start: listen,
  };
  return provider;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res
    .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
    .end(text);
}

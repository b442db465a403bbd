import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HttpFetcher, type HttpFetcherOptions } from '../../src/staging/http-fetcher.js';
import { StagingError } from '../../src/staging/staging-error.js';
import { failure } from '../helpers/failure.js';

/**
 * http(s) inputs cannot make the gateway reach its own host or private networks: a real server on
 * 127.0.0.1 stands for Redis, a metadata service or an intranet page, and one on 127.0.0.2 for an
 * intranet data server a site allows. Each refusal must happen before the server sees a request.
 */

const BODY = 'private data\n';
const requests: string[] = [];
let server: Server;
let relay: Server;
let port: number;
let relayPort: number;
let dir: string;

const options: HttpFetcherOptions = {
  maxBytes: 1024 * 1024,
  timeoutMs: 10_000,
  stallTimeoutMs: 2_000,
  attempts: 2,
  backoffMs: 10,
};

function fetcher(allowedPrivateNetworks?: string[]): HttpFetcher {
  return new HttpFetcher({ ...options, allowedPrivateNetworks });
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const ADVICE =
  'the gateway does not download from loopback, link-local or private addresses unless ' +
  'storage.http.allowedPrivateNetworks lists the network or the host name';

/** A server on `host`: /data answers BODY, /to?url=U redirects to U. */
async function listen(host: string): Promise<[Server, number]> {
  const s = createServer((req, res) => {
    requests.push(`${host}${req.url ?? ''}`);
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/data') res.end(BODY);
    else if (url.pathname === '/to') res.writeHead(302, { location: url.searchParams.get('url')! }).end();
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => s.listen(0, host, resolve));
  return [s, (s.address() as AddressInfo).port];
}

async function close(s: Server): Promise<void> {
  s.closeAllConnections();
  await new Promise<void>((resolve) => s.close(() => resolve()));
}

beforeAll(async () => {
  [server, port] = await listen('127.0.0.1');
  [relay, relayPort] = await listen('127.0.0.2');
});
afterAll(async () => {
  await close(server);
  await close(relay);
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tesgw-ssrf-'));
  requests.length = 0;
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('http inputs and private addresses', () => {
  it('refuses a loopback address by default, naming the field, the URL, the address and the setting', async () => {
    const url = `http://127.0.0.1:${port}/data`;
    const err = await failure(fetcher().fetch(url, join(dir, 'data'), 'FILE', 'inputs[2]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toBe(`inputs[2]: cannot download ${url}: 127.0.0.1 (loopback): ${ADVICE}`);
    expect(requests).toEqual([]);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a host name that resolves to a loopback address', async () => {
    const url = `http://localhost:${port}/data`;
    const err = await failure(fetcher().fetch(url, join(dir, 'data'), 'FILE', 'inputs[0]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(
      /^inputs\[0\]: cannot download http:\/\/localhost:\d+\/data: localhost resolves to (127\.0\.0\.1|::1) \(loopback\): /,
    );
    expect(requests).toEqual([]);
  });

  it.each([
    ['IPv4-mapped IPv6', '[::ffff:127.0.0.1]', '::ffff:7f00:1 (loopback)'],
    ['IPv6 loopback', '[::1]', '::1 (loopback)'],
    ['the unspecified address', '0.0.0.0', '0.0.0.0 (unspecified ("this network", 0.0.0.0/8))'],
    ['a decimal IPv4 address', '2130706433', '127.0.0.1 (loopback)'],
    [
      'cloud metadata',
      '169.254.169.254',
      '169.254.169.254 (link-local (where cloud metadata services answer))',
    ],
    ['an RFC 1918 address', '10.0.0.1', '10.0.0.1 (private (RFC 1918))'],
  ])('refuses %s (%s) without connecting', async (_what, host, shown) => {
    const url = `http://${host}:${port}/data`;
    const err = await failure(fetcher().fetch(url, join(dir, 'data'), 'FILE', 'inputs[0]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toContain(`: ${shown}: ${ADVICE}`);
    expect(requests).toEqual([]);
  });

  it('refuses a redirect from an allowed server to a loopback address, by address or by name', async () => {
    const allowed = fetcher(['127.0.0.2/32']);
    for (const target of [`http://127.0.0.1:${port}/data`, `http://localhost:${port}/data`]) {
      const url = `http://127.0.0.2:${relayPort}/to?url=${encodeURIComponent(target)}`;
      const err = await failure(allowed.fetch(url, join(dir, 'data'), 'FILE', 'inputs[1]'));
      expect(err).toBeInstanceOf(StagingError);
      expect(err.message).toMatch(
        new RegExp(
          `^inputs\\[1\\]: cannot download ${escape(url)}: redirected to ${escape(target)}: ` +
            `(localhost resolves to )?(127\\.0\\.0\\.1|::1) \\(loopback\\): ${escape(ADVICE)}$`,
        ),
      );
    }
    expect(requests.filter((r) => r.startsWith('127.0.0.1'))).toEqual([]);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a redirect to another scheme', async () => {
    const url = `http://127.0.0.2:${relayPort}/to?url=${encodeURIComponent('file:///etc/passwd')}`;
    const err = await failure(fetcher(['127.0.0.2']).fetch(url, join(dir, 'data'), 'FILE', 'inputs[0]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toBe(`inputs[0]: cannot download ${url}: redirected to an unsupported file: URL`);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('downloads from a network or host the allowlist names', async () => {
    await fetcher(['127.0.0.0/8']).fetch(`http://127.0.0.1:${port}/data`, join(dir, 'a'), 'FILE', 'i');
    await fetcher(['localhost']).fetch(`http://localhost:${port}/data`, join(dir, 'b'), 'FILE', 'i');
    const hop = `http://localhost:${port}/to?url=${encodeURIComponent(`http://127.0.0.1:${port}/data`)}`;
    await fetcher(['127.0.0.1', 'localhost']).fetch(hop, join(dir, 'c'), 'FILE', 'i');
    for (const f of ['a', 'b', 'c']) expect(readFileSync(join(dir, f), 'utf8')).toBe(BODY);
  });
});

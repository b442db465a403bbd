import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { DownloadBudget } from '../../src/staging/download-budget.js';
import { HttpFetcher, type HttpFetcherOptions } from '../../src/staging/http-fetcher.js';
import { redactUrl } from '../../src/staging/url-redaction.js';
import { stageInputs } from '../../src/staging/stage-inputs.js';
import { StagingError } from '../../src/staging/staging-error.js';
import { failure } from '../helpers/failure.js';

/**
 * HttpFetcher against a real Node HTTP server on 127.0.0.1: bodies, retries, limits, the task's
 * download budget, timeouts, secrets. Loopback is refused by default (test/integration/ssrf.test.ts),
 * so these fetchers allow it.
 */
jest.setTimeout(20_000);

const small = randomBytes(100 * 1024);
const large = randomBytes(1536 * 1024);
const hits = new Map<string, number>();
const seen: Array<{ url: string; authorization: string | undefined }> = [];
let server: Server;
let base: string;
let dir: string;

function hit(key: string): number {
  const n = (hits.get(key) ?? 0) + 1;
  hits.set(key, n);
  return n;
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x');
  seen.push({ url: req.url ?? '', authorization: req.headers.authorization });
  const id = url.searchParams.get('id') ?? '';
  switch (url.pathname) {
    case '/small.bin':
      res.writeHead(200, { 'content-length': small.length }).end(small);
      return;
    case '/large.bin': {
      // Chunked, no Content-Length, in 64 KiB writes that respect backpressure.
      res.writeHead(200);
      let offset = 0;
      const write = (): void => {
        while (offset < large.length) {
          const chunk = large.subarray(offset, offset + 64 * 1024);
          offset += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', write);
        }
        res.end();
      };
      write();
      return;
    }
    case '/flaky':
      if (hit(`flaky${id}`) === 1) res.writeHead(503).end('busy');
      else res.writeHead(200, { 'content-length': small.length }).end(small);
      return;
    case '/throttled':
      if (hit(`throttled${id}`) === 1) res.writeHead(429, { 'retry-after': '1' }).end();
      else res.writeHead(200, { 'content-length': 2 }).end('ok');
      return;
    case '/truncated':
      if (hit(`truncated${id}`) === 1) {
        res.writeHead(200, { 'content-length': small.length });
        res.write(small.subarray(0, 1000));
        setTimeout(() => res.destroy(), 20);
      } else {
        res.writeHead(200, { 'content-length': small.length }).end(small);
      }
      return;
    case '/always-503':
      res.writeHead(503).end();
      return;
    case '/redirect':
      res.writeHead(302, { location: '/small.bin' }).end();
      return;
    case '/missing':
      res.writeHead(404).end('no such file');
      return;
    case '/forbidden':
      res.writeHead(403).end(`echo of your request: ${req.url}`);
      return;
    case '/huge-announced':
      res.writeHead(200, { 'content-length': 4096 }).end(Buffer.alloc(4096));
      return;
    case '/huge-chunked':
      res.writeHead(200);
      res.write(Buffer.alloc(1024));
      res.write(Buffer.alloc(1024));
      res.end(Buffer.alloc(2048));
      return;
    case '/stall':
      // Headers and a few bytes, then silence with the connection held open.
      res.writeHead(200, { 'content-length': 10_000 });
      res.write(Buffer.alloc(100));
      return;
    case '/trickle': {
      res.writeHead(200);
      const timer = setInterval(() => res.write('x'), 50);
      res.on('close', () => clearInterval(timer));
      return;
    }
    default:
      res.writeHead(404).end();
  }
}

const defaults: HttpFetcherOptions = {
  maxBytes: 10 * 1024 * 1024,
  timeoutMs: 10_000,
  stallTimeoutMs: 2_000,
  attempts: 3,
  backoffMs: 20,
  allowedPrivateNetworks: ['127.0.0.0/8'],
};

function fetcher(over: Partial<HttpFetcherOptions> = {}): HttpFetcher {
  return new HttpFetcher({ ...defaults, ...over });
}

beforeAll(async () => {
  server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tesgw-http-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('HttpFetcher', () => {
  it('downloads a file byte for byte', async () => {
    const dest = join(dir, 'data');
    await fetcher().fetch(`${base}/small.bin`, dest, 'FILE', 'inputs[0]');
    expect(readFileSync(dest).equals(small)).toBe(true);
    expect(readdirSync(dir)).toEqual(['data']);
  });

  it('streams a body of more than 1 MiB sent without a Content-Length', async () => {
    const dest = join(dir, 'data');
    await fetcher().fetch(`${base}/large.bin`, dest, 'FILE', 'inputs[0]');
    expect(readFileSync(dest).equals(large)).toBe(true);
  });

  it('follows redirects', async () => {
    const dest = join(dir, 'data');
    await fetcher().fetch(`${base}/redirect`, dest, 'FILE', 'inputs[0]');
    expect(readFileSync(dest).equals(small)).toBe(true);
  });

  it('retries a 503 and then succeeds', async () => {
    const dest = join(dir, 'data');
    await fetcher().fetch(`${base}/flaky?id=a`, dest, 'FILE', 'inputs[0]');
    expect(hits.get('flakya')).toBe(2);
    expect(readFileSync(dest).equals(small)).toBe(true);
  });

  it('waits as long as Retry-After asks after a 429', async () => {
    const dest = join(dir, 'data');
    const started = Date.now();
    await fetcher().fetch(`${base}/throttled?id=a`, dest, 'FILE', 'inputs[0]');
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(readFileSync(dest, 'utf8')).toBe('ok');
  });

  it('caps a long Retry-After at maxDelayMs', async () => {
    const started = Date.now();
    await fetcher({ maxDelayMs: 100 }).fetch(`${base}/throttled?id=b`, join(dir, 'data'), 'FILE', 'i');
    expect(Date.now() - started).toBeLessThan(900);
  });

  it('retries a body cut short of its Content-Length', async () => {
    const dest = join(dir, 'data');
    await fetcher().fetch(`${base}/truncated?id=a`, dest, 'FILE', 'inputs[0]');
    expect(hits.get('truncateda')).toBe(2);
    expect(readFileSync(dest).equals(small)).toBe(true);
  });

  it('fails a 404 at once with a StagingError naming the field and the URL', async () => {
    const before = seen.length;
    const err = await failure(fetcher().fetch(`${base}/missing`, join(dir, 'data'), 'FILE', 'inputs[3]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toBe(`inputs[3]: cannot download ${base}/missing: HTTP 404 Not Found`);
    expect(seen.length - before).toBe(1);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('gives up on a lasting 503 with a plain Error after every attempt', async () => {
    const before = seen.length;
    const err = await failure(fetcher().fetch(`${base}/always-503`, join(dir, 'data'), 'FILE', 'inputs[0]'));
    expect(err).not.toBeInstanceOf(StagingError);
    expect(err.message).toBe(
      `inputs[0]: cannot download ${base}/always-503 after 3 attempts: HTTP 503 Service Unavailable`,
    );
    expect(seen.length - before).toBe(3);
  });

  it('refuses a body whose Content-Length is over maxBytes and leaves no file', async () => {
    const before = seen.length;
    const err = await failure(
      fetcher({ maxBytes: 1024 }).fetch(`${base}/huge-announced`, join(dir, 'data'), 'FILE', 'inputs[1]'),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^inputs\[1\]: .*announces 4096 bytes, more than the limit of 1024/);
    expect(seen.length - before).toBe(1);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('aborts a body without Content-Length once it passes maxBytes and leaves no file', async () => {
    const err = await failure(
      fetcher({ maxBytes: 1500 }).fetch(`${base}/huge-chunked`, join(dir, 'data'), 'FILE', 'inputs[1]'),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^inputs\[1\]: .*larger than the limit of 1500 bytes/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('abandons a stalled download after stallTimeoutMs, retries, and leaves no file', async () => {
    const started = Date.now();
    const err = await failure(
      fetcher({ stallTimeoutMs: 300, attempts: 2 }).fetch(
        `${base}/stall`,
        join(dir, 'data'),
        'FILE',
        'inputs[0]',
      ),
    );
    expect(err).not.toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^inputs\[0\]: cannot download .* after 2 attempts: no data for 300 ms/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('stops a download that trickles past timeoutMs', async () => {
    const err = await failure(
      fetcher({ timeoutMs: 600, stallTimeoutMs: 300 }).fetch(
        `${base}/trickle`,
        join(dir, 'data'),
        'FILE',
        'i',
      ),
    );
    expect(err.message).toMatch(/after 1 attempt: not finished within 600 ms/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses DIRECTORY inputs', async () => {
    const err = await failure(
      fetcher().fetch(`${base}/small.bin`, join(dir, 'data'), 'DIRECTORY', 'inputs[2]'),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^inputs\[2\]: .* cannot be a DIRECTORY input: plain HTTP cannot list/);
  });

  it('sends userinfo as Basic auth but never shows credentials in a permanent error', async () => {
    const host = base.slice('http://'.length);
    const url =
      `http://alice:hunter2pw@${host}/forbidden?X-Amz-Credential=AKIDSECRETID%2F20250101&` +
      `X-Amz-Signature=abc123sig&token=tok456xyz&keep=1`;
    const before = seen.length;
    const err = await failure(fetcher().fetch(url, join(dir, 'data'), 'FILE', 'inputs[0]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(seen[before]!.authorization).toBe(`Basic ${Buffer.from('alice:hunter2pw').toString('base64')}`);
    expect(seen[before]!.url).not.toContain('hunter2pw');
    for (const secret of ['alice', 'hunter2pw', 'AKIDSECRETID', 'abc123sig', 'tok456xyz']) {
      expect(err.message).not.toContain(secret);
    }
    expect(err.message).toBe(
      `inputs[0]: cannot download http://***@${host}/forbidden?X-Amz-Credential=***&` +
        `X-Amz-Signature=***&token=***&keep=1: HTTP 403 Forbidden`,
    );
  });

  it('never shows credentials in a transient error either', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const url = `http://user:pass-s3cret@127.0.0.1:${port}/f?X-Amz-Signature=abc&sig=azuresig99`;
    const err = await failure(fetcher({ attempts: 2 }).fetch(url, join(dir, 'data'), 'FILE', 'inputs[0]'));
    expect(err).not.toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(err.message).toContain(`http://***@127.0.0.1:${port}/f?X-Amz-Signature=***&sig=***`);
    for (const secret of ['pass-s3cret', 'azuresig99', 'abc&']) expect(err.message).not.toContain(secret);
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });
});

describe('the task download budget', () => {
  const budget = (maxDownloadBytes: number) => new DownloadBudget({ maxDownloadBytes, maxListedObjects: 10 });

  it('refuses a body whose Content-Length is over what the task has left, before reading it', async () => {
    const err = await failure(
      fetcher().fetch(`${base}/huge-announced`, join(dir, 'data'), 'FILE', 'inputs[1]', budget(4095)),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toBe(
      `inputs[1]: cannot download ${base}/huge-announced: 4096 more bytes would take the task's ` +
        `downloads past their budget of 4095 bytes (storage.maxTaskDownloadBytes)`,
    );
    expect(readdirSync(dir)).toEqual([]);
  });

  it('stops a body without Content-Length once it passes the budget, and leaves no file', async () => {
    const err = await failure(
      fetcher().fetch(`${base}/huge-chunked`, join(dir, 'data'), 'FILE', 'inputs[0]', budget(1500)),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(
      /^inputs\[0\]: cannot download .*: the task's downloads pass their budget of 1500 bytes \(storage\.maxTaskDownloadBytes\)$/,
    );
    expect(readdirSync(dir)).toEqual([]);
  });

  it('counts a retried download once', async () => {
    // The first try breaks off after 1,000 bytes; the second brings the whole file.
    const dest = join(dir, 'data');
    await fetcher().fetch(`${base}/truncated?id=budget`, dest, 'FILE', 'inputs[0]', budget(small.length));
    expect(hits.get('truncatedbudget')).toBe(2);
    expect(readFileSync(dest).equals(small)).toBe(true);
  });

  it("sums all of a task's inputs: each fits, together they do not", async () => {
    const deps = {
      roots: new AllowedRoots([]),
      fetchers: [fetcher()],
      parallel: 1,
      limits: { maxDownloadBytes: small.length + 1000, maxListedObjects: 10 },
    };
    const one = [{ path: '/in/a', url: `${base}/small.bin` }];
    await stageInputs(one, join(dir, 'one'), deps);
    const two = [...one, { path: '/in/b', url: `${base}/small.bin?copy=2` }];
    const err = await failure(stageInputs(two, join(dir, 'two'), deps));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^inputs\[1\]: .*budget of 103400 bytes \(storage\.maxTaskDownloadBytes\)$/);
  });
});

describe('redactUrl', () => {
  it('keeps URLs without credentials as written', () => {
    expect(redactUrl('https://example.org/a%20b/c.txt?x=1&y=2')).toBe(
      'https://example.org/a%20b/c.txt?x=1&y=2',
    );
  });

  it('hides userinfo, signature and token parameters, and drops the fragment', () => {
    expect(
      redactUrl(
        'https://u:p@bucket.s3.amazonaws.com/k?X-Amz-Security-Token=t&X-Goog-Signature=s&api_key=k&v=2#frag',
      ),
    ).toBe(
      'https://***@bucket.s3.amazonaws.com/k?X-Amz-Security-Token=***&X-Goog-Signature=***&api_key=***&v=2',
    );
  });
});

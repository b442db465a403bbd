import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { OutputDeliverer } from '../../src/staging/deliver-outputs.js';
import { DownloadBudget } from '../../src/staging/download-budget.js';
import { HttpFetcher } from '../../src/staging/http-fetcher.js';
import { S3Storage, type S3StorageOptions } from '../../src/staging/s3-storage.js';
import { stageInputs } from '../../src/staging/stage-inputs.js';
import { StagingError } from '../../src/staging/staging-error.js';
import { S3_KEY_ID, S3_SECRET, startS3Server, type S3Server } from '../helpers/s3-server.js';
import { failure } from '../helpers/failure.js';

/**
 * S3Storage against s3rver, a real S3-compatible server from npm, in a child process on 127.0.0.1 with
 * path-style addressing. It runs with --openssl-legacy-provider because s3rver makes its
 * ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only has there: without it any listing
 * of more than 1,000 objects fails with a 500. s3rver checks the access key id but not SigV4
 * signatures, so a wrong secret alone is not refused; an unknown key id is.
 */
jest.setTimeout(60_000);

const BUCKET = 'tesgw-staging';
const KEY_ID = S3_KEY_ID;
const SECRET = S3_SECRET;

let server: S3Server;
let endpoint: string;
let admin: S3Client;
let dir: string;

function storage(over: Partial<S3StorageOptions> = {}): S3Storage {
  return new S3Storage({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    accessKeyId: KEY_ID,
    secretAccessKey: SECRET,
    maxAttempts: 2,
    ...over,
  });
}

async function put(key: string, body: Buffer | string): Promise<void> {
  const ContentLength = Buffer.byteLength(body);
  await admin.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body, ContentLength }));
}

async function get(key: string): Promise<{ bytes: Buffer; length: number | undefined }> {
  const res = await admin.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return { bytes: Buffer.from(await res.Body!.transformToByteArray()), length: res.ContentLength };
}

/** Every file and folder below `root`, relative, sorted; folders end with `/`. */
function tree(root: string, prefix = ''): string[] {
  return readdirSync(join(root, prefix), { withFileTypes: true })
    .flatMap((e) => {
      const rel = prefix ? `${prefix}/${e.name}` : e.name;
      return e.isDirectory() ? [`${rel}/`, ...tree(root, rel)] : [rel];
    })
    .sort();
}

beforeAll(async () => {
  server = await startS3Server();
  endpoint = server.endpoint;
  admin = server.admin;
  await server.createBucket(BUCKET);
});
afterAll(async () => {
  await server?.close();
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tesgw-s3-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('S3Storage inputs', () => {
  it('downloads a FILE input byte for byte, its key taken as written', async () => {
    const body = randomBytes(300 * 1024);
    await put('inputs/with space/a+b%20.bin', body);
    const dest = join(dir, 'data');
    await storage().fetch(`s3://${BUCKET}/inputs/with space/a+b%20.bin`, dest, 'FILE', 'inputs[0]');
    expect(readFileSync(dest).equals(body)).toBe(true);
    expect(readdirSync(dir)).toEqual(['data']);
  });

  it('downloads a DIRECTORY input with nested objects and folder markers, and nothing beside it', async () => {
    await put('tree/a.txt', 'a');
    await put('tree/sub/b.txt', 'bb');
    await put('tree/sub/deeper/c.bin', Buffer.from([0, 1, 2, 255]));
    await put('tree/empty/', '');
    await put('treeish/not-mine.txt', 'x');
    const dest = join(dir, 'data');
    await storage().fetch(`s3://${BUCKET}/tree`, dest, 'DIRECTORY', 'inputs[1]');
    expect(tree(dest)).toEqual(['a.txt', 'empty/', 'sub/', 'sub/b.txt', 'sub/deeper/', 'sub/deeper/c.bin']);
    expect(readFileSync(join(dest, 'sub/deeper/c.bin'))).toEqual(Buffer.from([0, 1, 2, 255]));
    // A second download (a retried submission) replaces the folder rather than failing on it.
    await put('tree/sub/b.txt', 'new');
    await storage().fetch(`s3://${BUCKET}/tree/`, dest, 'DIRECTORY', 'inputs[1]');
    expect(readFileSync(join(dest, 'sub/b.txt'), 'utf8')).toBe('new');
    expect(readdirSync(dir)).toEqual(['data']);
  });

  it('downloads a DIRECTORY input of more than one listing page (1,000 objects)', async () => {
    const keys = Array.from({ length: 1005 }, (_, i) => `many/${String(i).padStart(4, '0')}.txt`);
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(keys.slice(i, i + 50).map((k) => put(k, k)));
    }
    const dest = join(dir, 'data');
    await storage({ parallel: 16 }).fetch(`s3://${BUCKET}/many`, dest, 'DIRECTORY', 'inputs[0]');
    expect(readdirSync(dest)).toHaveLength(1005);
    expect(readFileSync(join(dest, '1004.txt'), 'utf8')).toBe('many/1004.txt');
  });

  it('fails a missing key with a permanent StagingError naming the field and URL, without credentials', async () => {
    const err = await failure(
      storage().fetch(`s3://${BUCKET}/nope.txt`, join(dir, 'data'), 'FILE', 'inputs[4]'),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toBe(
      `inputs[4]: cannot download s3://${BUCKET}/nope.txt: NoSuchKey (HTTP 404): the object does not exist`,
    );
    expect(err.message).not.toContain(SECRET);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('fails a missing bucket permanently', async () => {
    const err = await failure(
      storage().fetch('s3://no-such-bucket/x', join(dir, 'data'), 'FILE', 'inputs[0]'),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^inputs\[0\]: cannot download s3:\/\/no-such-bucket\/x: NoSuchBucket/);
  });

  it('refuses a DIRECTORY prefix with no objects, and a FILE URL that names a folder', async () => {
    const empty = await failure(
      storage().fetch(`s3://${BUCKET}/nothing-here`, join(dir, 'd'), 'DIRECTORY', 'i'),
    );
    expect(empty).toBeInstanceOf(StagingError);
    expect(empty.message).toMatch(/has no objects under nothing-here\//);
    const folder = await failure(
      storage().fetch(`s3://${BUCKET}/tree/`, join(dir, 'f'), 'FILE', 'inputs[0]'),
    );
    expect(folder).toBeInstanceOf(StagingError);
    expect(folder.message).toMatch(/names a folder, not an object \(set type DIRECTORY/);
  });

  it('refuses an unknown access key with a clear error that does not show the secret', async () => {
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGKEY';
    const bad = storage({ accessKeyId: 'AKIAUNKNOWN', secretAccessKey: secret });
    const err = await failure(bad.fetch(`s3://${BUCKET}/tree/a.txt`, join(dir, 'data'), 'FILE', 'inputs[0]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(
      /InvalidAccessKeyId \(HTTP 403\): the server does not know the access key id/,
    );
    expect(err.message).not.toContain(secret);
    const up = join(dir, 'up.txt');
    writeFileSync(up, 'x');
    const upErr = await failure(bad.upload(up, `s3://${BUCKET}/up.txt`, 'outputs[0]'));
    expect(upErr).toBeInstanceOf(StagingError);
    expect(upErr.message).not.toContain(secret);
  });

  it('gives up on an unreachable endpoint with a plain Error that does not show the secret', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const err = await failure(
      storage({ endpoint: `http://127.0.0.1:${port}` }).fetch(
        `s3://${BUCKET}/a`,
        join(dir, 'd'),
        'FILE',
        'inputs[0]',
      ),
    );
    expect(err).not.toBeInstanceOf(StagingError);
    expect(err.message).toMatch(
      /^inputs\[0\]: cannot download s3:\/\/tesgw-staging\/a after 2 attempts: .*ECONNREFUSED/,
    );
    expect(err.message).not.toContain(SECRET);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("refuses object keys whose '..' segments would land outside the input folder", async () => {
    // s3rver normalises such keys away, so a stub answers the listing as AWS S3 would.
    const listing =
      '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
      '<Name>b</Name><Prefix>tree/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>' +
      '<Contents><Key>tree/ok.txt</Key><Size>1</Size></Contents>' +
      '<Contents><Key>tree/sub/../../escape.txt</Key><Size>1</Size></Contents></ListBucketResult>';
    const stub: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/xml' }).end(listing);
    });
    await new Promise<void>((resolve) => stub.listen(0, '127.0.0.1', resolve));
    try {
      const port = (stub.address() as AddressInfo).port;
      const s3 = storage({ endpoint: `http://127.0.0.1:${port}` });
      const err = await failure(s3.fetch('s3://b/tree', join(dir, 'data'), 'DIRECTORY', 'inputs[0]'));
      expect(err).toBeInstanceOf(StagingError);
      expect(err.message).toMatch(/"tree\/sub\/..\/..\/escape.txt", whose '..' or '.' segment/);
      expect(existsSync(join(dir, 'escape.txt'))).toBe(false);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      await new Promise<void>((resolve) => stub.close(() => resolve()));
    }
  });
});

describe("S3Storage and the task's download budget", () => {
  const budget = (maxDownloadBytes: number, maxListedObjects = 100) =>
    new DownloadBudget({ maxDownloadBytes, maxListedObjects });

  it('refuses a FILE input larger than what the task has left', async () => {
    await put('budget/big.bin', randomBytes(5000));
    const err = await failure(
      storage().fetch(`s3://${BUCKET}/budget/big.bin`, join(dir, 'data'), 'FILE', 'inputs[0]', budget(4999)),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toBe(
      `inputs[0]: cannot download s3://${BUCKET}/budget/big.bin: 5000 more bytes would take the task's ` +
        `downloads past their budget of 4999 bytes (storage.maxTaskDownloadBytes)`,
    );
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a DIRECTORY input whose listed sizes pass the budget, before downloading any', async () => {
    await put('budget/tree/a.bin', randomBytes(3000));
    await put('budget/tree/b.bin', randomBytes(3000));
    const err = await failure(
      storage().fetch(
        `s3://${BUCKET}/budget/tree`,
        join(dir, 'data'),
        'DIRECTORY',
        'inputs[2]',
        budget(5999),
      ),
    );
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^inputs\[2\]: .*6000 more bytes would take .* budget of 5999 bytes/);
    expect(readdirSync(dir)).toEqual([]);
    await storage().fetch(`s3://${BUCKET}/budget/tree`, join(dir, 'data'), 'DIRECTORY', 'i', budget(6000));
    expect(readdirSync(join(dir, 'data')).sort()).toEqual(['a.bin', 'b.bin']);
  });

  it('stops listing an endless prefix at maxListedObjects', async () => {
    // A stub whose listing never ends, 1,000 objects a page, as a huge bucket would seem.
    let pages = 0;
    const stub: Server = createServer((_req, res) => {
      pages++;
      const contents = Array.from(
        { length: 1000 },
        (_, i) => `<Contents><Key>big/${pages}-${i}</Key><Size>1</Size></Contents>`,
      ).join('');
      res
        .writeHead(200, { 'content-type': 'application/xml' })
        .end(
          '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
            `<Name>b</Name><Prefix>big/</Prefix><KeyCount>1000</KeyCount><MaxKeys>1000</MaxKeys>` +
            `<IsTruncated>true</IsTruncated><NextContinuationToken>t${pages}</NextContinuationToken>` +
            `${contents}</ListBucketResult>`,
        );
    });
    await new Promise<void>((resolve) => stub.listen(0, '127.0.0.1', resolve));
    try {
      const s3 = storage({ endpoint: `http://127.0.0.1:${(stub.address() as AddressInfo).port}` });
      const err = await failure(
        s3.fetch('s3://b/big', join(dir, 'data'), 'DIRECTORY', 'inputs[3]', budget(10 ** 9, 2500)),
      );
      expect(err).toBeInstanceOf(StagingError);
      expect(err.message).toBe(
        'inputs[3]: cannot download s3://b/big: listing stopped after 2500 objects, the limit for one ' +
          "task's DIRECTORY inputs (storage.s3.maxListedObjects)",
      );
      expect(pages).toBe(3);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      await new Promise<void>((resolve) => stub.close(() => resolve()));
    }
  });

  it("shares one budget between a task's http and s3 inputs", async () => {
    await put('budget/half.bin', randomBytes(600));
    const web: Server = createServer((_req, res) => res.end(randomBytes(600)));
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    const http = new HttpFetcher({
      maxBytes: 10_000,
      timeoutMs: 10_000,
      stallTimeoutMs: 2_000,
      attempts: 1,
      backoffMs: 10,
      allowedPrivateNetworks: ['127.0.0.0/8'],
    });
    try {
      const inputs = [
        { path: '/in/a', url: `s3://${BUCKET}/budget/half.bin` },
        { path: '/in/b', url: `http://127.0.0.1:${(web.address() as AddressInfo).port}/half.bin` },
      ];
      const deps = (maxDownloadBytes: number) => ({
        roots: new AllowedRoots([]),
        fetchers: [http, storage()],
        parallel: 1,
        limits: { maxDownloadBytes, maxListedObjects: 10 },
      });
      await stageInputs(inputs, join(dir, 'fits'), deps(1200));
      const err = await failure(stageInputs(inputs, join(dir, 'over'), deps(1199)));
      expect(err).toBeInstanceOf(StagingError);
      expect(err.message).toMatch(/^inputs\[1\]: .*budget of 1199 bytes \(storage\.maxTaskDownloadBytes\)$/);
    } finally {
      http.close();
      web.closeAllConnections();
      await new Promise<void>((resolve) => web.close(() => resolve()));
    }
  });
});

describe('S3Storage outputs', () => {
  it('uploads a file that reads back with the same bytes and size', async () => {
    const body = randomBytes(700 * 1024 + 3);
    const local = join(dir, 'result.bin');
    writeFileSync(local, body);
    await storage().upload(local, `s3://${BUCKET}/results/result.bin`, 'outputs[0]');
    const back = await get('results/result.bin');
    expect(back.length).toBe(body.length);
    expect(back.bytes.equals(body)).toBe(true);
  });

  it('uploads an empty file', async () => {
    const local = join(dir, 'empty');
    writeFileSync(local, '');
    await storage().upload(local, `s3://${BUCKET}/results/empty`, 'outputs[0]');
    expect((await get('results/empty')).length).toBe(0);
  });

  it('uploads a large file in parts', async () => {
    const body = randomBytes(12 * 1024 * 1024 + 123);
    const local = join(dir, 'big.bin');
    writeFileSync(local, body);
    const s3 = storage({ multipartThresholdBytes: 6 * 1024 * 1024, partSizeBytes: 5 * 1024 * 1024 });
    const send = jest.spyOn(S3Client.prototype, 'send');
    try {
      await s3.upload(local, `s3://${BUCKET}/results/big.bin`, 'outputs[0]');
      const sent = send.mock.calls.map(([command]) => command.constructor.name);
      // 5 MiB, 5 MiB and the rest.
      expect(sent).toEqual([
        'CreateMultipartUploadCommand',
        'UploadPartCommand',
        'UploadPartCommand',
        'UploadPartCommand',
        'CompleteMultipartUploadCommand',
      ]);
    } finally {
      send.mockRestore();
    }
    const back = await get('results/big.bin');
    expect(back.length).toBe(body.length);
    expect(back.bytes.equals(body)).toBe(true);
  });

  it('fails a multipart upload to a missing bucket permanently, naming the URL', async () => {
    const local = join(dir, 'big-lost.bin');
    writeFileSync(local, randomBytes(7 * 1024 * 1024));
    const s3 = storage({ multipartThresholdBytes: 6 * 1024 * 1024, partSizeBytes: 5 * 1024 * 1024 });
    const err = await failure(s3.upload(local, 's3://no-such-bucket/big', 'outputs[1]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^outputs\[1\]: cannot upload to s3:\/\/no-such-bucket\/big: NoSuchBucket/);
  });

  it('fails an upload to a missing bucket permanently, naming the URL', async () => {
    const local = join(dir, 'x');
    writeFileSync(local, 'x');
    const err = await failure(storage().upload(local, 's3://no-such-bucket/x', 'outputs[2]'));
    expect(err).toBeInstanceOf(StagingError);
    expect(err.message).toMatch(/^outputs\[2\]: cannot upload to s3:\/\/no-such-bucket\/x: NoSuchBucket/);
  });
});

describe('S3Storage behind stageInputs and OutputDeliverer', () => {
  it('stages s3 inputs and delivers a DIRECTORY output with sizes', async () => {
    await put('flow/in.txt', 'input');
    await put('flow/ref/one.txt', '1');
    await put('flow/ref/two/three.txt', '33');
    const s3 = storage();
    const staged = await stageInputs(
      [
        { path: '/data/in.txt', url: `s3://${BUCKET}/flow/in.txt` },
        { path: '/data/ref', url: `s3://${BUCKET}/flow/ref`, type: 'DIRECTORY' },
      ],
      dir,
      {
        roots: new AllowedRoots([]),
        fetchers: [s3],
        parallel: 4,
        limits: { maxDownloadBytes: 1024, maxListedObjects: 10 },
      },
    );
    expect(readFileSync(staged[0]!.hostPath, 'utf8')).toBe('input');
    expect(tree(staged[1]!.hostPath)).toEqual(['one.txt', 'two/', 'two/three.txt']);

    const outDir = join(dir, 'mnt/out/dir');
    mkdirSync(join(outDir, 'nested'), { recursive: true });
    writeFileSync(join(outDir, 'x.txt'), 'xx');
    writeFileSync(join(outDir, 'nested/y.txt'), 'yyy');
    const result = await new OutputDeliverer(new AllowedRoots([]), [s3]).deliver(
      [{ path: '/out/dir', url: `s3://${BUCKET}/flow/out`, type: 'DIRECTORY' }],
      dir,
    );
    expect(result.errors).toEqual([]);
    expect(result.files.map((f) => [f.url, f.size_bytes]).sort()).toEqual([
      [`s3://${BUCKET}/flow/out/nested/y.txt`, '3'],
      [`s3://${BUCKET}/flow/out/x.txt`, '2'],
    ]);
    expect((await get('flow/out/nested/y.txt')).bytes.toString()).toBe('yyy');
  });
});

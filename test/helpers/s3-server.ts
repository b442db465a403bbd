import { CreateBucketCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/**
 * s3rver, a real S3-compatible server from npm, in a child process on 127.0.0.1 with path-style
 * addressing. It runs with --openssl-legacy-provider because s3rver makes its ListObjectsV2
 * continuation tokens with DES, which OpenSSL 3 only has there. It checks the access key id (only
 * `S3RVER` is known) but not SigV4 signatures.
 */
export const S3_KEY_ID = 'S3RVER';
export const S3_SECRET = 'tesgw-Secret/Value+9f8e7d6c';

const SERVER_SCRIPT = `
const S3rver = require('s3rver');
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: process.env.S3RVER_DIR });
server.run().then(({ port }) => console.log(JSON.stringify({ port })), (err) => { console.error(err); process.exit(1); });
`;

export interface S3Server {
  endpoint: string;
  admin: S3Client;
  createBucket(name: string): Promise<void>;
  read(bucket: string, key: string): Promise<{ bytes: Buffer; length: number | undefined }>;
  close(): Promise<void>;
}

export async function startS3Server(): Promise<S3Server> {
  const dir = mkdtempSync(join(tmpdir(), 'tesgw-s3rver-'));
  const child: ChildProcess = spawn(process.execPath, ['--openssl-legacy-provider', '-e', SERVER_SCRIPT], {
    cwd: process.cwd(),
    env: { ...process.env, S3RVER_DIR: dir },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
  });
  const { port } = JSON.parse(line) as { port: number };
  const endpoint = `http://127.0.0.1:${port}`;
  const admin = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: S3_KEY_ID, secretAccessKey: S3_SECRET },
    requestChecksumCalculation: 'WHEN_REQUIRED',
  });
  return {
    endpoint,
    admin,
    async createBucket(name) {
      await admin.send(new CreateBucketCommand({ Bucket: name }));
    },
    async read(bucket, key) {
      const res = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      return { bytes: Buffer.from(await res.Body!.transformToByteArray()), length: res.ContentLength };
    },
    async close() {
      admin.destroy();
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

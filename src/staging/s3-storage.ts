import {
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { retry, RetryGaveUp } from '../retry.js';
import type { OutputUploader } from './deliver-outputs.js';
import { DownloadBudget, DownloadBudgetError } from './download-budget.js';
import { redactUrl, scrubSecrets } from './url-redaction.js';
import type { InputFetcher } from './stage-inputs.js';
import { StagingError } from './staging-error.js';

export interface S3StorageOptions {
  /** An S3-compatible endpoint (MinIO, Ceph, ...); AWS when absent. */
  endpoint?: string | undefined;
  region: string;
  /** `endpoint/bucket/key` rather than `bucket.endpoint/key`; most non-AWS servers need it. */
  forcePathStyle: boolean;
  /** Both or neither; neither means the SDK's default chain (environment, profile, instance role). */
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  /** Tries per request, the first included. */
  maxAttempts: number;
  /** Files larger than this are uploaded in parts (a single PutObject stops at 5 GiB). Default 512 MiB. */
  multipartThresholdBytes?: number;
  /** Size of each part; grown when a file would need more than 10,000. Default 64 MiB. */
  partSizeBytes?: number;
  /** Objects of one DIRECTORY input, or parts of one file, moved at once. Default 8. */
  parallel?: number;
}

/**
 * Reads `s3://bucket/key` inputs and writes outputs there, on AWS or any S3-compatible endpoint.
 *
 * A FILE input is streamed into a temporary file beside the destination and renamed into place; a
 * DIRECTORY input is every object under `key/`, laid out by relative path in a temporary folder that is
 * renamed into place. Outputs are streamed from disk with their length (in parts when large).
 *
 * Downloaded bytes count against the task's DownloadBudget, and so do the objects a DIRECTORY input
 * lists: paging through a bucket stops at the task's limit.
 *
 * Missing objects or buckets, refused access and unknown keys are permanent (StagingError). Network
 * failures, throttling and 5xx are retried (by the SDK, and here for streamed bodies, which the SDK
 * cannot replay; the parts of a large upload are buffers it can) and then thrown as a plain Error. No message carries a credential.
 */
export class S3Storage implements InputFetcher, OutputUploader {
  readonly schemes = ['s3'] as const;
  // Private fields are invisible to JSON and loggers, so the credentials cannot leak that way.
  readonly #client: S3Client;
  readonly #secrets: string[];
  readonly #maxAttempts: number;
  readonly #multipartThresholdBytes: number;
  readonly #partSizeBytes: number;
  readonly #parallel: number;

  constructor(options: S3StorageOptions) {
    const { accessKeyId, secretAccessKey } = options;
    if (Boolean(accessKeyId) !== Boolean(secretAccessKey)) {
      throw new Error('S3 storage: accessKeyId and secretAccessKey must be set together, or neither');
    }
    this.#secrets = secretAccessKey ? [secretAccessKey] : [];
    this.#maxAttempts = options.maxAttempts;
    this.#multipartThresholdBytes = options.multipartThresholdBytes ?? 512 * 1024 * 1024;
    this.#partSizeBytes = options.partSizeBytes ?? 64 * 1024 * 1024;
    this.#parallel = options.parallel ?? 8;
    const config: S3ClientConfig = {
      region: options.region,
      forcePathStyle: options.forcePathStyle,
      maxAttempts: options.maxAttempts,
      // The SDK's default since 3.729 sends bodies aws-chunked with a trailing CRC: many S3-compatible
      // servers (older MinIO and Ceph, s3rver) store those framing bytes as the object's content.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      // An idle socket (no byte either way for 2 min) fails the request, which is then retried.
      requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
      logger: QUIET,
    };
    if (options.endpoint) config.endpoint = options.endpoint;
    if (accessKeyId && secretAccessKey) config.credentials = { accessKeyId, secretAccessKey };
    this.#client = new S3Client(config);
  }

  async fetch(
    url: string,
    dest: string,
    type: 'FILE' | 'DIRECTORY',
    field: string,
    budget: DownloadBudget = DownloadBudget.unlimited(),
  ): Promise<void> {
    const location = parseS3Url(url, field, type);
    const partial = `${dest}.part-${randomBytes(6).toString('hex')}`;
    await mkdir(dirname(dest), { recursive: true });
    try {
      if (type === 'FILE') await this.download(location.bucket, location.key, partial, budget);
      else await this.downloadTree(location, partial, field, budget);
      // A folder from an earlier, interrupted submission would make the rename fail.
      if (type === 'DIRECTORY') await rm(dest, { recursive: true, force: true });
      await rename(partial, dest);
    } catch (err) {
      throw this.failure(err, field, `download ${location.shown}`, true);
    } finally {
      await rm(partial, { recursive: true, force: true });
    }
  }

  async upload(localPath: string, url: string, field: string): Promise<void> {
    const location = parseS3Url(url, field, 'FILE');
    try {
      const { size } = await stat(localPath);
      if (size > this.#multipartThresholdBytes) {
        await this.uploadInParts(location, localPath, size);
      } else {
        await this.retrying(() =>
          this.sendFile(localPath, (Body) =>
            this.#client.send(
              new PutObjectCommand({ Bucket: location.bucket, Key: location.key, Body, ContentLength: size }),
            ),
          ),
        );
      }
    } catch (err) {
      throw this.failure(err, field, `upload to ${location.shown}`, false);
    }
  }

  /** Closes the client's connections. */
  close(): void {
    this.#client.destroy();
  }

  private async download(bucket: string, key: string, path: string, budget: DownloadBudget): Promise<void> {
    await this.retrying(async () => {
      const res = await this.#client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      if (!res.Body) throw new Error('the server sent no body');
      const body =
        res.Body instanceof Readable ? res.Body : Readable.fromWeb(res.Body.transformToWebStream());
      if (res.ContentLength !== undefined) {
        try {
          budget.expect(res.ContentLength);
        } catch (err) {
          body.destroy();
          throw err;
        }
      }
      let received = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
          received += chunk.length;
          try {
            budget.take(chunk.length);
            done(null, chunk);
          } catch (err) {
            done(err as Error);
          }
        },
      });
      try {
        await pipeline(body, meter, createWriteStream(path));
      } catch (err) {
        // The next try starts the file afresh: what this one wrote no longer counts.
        budget.give(received);
        // A local problem (a full disk, a file where a folder must go) is not the network's, and a
        // spent budget stays spent.
        if (err instanceof DownloadBudgetError) throw err;
        throw LOCAL_CODES.has((err as NodeJS.ErrnoException).code ?? '') ? err : new BodyError(err);
      }
      const { size } = await stat(path);
      if (res.ContentLength !== undefined && size !== res.ContentLength) {
        throw new BodyError(new Error(`the connection closed after ${size} of ${res.ContentLength} bytes`));
      }
    }, true);
  }

  /** Every object under the prefix, by relative path under `root`. */
  private async downloadTree(
    location: S3Location,
    root: string,
    field: string,
    budget: DownloadBudget,
  ): Promise<void> {
    const prefix = location.key === '' || location.key.endsWith('/') ? location.key : `${location.key}/`;
    const files = new Map<string, string>();
    const folders = new Set<string>();
    let listed = 0;
    let announced = 0;
    let token: string | undefined;
    do {
      const page = await this.#client.send(
        new ListObjectsV2Command({ Bucket: location.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const object of page.Contents ?? []) {
        const key = object.Key;
        if (key === undefined) continue;
        budget.list();
        listed++;
        announced += object.Size ?? 0;
        const segments = key.slice(prefix.length).split('/');
        if (segments.some((s) => s === '..' || s === '.')) {
          throw new StagingError(
            field,
            `${location.shown} holds the object ${JSON.stringify(key)}, whose '..' or '.' segment would ` +
              `place it outside the input folder`,
          );
        }
        const relative = segments.filter((s) => s !== '').join('/');
        // A key ending in `/` is a folder marker: it makes an empty folder, not a file.
        if (key.endsWith('/') || relative === '') {
          folders.add(relative);
        } else if (files.has(relative)) {
          throw new StagingError(
            field,
            `${location.shown} holds ${JSON.stringify(files.get(relative))} and ${JSON.stringify(key)}, which would be the same file`,
          );
        } else {
          files.set(relative, key);
        }
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    if (listed === 0) {
      throw new StagingError(field, `${location.shown} has no objects under ${prefix || 'the bucket root'}`);
    }
    // Refused before the first byte, rather than after filling the disk up to the budget.
    budget.expect(announced);
    await mkdir(root, { recursive: true });
    for (const folder of folders) await mkdir(join(root, folder), { recursive: true });
    await runAll([...files], this.#parallel, async ([relative, key]) => {
      const path = join(root, relative);
      try {
        await mkdir(dirname(path), { recursive: true });
        await this.download(location.bucket, key, path, budget);
      } catch (err) {
        const code = ((err instanceof RetryGaveUp ? err.error : err) as NodeJS.ErrnoException).code;
        if (code === 'ENOTDIR' || code === 'EEXIST' || code === 'EISDIR') {
          throw new StagingError(
            field,
            `${location.shown}: the object ${JSON.stringify(key)} is both a file and a folder in the listing`,
          );
        }
        throw err;
      }
    });
  }

  /**
   * A large file in parts, by the SDK's own multipart uploader: each part is read into memory, so the
   * client retries a part that failed (up to maxAttempts) and the upload is aborted if one fails for
   * good (otherwise its parts would stay billed, invisible, until a lifecycle rule removed them).
   * At most `min(4, parallel)` parts are in flight, and in memory, at once.
   */
  private async uploadInParts(location: S3Location, path: string, size: number): Promise<void> {
    const body = createReadStream(path);
    try {
      await new Upload({
        client: this.#client,
        params: { Bucket: location.bucket, Key: location.key, Body: body, ContentLength: size },
        partSize: Math.max(this.#partSizeBytes, Math.ceil(size / 10_000)),
        queueSize: Math.min(4, this.#parallel),
        leavePartsOnError: false,
      }).done();
    } finally {
      body.destroy();
    }
  }

  /** Sends a file as a fresh stream, closed whatever happens. */
  private async sendFile<T>(path: string, send: (body: Readable) => Promise<T>): Promise<T> {
    const body = createReadStream(path);
    try {
      return await send(body);
    } finally {
      body.destroy();
    }
  }

  /**
   * Tries `fn` up to maxAttempts times while it fails transiently. Only for what the SDK cannot retry
   * itself: streamed request bodies, and (`bodyOnly`) response bodies that broke off.
   */
  private async retrying<T>(fn: () => Promise<T>, bodyOnly = false): Promise<T> {
    try {
      return await retry(fn, {
        attempts: this.#maxAttempts,
        backoffMs: 500,
        maxDelayMs: 20_000,
        jitter: true,
        retryable: (err) => (bodyOnly ? err instanceof BodyError : !isPermanentS3Failure(err)),
      });
    } catch (err) {
      const { error, attempts } = err as RetryGaveUp;
      throw new RetryGaveUp(error instanceof BodyError ? error.error : error, attempts);
    }
  }

  /** `err` as what the caller needs: a StagingError when permanent, else a plain Error. */
  private failure(err: unknown, field: string, what: string, withField: boolean): Error {
    if (err instanceof StagingError) return err;
    let cause = err;
    let attempts: number | undefined;
    if (cause instanceof RetryGaveUp) {
      attempts = cause.attempts;
      cause = cause.error;
    }
    attempts = Math.max(attempts ?? 1, (cause as SdkError)?.$metadata?.attempts ?? 1);
    if (cause instanceof DownloadBudgetError)
      return new StagingError(field, `cannot ${what}: ${cause.message}`);
    const reason = scrubSecrets(describeError(cause), this.#secrets);
    if (isPermanentS3Failure(cause)) return new StagingError(field, `cannot ${what}: ${reason}`);
    const tries = attempts === 1 ? '1 attempt' : `${attempts} attempts`;
    // OutputDeliverer prefixes the field to plain errors itself; stageInputs does not.
    return new Error(`${withField ? `${field}: ` : ''}cannot ${what} after ${tries}: ${reason}`);
  }
}

interface S3Location {
  bucket: string;
  /** As written in the URL: S3 keys may hold `%`, `?` and spaces, so nothing is decoded. */
  key: string;
  shown: string;
}

function parseS3Url(raw: string, field: string, type: 'FILE' | 'DIRECTORY'): S3Location {
  const shown = redactUrl(raw);
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/is.exec(raw);
  if (!m || !m[1]) throw new StagingError(field, `${shown} is not an s3://bucket/key URL`);
  if (m[1].includes('@') || m[1].includes(':')) {
    throw new StagingError(
      field,
      `${shown} names credentials or a port; s3:// URLs are s3://bucket/key and the gateway's own credentials are used`,
    );
  }
  const key = m[2] ?? '';
  if (type === 'FILE' && (key === '' || key.endsWith('/'))) {
    throw new StagingError(field, `${shown} names a folder, not an object (set type DIRECTORY for a folder)`);
  }
  return { bucket: m[1], key, shown };
}

/** The shape of errors thrown by the SDK, as far as this file looks at them. */
interface SdkError {
  name?: string;
  message?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
}

/** Error names that say the request itself is wrong, whatever the status code. */
const PERMANENT_NAMES = new Set([
  'NoSuchKey',
  'NoSuchBucket',
  'NotFound',
  'AccessDenied',
  'Forbidden',
  'AllAccessDisabled',
  'AccountProblem',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'AuthorizationHeaderMalformed',
  'PermanentRedirect',
  'InvalidBucketName',
  'InvalidObjectState',
  'InvalidArgument',
  'InvalidRequest',
  'EntityTooLarge',
  'KeyTooLongError',
  'MethodNotAllowed',
]);

/** 4xx errors that pass with time. */
const TRANSIENT_NAMES = new Set([
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'ExpiredToken',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequests',
]);

function isPermanentS3Failure(err: unknown): boolean {
  if (err instanceof StagingError || err instanceof DownloadBudgetError) return true;
  if (err instanceof RetryGaveUp || err instanceof BodyError) return isPermanentS3Failure(err.error);
  const e = err as SdkError;
  const name = e?.name ?? '';
  if (TRANSIENT_NAMES.has(name)) return false;
  if (PERMANENT_NAMES.has(name)) return true;
  const status = e?.$metadata?.httpStatusCode;
  return status !== undefined && status >= 300 && status < 500 && status !== 408 && status !== 429;
}

const HINTS: Record<string, string> = {
  NoSuchKey: 'the object does not exist',
  NoSuchBucket: 'the bucket does not exist',
  NotFound: 'not found',
  AccessDenied: "access denied (the gateway's S3 credentials are not allowed this)",
  Forbidden: "access denied (the gateway's S3 credentials are not allowed this)",
  InvalidAccessKeyId: 'the server does not know the access key id (storage.s3.accessKeyId)',
  SignatureDoesNotMatch: 'the request signature does not match (check storage.s3.secretAccessKey)',
  CredentialsProviderError:
    'no S3 credentials found (set storage.s3.accessKeyId and secretAccessKey, or the AWS environment, profile or role)',
};

function describeError(err: unknown): string {
  const e = err as SdkError;
  const name = e?.name ?? 'Error';
  const status = e?.$metadata?.httpStatusCode;
  const hint = HINTS[name];
  const where = status ? ` (HTTP ${status})` : '';
  if (hint) return `${name}${where}: ${hint}`;
  const message = e?.message || (e?.code ?? String(err));
  if (name !== 'Error') return `${name}${where}: ${message}`;
  return `${e?.code && !message.includes(e.code) ? `${e.code}: ` : ''}${message}${where}`;
}

const LOCAL_CODES = new Set(['EISDIR', 'ENOTDIR', 'EEXIST', 'ENOSPC', 'EDQUOT', 'EACCES', 'EROFS']);

/** A response body that broke off after the SDK handed it over; the SDK cannot retry that. */
class BodyError extends Error {
  constructor(readonly error: unknown) {
    super((error as Error)?.message ?? String(error));
    this.name = 'BodyError';
  }
}

/**
 * Runs `fn` on every item, `parallel` at a time. After the first failure nothing new starts; the ones
 * running are awaited (so no write lands after the caller cleaned up), then the failure is thrown.
 */
async function runAll<T>(
  items: readonly T[],
  parallel: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (!failure && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, items.length)) }, lane));
  if (failure) throw failure.error;
}

const noop = (): void => undefined;
/** The SDK would otherwise warn on the console, outside the gateway's JSON log. */
const QUIET: NonNullable<S3ClientConfig['logger']> = {
  trace: noop,
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
};

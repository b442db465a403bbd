import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import type { Writable } from 'node:stream';
import type { DeliveryResult, NumberedOutput } from '../staging/deliver-outputs.js';
import { schemeOf } from '../staging/stage-inputs.js';
import { EXECUTOR_FILE, executorDirName, TASK_FILE, WRITABLE_DIR } from '../tes/task-directory.js';

/**
 * The `finish` protocol of run-as-user mode, both ends: the user side (user-side.ts, run as the
 * task's owner through the helper) writes frames on its stdout, the gateway reads them into a mirror
 * of the task directory that it owns (receiveFinish) and works from there with its own rights.
 *
 * A frame is a JSON header line, then exactly `size` raw bytes:
 *
 *     {"kind":"result","path":"exec-0/exit_code","size":2}            exec-<n>/{start,end,exit_code},
 *                                                                     system-error, job-end: their first 4 KiB
 *     {"kind":"result","path":"exec-0/stdout","size":N,"fullSize":M}  exec-<n>/{stdout,stderr}: the last N of M
 *     {"kind":"export-dir","path":"mnt/out","size":0}                 the folder of a DIRECTORY output
 *     {"kind":"export","path":"mnt/out/a.txt","size":N}               a file of a remote (s3://...) output
 *     {"kind":"delivery","size":N}                                    JSON FinishDelivery, always last
 *
 * Paths are relative to the task directory, in its layout (tes/task-directory.ts), so the mirror is
 * read with the same functions as the task directory itself. The reader trusts nothing of what it
 * reads: the user side runs with the rights of a user, who may have replaced it or fed it anything.
 * Every header is checked (known kind and keys, a size that is a safe non-negative integer and within
 * the kind's limit, a path of the kind's shape), and a stream that breaks the format fails with a
 * FrameError naming the frame, its byte offset and what was wrong.
 */

export type FrameKind = 'result' | 'export' | 'export-dir' | 'delivery';

export type FrameHeader =
  | { kind: 'result'; path: string; size: number; fullSize?: number }
  | { kind: 'export'; path: string; size: number }
  | { kind: 'export-dir'; path: string; size: 0 }
  | { kind: 'delivery'; size: number };

/** What the user side reports of delivery: the DeliveryResult, and which remote outputs to leave out. */
export interface FinishDelivery extends DeliveryResult {
  /**
   * Indices (in the task's outputs) of `export` outputs that the user side could not send whole: each
   * has its line in `errors`, and the gateway must not deliver it from the mirror.
   */
  failedExports: number[];
}

/** An output with its place among the task's outputs (errors name `outputs[index]`). */
export type IndexedOutput = NumberedOutput & { index: number };

/** The request the gateway writes on the user side's stdin. */
export interface FinishRequest {
  /** Bytes kept of the end of each executor's stdout and stderr. */
  tailBytes: number;
  /** `file://` and bare-path outputs, delivered by the user side as the user, in task order. */
  deliver: IndexedOutput[];
  /** Remote outputs (s3://...): their files are exported as frames for the gateway to send. */
  export: IndexedOutput[];
  /** The task owner's allowed roots. */
  roots: Array<{ path: string; writable: boolean }>;
}

export const FRAME_LIMITS = {
  /** A header line, without its newline. */
  headerBytes: 64 * 1024,
  /** An export path, in UTF-8 bytes (PATH_MAX). */
  pathBytes: 4096,
  /** One component of a path (NAME_MAX). */
  componentBytes: 255,
  /** Components of an export path: `mnt/` and the container path below it. */
  exportDepth: 64,
  /** A small result file (start, end, exit_code, job-end, system-error). */
  smallResultBytes: 4096,
  /** The delivery frame's JSON, which lists every file delivered. */
  deliveryBytes: 64 * 1024 * 1024,
  /** The request on the user side's stdin. */
  requestBytes: 16 * 1024 * 1024,
};

export type FrameLimits = typeof FRAME_LIMITS;

/** A stream of frames that breaks the format: which frame, where, and what was wrong. */
export class FrameError extends Error {
  constructor(
    /** The frame's number, from 0. */
    readonly frame: number,
    /** The byte offset of the frame's header in the stream. */
    readonly offset: number,
    readonly problem: string,
  ) {
    super(`finish frames: frame ${frame} at byte ${offset}: ${problem}`);
    this.name = 'FrameError';
  }
}

/** The frames could not be written: the reader is gone (EPIPE) or the stream failed. */
export class FrameWriteError extends Error {
  constructor(cause: unknown) {
    super(
      (cause as NodeJS.ErrnoException).code === 'EPIPE'
        ? 'could not write frames: the reader closed the stream (EPIPE)'
        : `could not write frames: ${(cause as Error).message}`,
      { cause },
    );
    this.name = 'FrameWriteError';
  }
}

/** A header that cannot be written or read: what is wrong with it. */
export class HeaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HeaderError';
  }
}

const KEYS: Record<FrameKind, readonly string[]> = {
  result: ['kind', 'path', 'size', 'fullSize'],
  export: ['kind', 'path', 'size'],
  'export-dir': ['kind', 'path', 'size'],
  delivery: ['kind', 'size'],
};

const TAILED_RESULTS = new Set<string>([EXECUTOR_FILE.stdout, EXECUTOR_FILE.stderr]);

const EXECUTOR_FILES = new Set<string>(Object.values(EXECUTOR_FILE));

/** The task directory's top-level result files. */
export const TOP_RESULT_FILES = [TASK_FILE.systemError, TASK_FILE.jobEnd] as const;

/** Whether a result file is cut to its last bytes (and its header says `fullSize`). */
export function isTailedResult(name: string): boolean {
  return TAILED_RESULTS.has(name);
}

/** The executor index an `exec-<n>` name stands for, written as executorDirName writes it; else undefined. */
export function executorIndexOf(name: string): number | undefined {
  const digits = /\d+$/.exec(name)?.[0];
  if (digits === undefined) return undefined;
  const index = Number(digits);
  return Number.isSafeInteger(index) && executorDirName(index) === name ? index : undefined;
}

/**
 * What is wrong with a result path, or undefined: `system-error`, `job-end`, or `exec-<n>/<file>`
 * with a file the job script writes.
 */
export function resultPathProblem(path: string): string | undefined {
  const parts = path.split('/');
  if (parts.length === 1 && (TOP_RESULT_FILES as readonly string[]).includes(path)) return undefined;
  if (parts.length === 2 && executorIndexOf(parts[0]!) !== undefined && EXECUTOR_FILES.has(parts[1]!))
    return undefined;
  return `is not a result file (${TOP_RESULT_FILES.join(', ')}, or ${executorDirName(0)}/<${[
    ...EXECUTOR_FILES,
  ].join('|')}> for an executor)`;
}

/**
 * What is wrong with an export path, or undefined: relative, normalized, in one of the task's
 * writable places (mnt/, tmp/, var-tmp/), no `.` or `..` or empty component, no NUL, within the
 * length and depth limits.
 */
export function exportPathProblem(path: string, limits: FrameLimits = FRAME_LIMITS): string | undefined {
  if (path === '') return 'is empty';
  if (path.includes('\0')) return 'contains a NUL byte';
  if (path.startsWith('/')) return 'is absolute; it must be relative to the task directory';
  if (Buffer.byteLength(path) > limits.pathBytes) return `is longer than ${limits.pathBytes} bytes`;
  const parts = path.split('/');
  if (parts.length > limits.exportDepth) return `is more than ${limits.exportDepth} components deep`;
  for (const part of parts) {
    if (part === '') return 'has an empty component (a doubled or trailing /)';
    if (part === '.' || part === '..') return `has a '${part}' component`;
    if (Buffer.byteLength(part) > limits.componentBytes)
      return `has a component longer than ${limits.componentBytes} bytes`;
  }
  if (posix.normalize(path) !== path) return 'is not normalized';
  const places = Object.values(WRITABLE_DIR) as string[];
  if (!places.includes(parts[0]!)) return `is not in the task's writable places (${places.join(', ')})`;
  return undefined;
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** A header read from the wire (any JSON value), checked; throws HeaderError naming the problem. */
export function validateHeader(value: unknown, limits: FrameLimits = FRAME_LIMITS): FrameHeader {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new HeaderError('the header is not a JSON object');
  const h = value as Record<string, unknown>;
  const kind = h.kind;
  if (typeof kind !== 'string' || !Object.hasOwn(KEYS, kind))
    throw new HeaderError(`unknown kind ${JSON.stringify(kind)} (known: ${Object.keys(KEYS).join(', ')})`);
  const k = kind as FrameKind;
  const extra = Object.keys(h).filter((key) => !KEYS[k].includes(key));
  if (extra.length > 0) throw new HeaderError(`${k} header: unknown key ${JSON.stringify(extra[0])}`);
  if (!isSize(h.size))
    throw new HeaderError(`${k} header: size ${JSON.stringify(h.size)} is not a safe non-negative integer`);
  const size = h.size;
  if (k === 'delivery') {
    if (size > limits.deliveryBytes)
      throw new HeaderError(
        `delivery header: size ${size} is over the limit of ${limits.deliveryBytes} bytes`,
      );
    return { kind: k, size };
  }
  if (typeof h.path !== 'string') throw new HeaderError(`${k} header: path is missing or not a string`);
  const path = h.path;
  const named = `${k} header: path ${JSON.stringify(path.length > 200 ? `${path.slice(0, 200)}...` : path)}`;
  if (k === 'result') {
    const problem = resultPathProblem(path);
    if (problem) throw new HeaderError(`${named} ${problem}`);
    const name = posix.basename(path);
    if (isTailedResult(name)) {
      if (!isSize(h.fullSize) || h.fullSize < size)
        throw new HeaderError(
          `${named}: fullSize ${JSON.stringify(h.fullSize)} is not a safe integer at least the size ${size}`,
        );
      return { kind: k, path, size, fullSize: h.fullSize };
    }
    if (h.fullSize !== undefined) throw new HeaderError(`${named}: fullSize is only for stdout and stderr`);
    if (size > limits.smallResultBytes)
      throw new HeaderError(`${named}: size ${size} is over the limit of ${limits.smallResultBytes} bytes`);
    return { kind: k, path, size };
  }
  const problem = exportPathProblem(path, limits);
  if (problem) throw new HeaderError(`${named} ${problem}`);
  if (k === 'export-dir') {
    if (size !== 0) throw new HeaderError(`${named}: size ${size} is not 0`);
    return { kind: k, path, size: 0 };
  }
  return { kind: k, path, size };
}

/** The header line of a frame, checked as a reader checks it, so a writer never sends a bad one. */
export function encodeHeader(header: FrameHeader, limits: FrameLimits = FRAME_LIMITS): Buffer {
  const checked = validateHeader(header, limits);
  const line = Buffer.from(`${JSON.stringify(checked)}\n`);
  if (line.length - 1 > limits.headerBytes)
    throw new HeaderError(`the header is longer than ${limits.headerBytes} bytes`);
  return line;
}

/** A header line (without its newline) parsed and checked. */
export function parseHeaderLine(line: Buffer | string, limits: FrameLimits = FRAME_LIMITS): FrameHeader {
  let value: unknown;
  try {
    value = JSON.parse(line.toString());
  } catch (err) {
    throw new HeaderError(`the header is not JSON (${(err as Error).message})`);
  }
  return validateHeader(value, limits);
}

/** How a file's bytes went into a frame: the size announced, and how many the file really gave. */
export interface FileFrameCopy {
  /** Bytes in the frame's body, as its header said. */
  size: number;
  /** Bytes read from the file; fewer than `size` when it shrank (the rest are zeros). */
  fromFile: number;
  /** The file's size after the copy. */
  sizeAfter: number;
  /** The file changed size while it was copied: the body is not the file as it is. */
  changed: boolean;
  /** A read that failed part way (the rest of the body is zeros). */
  readError?: Error;
}

const CHUNK_BYTES = 1024 * 1024;

/**
 * Writes frames to a stream, waiting for each write to be taken (a slow reader slows the writer, and
 * nothing is held whole). A header is checked before anything of its frame is written.
 */
export class FrameWriter {
  constructor(
    private readonly out: Writable,
    private readonly limits: FrameLimits = FRAME_LIMITS,
  ) {}

  async writeBuffer(header: FrameHeaderWithoutSize, body: Uint8Array): Promise<void> {
    const line = encodeHeader({ ...header, size: body.length } as FrameHeader, this.limits);
    await this.write(line);
    if (body.length > 0) await this.write(body);
  }

  /** A whole open file, its size taken by fstat before the header is written. */
  async writeFile(header: FrameHeaderWithoutSize, file: FileHandle): Promise<FileFrameCopy> {
    const { size } = await file.stat();
    return this.writeFileRange({ ...header, size } as FrameHeader, file, 0);
  }

  /**
   * Exactly `header.size` bytes of an open file from `position`, streamed: a file that shrinks while
   * it is copied is padded with zeros and one that grows is cut, so the frame is always what its
   * header announced; the result says whether that happened.
   */
  async writeFileRange(header: FrameHeader, file: FileHandle, position: number): Promise<FileFrameCopy> {
    await this.write(encodeHeader(header, this.limits));
    const size = header.size;
    let copied = 0;
    let readError: Error | undefined;
    // Once the header is out, the body is finished whatever the file does, or the stream is lost.
    while (copied < size) {
      // A fresh buffer each time: the stream may keep the last one (a PassThrough does).
      const chunk = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, size - copied));
      let bytesRead: number;
      try {
        ({ bytesRead } = await file.read(chunk, 0, chunk.length, position + copied));
      } catch (err) {
        readError = err as Error;
        break;
      }
      if (bytesRead === 0) break;
      await this.write(chunk.subarray(0, bytesRead));
      copied += bytesRead;
    }
    const fromFile = copied;
    while (copied < size) {
      const zeros = Buffer.alloc(Math.min(CHUNK_BYTES, size - copied));
      await this.write(zeros);
      copied += zeros.length;
    }
    const sizeAfter = await file.stat().then(
      (st) => st.size,
      () => -1,
    );
    const changed = fromFile < size || sizeAfter !== position + size;
    return readError
      ? { size, fromFile, sizeAfter, changed, readError }
      : { size, fromFile, sizeAfter, changed };
  }

  private write(chunk: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.out.write(chunk, (err) => (err ? reject(new FrameWriteError(err)) : resolve()));
    });
  }
}

type WithoutSize<T> = T extends unknown ? Omit<T, 'size'> : never;
export type FrameHeaderWithoutSize = WithoutSize<FrameHeader>;

/** Pulls bytes from a stream with a count of what was taken, and gives back what it did not use. */
class ByteInput {
  offset = 0;
  private pending: Buffer = Buffer.alloc(0);
  private readonly source: AsyncIterator<Uint8Array | string>;

  constructor(source: AsyncIterable<Uint8Array | string>) {
    this.source = source[Symbol.asyncIterator]();
  }

  /** Up to `max` bytes, or undefined at the end of the stream. */
  async read(max: number): Promise<Buffer | undefined> {
    if (this.pending.length === 0) {
      const next = await this.source.next();
      if (next.done) return undefined;
      this.pending = typeof next.value === 'string' ? Buffer.from(next.value) : Buffer.from(next.value);
      if (this.pending.length === 0) return this.read(max);
    }
    const out = this.pending.subarray(0, max);
    this.pending = this.pending.subarray(out.length);
    this.offset += out.length;
    return out;
  }

  /** Lets go of the stream (a Node stream is destroyed, so a writer blocked on it fails at once). */
  async close(): Promise<void> {
    await this.source.return?.();
  }

  /**
   * The next line without its newline; undefined at a clean end of the stream. Throws when the
   * stream ends inside a line or the line is longer than `max` bytes.
   */
  async readLine(max: number): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let length = 0;
    for (;;) {
      const chunk = await this.read(max + 1 - length);
      if (chunk === undefined) {
        if (length === 0) return undefined;
        throw new HeaderError(`the stream ended inside a header (${length} bytes without a newline)`);
      }
      const newline = chunk.indexOf(0x0a);
      if (newline >= 0) {
        // Give back what follows the newline.
        this.pending = Buffer.concat([chunk.subarray(newline + 1), this.pending]);
        this.offset -= chunk.length - newline - 1;
        parts.push(chunk.subarray(0, newline));
        return Buffer.concat(parts);
      }
      parts.push(chunk);
      length += chunk.length;
      if (length > max) throw new HeaderError(`a header is longer than ${max} bytes (no newline found)`);
    }
  }
}

/** A frame as read: its checked header and its body, to be consumed (or skipped) before the next. */
export interface Frame {
  header: FrameHeader;
  /** The frame's number, from 0. */
  index: number;
  /** The byte offset of its header in the stream. */
  offset: number;
  body: FrameBody;
}

/** The body of a frame, streamed from the input: exactly `size` bytes or a FrameError. */
export class FrameBody implements AsyncIterable<Buffer> {
  private left: number;

  constructor(
    private readonly input: ByteInput,
    private readonly frame: number,
    private readonly offset: number,
    readonly size: number,
  ) {
    this.left = size;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    while (this.left > 0) {
      const chunk = await this.input.read(this.left);
      if (chunk === undefined)
        throw new FrameError(
          this.frame,
          this.offset,
          `the stream ended after ${this.size - this.left} of the body's ${this.size} bytes`,
        );
      this.left -= chunk.length;
      yield chunk;
    }
  }

  /** The whole body in memory, for small frames; refused over `maxBytes`. */
  async readAll(maxBytes: number): Promise<Buffer> {
    if (this.size > maxBytes)
      throw new FrameError(this.frame, this.offset, `a body of ${this.size} bytes is over ${maxBytes}`);
    const parts: Buffer[] = [];
    for await (const chunk of this) parts.push(chunk);
    return Buffer.concat(parts);
  }

  /** The body written to an open file, a chunk at a time. */
  async writeTo(file: FileHandle): Promise<void> {
    for await (const chunk of this) {
      for (let done = 0; done < chunk.length;) {
        done += (await file.write(chunk, done, chunk.length - done)).bytesWritten;
      }
    }
  }

  /** Reads past what is left of the body. */
  async skip(): Promise<void> {
    for await (const _ of this) continue;
  }
}

/**
 * The frames of a stream, one at a time, each header checked. A consumer streams each body where it
 * belongs; what it leaves unread is skipped when it asks for the next frame. Ends at a clean end of
 * the stream (after a whole frame), and throws a FrameError at anything else. When it stops early (an
 * error here or in the consumer), it lets go of the stream: a Node stream is destroyed, so the writer
 * at the other end gets EPIPE rather than waiting for a reader forever.
 */
export async function* readFrames(
  source: AsyncIterable<Uint8Array | string>,
  limits: FrameLimits = FRAME_LIMITS,
): AsyncGenerator<Frame, void, undefined> {
  const input = new ByteInput(source);
  try {
    for (let index = 0; ; index++) {
      const offset = input.offset;
      let header: FrameHeader;
      try {
        const line = await input.readLine(limits.headerBytes);
        if (line === undefined) return;
        header = parseHeaderLine(line, limits);
      } catch (err) {
        if (err instanceof HeaderError) throw new FrameError(index, offset, err.message);
        throw err;
      }
      const body = new FrameBody(input, index, offset, header.size);
      yield { header, index, offset, body };
      await body.skip();
    }
  } finally {
    await input.close();
  }
}

/** What the gateway got from the user side. */
export interface FinishReceived {
  delivery: FinishDelivery;
  /** Each result file received, by its path in the task directory: its whole size on the user's side. */
  fullSizes: Map<string, number>;
  /** Export files written into the mirror. */
  exportedFiles: number;
}

export interface ReceiveOptions {
  /** The tailBytes of the request: a longer stdout or stderr is refused. */
  tailBytes?: number;
  limits?: FrameLimits;
}

/**
 * Reads the user side's frames into `mirrorDir`, a fresh directory of the gateway's (created 0700;
 * if it exists it must be an empty directory, not a link): result and export files at their paths,
 * folders 0700, files 0600 created with O_EXCL|O_NOFOLLOW, so nothing is written twice or through a
 * link. Checks that exactly one delivery frame comes, last, and returns it with the result files'
 * full sizes. The gateway then reads the mirror as a task directory and delivers the remote outputs
 * from it, leaving out `delivery.failedExports`.
 */
export async function receiveFinish(
  source: AsyncIterable<Uint8Array | string>,
  mirrorDir: string,
  options: ReceiveOptions = {},
): Promise<FinishReceived> {
  const limits = options.limits ?? FRAME_LIMITS;
  const mirror = new Mirror(mirrorDir);
  await mirror.create();
  const fullSizes = new Map<string, number>();
  const paths = new Set<string>();
  let delivery: FinishDelivery | undefined;
  let exportedFiles = 0;
  for await (const frame of readFrames(source, limits)) {
    const { header, index, offset } = frame;
    const fail = (problem: string) => new FrameError(index, offset, problem);
    if (delivery) throw fail(`a ${header.kind} frame came after the delivery frame, which must be last`);
    switch (header.kind) {
      case 'delivery': {
        const text = (await frame.body.readAll(limits.deliveryBytes)).toString();
        try {
          delivery = parseFinishDelivery(text);
        } catch (err) {
          throw fail(`the delivery frame: ${(err as Error).message}`);
        }
        break;
      }
      case 'export-dir':
        if (paths.has(header.path)) throw fail(`${header.path} came twice`);
        paths.add(header.path);
        await mirror.makeDirs(header.path, fail);
        break;
      case 'result':
      case 'export': {
        if (paths.has(header.path)) throw fail(`${header.path} came twice`);
        paths.add(header.path);
        if (
          header.kind === 'result' &&
          options.tailBytes !== undefined &&
          isTailedResult(posix.basename(header.path)) &&
          header.size > options.tailBytes
        )
          throw fail(`${header.path}: ${header.size} bytes, more than the ${options.tailBytes} asked for`);
        await mirror.writeFile(header.path, frame.body, fail);
        if (header.kind === 'result') fullSizes.set(header.path, header.fullSize ?? header.size);
        else exportedFiles++;
        break;
      }
      default: {
        const never: never = header;
        throw fail(`unhandled frame ${JSON.stringify(never)}`);
      }
    }
  }
  if (!delivery)
    throw new Error(
      'finish frames: the stream ended without a delivery frame: the user side stopped before it finished (see its stderr)',
    );
  return { delivery, fullSizes, exportedFiles };
}

/** The gateway's mirror of a task directory: only ever created, never through a link. */
class Mirror {
  /** Folders made here (relative), so a second file in one does not look again. */
  private readonly dirs = new Set<string>(['']);

  constructor(readonly root: string) {}

  async create(): Promise<void> {
    if (!isAbsolute(this.root)) throw new Error(`the mirror directory ${this.root} is not an absolute path`);
    try {
      await mkdir(this.root, { mode: 0o700 });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new Error(`could not create the mirror directory ${this.root}: ${(err as Error).message}`, {
          cause: err,
        });
    }
    const st = await lstat(this.root);
    if (!st.isDirectory() || (await readdir(this.root)).length > 0)
      throw new Error(
        `the mirror directory ${this.root} already exists and is not an empty directory: give a fresh one`,
      );
  }

  /** Every folder of a relative path, from the top, each made 0700 or found made here. */
  async makeDirs(path: string, fail: (problem: string) => FrameError): Promise<void> {
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (this.dirs.has(rel)) continue;
      const abs = join(this.root, rel);
      try {
        await mkdir(abs, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
          throw fail(`could not make the folder ${rel} in the mirror: ${(err as Error).message}`);
        // Made earlier as a file (a file frame came first): the frames disagree with themselves.
        const st = await lstat(abs);
        if (!st.isDirectory() || st.isSymbolicLink())
          throw fail(`${path} needs the folder ${rel}, which an earlier frame made a file`);
      }
      this.dirs.add(rel);
    }
  }

  async writeFile(path: string, body: FrameBody, fail: (problem: string) => FrameError): Promise<void> {
    const parent = posix.dirname(path);
    if (parent !== '.') await this.makeDirs(parent, fail);
    let file: FileHandle;
    try {
      file = await open(
        join(this.root, path),
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST')
        throw fail(`${path} is already in the mirror (an earlier frame made it a folder)`);
      throw fail(`could not create ${path} in the mirror: ${(err as Error).message}`);
    }
    try {
      await body.writeTo(file);
    } finally {
      await file.close();
    }
  }
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

/** The delivery frame's JSON, checked. */
export function parseFinishDelivery(text: string): FinishDelivery {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error('not a JSON object');
  const v = value as Record<string, unknown>;
  if (!isStringArray(v.errors)) throw new Error('errors is not a list of strings');
  if (!isStringArray(v.notes)) throw new Error('notes is not a list of strings');
  if (!Array.isArray(v.failedExports) || !v.failedExports.every(isSize))
    throw new Error('failedExports is not a list of output indices');
  if (!Array.isArray(v.files)) throw new Error('files is not a list');
  const files = v.files.map((f: unknown, i) => {
    const file = f as Record<string, unknown> | null;
    if (
      typeof file !== 'object' ||
      file === null ||
      typeof file.url !== 'string' ||
      typeof file.path !== 'string' ||
      typeof file.size_bytes !== 'string' ||
      !/^\d+$/.test(file.size_bytes)
    )
      throw new Error(`files[${i}] is not a file log (url, path, size_bytes as a decimal string)`);
    return { url: file.url, path: file.path, size_bytes: file.size_bytes };
  });
  return { files, errors: v.errors, notes: v.notes, failedExports: v.failedExports };
}

const OUTPUT_KEYS = new Set(['index', 'name', 'description', 'url', 'path', 'path_prefix', 'type']);

/**
 * The request read on the user side's stdin, checked; throws an Error listing every problem with its
 * field (`request.deliver[0].url: ...`).
 */
export function parseFinishRequest(text: string): FinishRequest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`the request is not JSON (${(err as Error).message})`);
  }
  const problems: string[] = [];
  const at = (field: string, message: string) => problems.push(`request.${field}: ${message}`);
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error('the request is not a JSON object');
  const v = value as Record<string, unknown>;
  for (const key of Object.keys(v))
    if (!['tailBytes', 'deliver', 'export', 'roots'].includes(key)) at(key, 'is not a field of the request');
  if (!isSize(v.tailBytes)) at('tailBytes', 'must be a safe non-negative integer');
  const indices = new Set<number>();
  const outputs = (name: 'deliver' | 'export'): IndexedOutput[] => {
    const list = v[name];
    if (!Array.isArray(list)) {
      at(name, 'must be a list of outputs');
      return [];
    }
    return list.flatMap((o: unknown, i): IndexedOutput[] => {
      const field = `${name}[${i}]`;
      if (typeof o !== 'object' || o === null || Array.isArray(o)) {
        at(field, 'must be an object');
        return [];
      }
      const out = o as Record<string, unknown>;
      const before = problems.length;
      for (const key of Object.keys(out))
        if (!OUTPUT_KEYS.has(key)) at(`${field}.${key}`, 'is not a field of an output');
      if (!isSize(out.index)) at(`${field}.index`, 'must be a non-negative integer');
      else if (indices.has(out.index)) at(`${field}.index`, `${out.index} is given twice`);
      else indices.add(out.index);
      if (typeof out.url !== 'string' || out.url === '') at(`${field}.url`, 'must be a non-empty string');
      else if ((schemeOf(out.url) === 'file') !== (name === 'deliver'))
        at(
          `${field}.url`,
          name === 'deliver'
            ? `must be a file:// URL or an absolute path (got ${out.url.slice(0, 200)})`
            : `must be a remote URL; file:// outputs go in deliver (got ${out.url.slice(0, 200)})`,
        );
      if (typeof out.path !== 'string' || !out.path.startsWith('/') || out.path.includes('\0'))
        at(`${field}.path`, 'must be an absolute container path without NUL');
      if (out.path_prefix !== undefined && typeof out.path_prefix !== 'string')
        at(`${field}.path_prefix`, 'must be a string');
      if (out.type !== undefined && out.type !== 'FILE' && out.type !== 'DIRECTORY')
        at(`${field}.type`, 'must be FILE or DIRECTORY');
      for (const key of ['name', 'description'])
        if (out[key] !== undefined && typeof out[key] !== 'string') at(`${field}.${key}`, 'must be a string');
      return problems.length === before ? [out as IndexedOutput] : [];
    });
  };
  const deliver = outputs('deliver');
  const exported = outputs('export');
  const roots: FinishRequest['roots'] = [];
  if (!Array.isArray(v.roots)) at('roots', 'must be a list of {path, writable}');
  else
    v.roots.forEach((r: unknown, i) => {
      const root = r as Record<string, unknown> | null;
      if (
        typeof root !== 'object' ||
        root === null ||
        typeof root.path !== 'string' ||
        !root.path.startsWith('/') ||
        typeof root.writable !== 'boolean' ||
        Object.keys(root).some((k) => k !== 'path' && k !== 'writable')
      )
        at(`roots[${i}]`, 'must be {path: an absolute path, writable: a boolean}');
      else roots.push({ path: root.path, writable: root.writable });
    });
  if (problems.length > 0) throw new Error(problems.join('; '));
  return { tailBytes: v.tailBytes as number, deliver, export: exported, roots };
}

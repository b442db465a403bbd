import { constants } from 'node:fs';
import { lstat, open, readdir, type FileHandle } from 'node:fs/promises';
import { isAbsolute, posix } from 'node:path';
import { hostPathOf } from '../apptainer/container-plan.js';
import { AllowedRoots } from '../staging/allowed-roots.js';
import {
  expandOutput,
  linksNote,
  openChecked,
  OutputDeliverer,
  WritablePlaces,
  type DeliveryResult,
} from '../staging/deliver-outputs.js';
import { hasWildcard } from '../staging/glob.js';
import { StagingError } from '../staging/staging-error.js';
import { EXECUTOR_FILE, executorDirName } from '../tes/task-directory.js';
import {
  executorIndexOf,
  FRAME_LIMITS,
  FrameWriteError,
  FrameWriter,
  HeaderError,
  isTailedResult,
  parseFinishRequest,
  TOP_RESULT_FILES,
  type FinishDelivery,
  type FinishRequest,
  type IndexedOutput,
} from './frames.js';

/**
 * The part of the gateway that runs as a task's owner, in run-as-user mode, after the job has ended:
 *
 *     node dist/src/run-as/user-side.js finish DIR      (the request as JSON on stdin)
 *
 * started by the root-owned helper (`sudo -u <user> tes-gateway-helper finish DIR`), so it reads the
 * task directory, which only its owner may read, and delivers `file://` outputs with the owner's own
 * rights. It writes frames (frames.ts) on stdout: the result files, the files of remote outputs for
 * the gateway to upload with its credentials, and what delivery did.
 *
 * It loads nothing of the gateway's configuration, Redis, BullMQ or Express
 * (test/unit/user-side-imports.test.ts follows its imports). Exit codes: 0 when every frame was
 * written (outputs that could not be delivered are reported in the delivery frame, not here), 2 for a
 * bad command line or request, 1 when it could not work (the task directory cannot be read, stdout
 * closed); each with a message on stderr.
 */

const PROGRAM = 'tes-gateway user side';
const USAGE = `usage: user-side.js finish DIR   (DIR: the task directory, absolute; the request as JSON on stdin)`;

/** A command line or request this program cannot act on: exit 2. */
class BadInputError extends Error {}

async function main(argv: readonly string[]): Promise<number> {
  // A closed stdout shows as a failed write (FrameWriteError), not as an uncaught 'error' event.
  process.stdout.on('error', () => undefined);
  let dir: string;
  let request: FinishRequest;
  try {
    if (argv.length !== 2 || argv[0] !== 'finish') throw new BadInputError(USAGE);
    dir = argv[1]!;
    if (!isAbsolute(dir) || posix.normalize(dir) !== dir)
      throw new BadInputError(`the task directory ${dir} is not a normalized absolute path; ${USAGE}`);
    request = parseRequest(await readStdin(FRAME_LIMITS.requestBytes));
  } catch (err) {
    if (!(err instanceof BadInputError)) throw err;
    warn(err.message);
    return 2;
  }
  const entries = await readTaskDir(dir);
  const writer = new FrameWriter(process.stdout);
  await sendResults(writer, dir, entries, request.tailBytes);
  const delivered = await new OutputDeliverer(new AllowedRoots(request.roots), []).deliver(
    request.deliver,
    dir,
  );
  const exported = await sendExports(writer, dir, request.export);
  const delivery: FinishDelivery = {
    files: delivered.files,
    errors: [...delivered.errors, ...exported.errors],
    notes: [...delivered.notes, ...exported.notes],
    failedExports: exported.failed,
  };
  await writer.writeBuffer({ kind: 'delivery' }, Buffer.from(JSON.stringify(delivery)));
  return 0;
}

function parseRequest(text: string): FinishRequest {
  try {
    return parseFinishRequest(text);
  } catch (err) {
    throw new BadInputError(`bad request on stdin: ${(err as Error).message}`);
  }
}

async function readStdin(maxBytes: number): Promise<string> {
  const parts: Buffer[] = [];
  let length = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > maxBytes) throw new BadInputError(`the request on stdin is longer than ${maxBytes} bytes`);
    parts.push(chunk);
  }
  if (length === 0) throw new BadInputError('no request on stdin: the gateway sends one JSON object');
  return Buffer.concat(parts).toString('utf8');
}

/** The task directory's entries; it must be a directory of its own, not a link. */
async function readTaskDir(dir: string) {
  const st = await lstat(dir).catch((err: Error) => {
    throw new Error(`the task directory ${dir} cannot be read: ${err.message}`);
  });
  if (st.isSymbolicLink() || !st.isDirectory())
    throw new Error(`the task directory ${dir} is not a directory (or is a symbolic link)`);
  return readdir(dir, { withFileTypes: true }).catch((err: Error) => {
    throw new Error(`the task directory ${dir} cannot be read: ${err.message}`);
  });
}

/**
 * The result files: each executor's (for every `exec-<n>` folder there is), then the job's. Small
 * ones are cut to FRAME_LIMITS.smallResultBytes, stdout and stderr to their last `tailBytes` bytes.
 */
async function sendResults(
  writer: FrameWriter,
  dir: string,
  entries: ReadonlyArray<{ name: string; isDirectory(): boolean }>,
  tailBytes: number,
): Promise<void> {
  const executors = entries
    .filter((e) => e.isDirectory())
    .map((e) => executorIndexOf(e.name))
    .filter((n): n is number => n !== undefined)
    .sort((a, b) => a - b);
  const paths = [
    ...executors.flatMap((n) => Object.values(EXECUTOR_FILE).map((f) => posix.join(executorDirName(n), f))),
    ...TOP_RESULT_FILES,
  ];
  for (const path of paths) {
    const file = await openResult(dir, path);
    if (!file) continue;
    try {
      const { size } = await file.stat();
      if (isTailedResult(posix.basename(path))) {
        const length = Math.min(size, tailBytes);
        const copy = await writer.writeFileRange(
          { kind: 'result', path, size: length, fullSize: size },
          file,
          size - length,
        );
        if (copy.readError) warn(`${path} could not be read whole: ${copy.readError.message}`);
        else if (copy.changed) warn(`${path} changed size while it was read; its tail may be cut`);
      } else {
        const buf = Buffer.alloc(FRAME_LIMITS.smallResultBytes);
        const { bytesRead } = await file.read(buf, 0, buf.length, 0);
        await writer.writeBuffer({ kind: 'result', path }, buf.subarray(0, bytesRead));
      }
    } finally {
      await file.close();
    }
  }
}

/**
 * A result file opened without following a link, and without blocking: a FIFO in its place opens at
 * once and is then left out, as is anything else that is not a regular file. Undefined when absent.
 */
async function openResult(dir: string, path: string): Promise<FileHandle | undefined> {
  let file: FileHandle;
  try {
    file = await open(
      posix.join(dir, path),
      constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
    );
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') warn(`${path} is a symbolic link; left out`);
    else warn(`${path} could not be opened; left out: ${(err as Error).message}`);
    return undefined;
  }
  const st = await file.stat();
  if (!st.isFile()) {
    await file.close();
    warn(`${path} is not a regular file; left out`);
    return undefined;
  }
  return file;
}

/**
 * The files of remote outputs, expanded as delivery expands them (same link rules), each once, at its
 * path in the task directory, so that delivery over the gateway's mirror finds the same files; and
 * the folder of each DIRECTORY output, so an empty one is found too. An output that cannot be
 * expanded or read whole goes into `errors` and `failed`.
 */
async function sendExports(
  writer: FrameWriter,
  dir: string,
  outputs: readonly IndexedOutput[],
): Promise<Omit<DeliveryResult, 'files'> & { failed: number[] }> {
  const errors: string[] = [];
  const notes: string[] = [];
  const failed: number[] = [];
  const places = new WritablePlaces(dir);
  const sent = new Set<string>();
  const relative = (containerPath: string) => posix.relative(dir, hostPathOf(dir, containerPath));
  for (const output of outputs) {
    const field = `outputs[${output.index}]`;
    try {
      const found = await expandOutput(output, places, field);
      if (found.links.length > 0) notes.push(linksNote(field, output.path, found.links));
      if (output.type === 'DIRECTORY' && !hasWildcard(output.path)) {
        const path = relative(output.path);
        if (!sent.has(path)) await writer.writeBuffer({ kind: 'export-dir', path }, Buffer.alloc(0));
        sent.add(path);
      }
      for (const item of found.items) {
        const path = relative(item.path);
        if (sent.has(path)) continue;
        const file = await openChecked(item, field);
        try {
          const copy = await writer.writeFile({ kind: 'export', path }, file);
          sent.add(path);
          if (copy.readError)
            throw new StagingError(field, `${item.path} could not be read: ${copy.readError.message}`);
          if (copy.changed)
            throw new StagingError(
              field,
              `${item.path} changed size while it was read (${copy.size} bytes, then ${copy.sizeAfter}); it was not delivered`,
            );
        } catch (err) {
          if (err instanceof HeaderError)
            throw new StagingError(field, `${item.path} cannot be sent: ${err.message}`);
          throw err;
        } finally {
          await file.close();
        }
      }
    } catch (err) {
      if (err instanceof FrameWriteError) throw err;
      errors.push(err instanceof StagingError ? err.message : `${field}: ${(err as Error).message}`);
      failed.push(output.index);
    }
  }
  return { errors, notes, failed };
}

function warn(message: string): void {
  process.stderr.write(`${PROGRAM}: ${message}\n`);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    warn(err instanceof Error ? err.message : String(err));
    process.exitCode = 1;
  },
);

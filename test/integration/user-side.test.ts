import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { jest } from '@jest/globals';
import { receiveFinish, type FinishReceived, type FinishRequest } from '../../src/run-as/frames.js';
import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { OutputDeliverer } from '../../src/staging/deliver-outputs.js';
import { S3Storage } from '../../src/staging/s3-storage.js';
import { USER_SIDE } from '../helpers/built-program.js';
import { S3_KEY_ID, S3_SECRET, startS3Server, type S3Server } from '../helpers/s3-server.js';

/**
 * The built user side (`node dist/src/run-as/user-side.js finish DIR`) run as a child process over a
 * real task directory, its stdout read by receiveFinish into a mirror, and the remote outputs then
 * delivered from the mirror to a real S3 server (s3rver) by the gateway's own OutputDeliverer, as
 * run-as-user mode does. One case runs it as another user (`setpriv --reuid=nobody`), so that
 * `file://` delivery is seen to write with that user's rights. Running it through sudo and the helper,
 * as the task's real owner, is the end-to-end test's part.
 */
jest.setTimeout(60_000);

const BUCKET = 'tesgw-user-side';
const NOBODY = 65534;

let root: string;
let task: string;
let dest: string;
/** The mirror of the latest run: each run gets a fresh one. */
let mirror: string;
let runs = 0;
let s3: S3Server;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  received?: FinishReceived;
  receiveError?: Error;
}

/**
 * The user side over `dir` with `request` on stdin, its frames received into a fresh mirror. The
 * environment is the helper's (`env -i`); a program that hangs is killed after 20 s.
 */
function runUserSide(
  dir: string,
  request: string,
  options: { asNobody?: boolean; tailBytes?: number } = {},
): Promise<Run> {
  const argv = [process.execPath, USER_SIDE, 'finish', dir];
  const [cmd, ...args] = options.asNobody
    ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', ...argv]
    : argv;
  const child = spawn(cmd!, args, {
    env: { PATH: '/usr/bin:/bin', HOME: '/', LANG: 'C.UTF-8' },
    stdio: ['pipe', 'pipe', 'pipe'],
    timeout: 20_000,
  });
  mirror = join(root, `mirror-${++runs}`);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.end(request);
  const received = receiveFinish(
    child.stdout,
    mirror,
    options.tailBytes === undefined ? {} : { tailBytes: options.tailBytes },
  ).then(
    (r) => ({ received: r }),
    (err: Error) => ({ receiveError: err }),
  );
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('close', (code, signal) => resolve([code, signal])),
  );
  return Promise.all([received, exited]).then(([r, [code, signal]]) => ({ code, signal, stderr, ...r }));
}

function put(path: string, content: string | Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
}

function mkfifo(path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const made = spawnSync('mkfifo', [path], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`mkfifo ${path} failed: ${made.stderr}`);
}

/** Every file below a folder, relative, sorted. */
function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

const STDOUT = Array.from({ length: 2000 }, (_, i) => `line ${i}\n`).join('');
const BINARY = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) & 0xff));

beforeAll(async () => {
  s3 = await startS3Server();
  await s3.createBucket(BUCKET);
});

afterAll(async () => {
  await s3?.close();
});

beforeEach(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), 'user-side-')));
  // Another user (the setpriv cases) reaches what is theirs below it.
  chmodSync(root, 0o755);
  task = join(root, 'task');
  dest = join(root, 'dest');
  mirror = join(root, 'mirror');
  mkdirSync(dest);
  for (const d of ['mnt', 'tmp', 'var-tmp']) mkdirSync(join(task, d), { recursive: true });
  // What the job script leaves: two executors, the second one's exit_code a FIFO a task put there.
  put(join(task, 'exec-0', 'start'), '2026-11-30T10:00:00Z\n');
  put(join(task, 'exec-0', 'end'), '2026-11-30T10:00:05Z\n');
  put(join(task, 'exec-0', 'exit_code'), '0\n');
  put(join(task, 'exec-0', 'stdout'), STDOUT);
  put(join(task, 'exec-0', 'stderr'), 'warning: short\n');
  put(join(task, 'exec-1', 'start'), '2026-11-30T10:00:06Z\n');
  mkfifo(join(task, 'exec-1', 'exit_code'));
  put(join(task, 'exec-1', 'stdout'), '');
  put(join(task, 'job-end'), '');
  // Not result files: never sent.
  put(join(task, 'job.sh'), '#!/bin/bash\n');
  put(join(task, 'exec-x', 'stdout'), 'not an executor\n');
  // Outputs: a file:// one, a DIRECTORY and a wildcard for S3, each with links planted in it.
  put(join(task, 'mnt', 'data', 'out.txt'), 'delivered as the user\n');
  put(join(task, 'mnt', 'results', 'a.txt'), 'a\n');
  put(join(task, 'mnt', 'results', 'sub', 'b.bin'), BINARY);
  mkdirSync(join(task, 'mnt', 'results', 'empty'));
  symlinkSync('/etc/passwd', join(task, 'mnt', 'results', 'passwd'));
  symlinkSync(join(task, 'exec-0'), join(task, 'mnt', 'results', 'sub', 'up'));
  mkfifo(join(task, 'mnt', 'results', 'pipe'));
  put(join(task, 'tmp', 'logs', 'x.log'), 'x\n');
  put(join(task, 'tmp', 'logs', 'y.log'), 'yy\n');
  put(join(task, 'tmp', 'logs', 'z.txt'), 'not matched\n');
  symlinkSync('/etc/shadow', join(task, 'tmp', 'logs', 'shadow.log'));
  mkdirSync(join(task, 'mnt', 'empty-out'));
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

function request(over: Partial<FinishRequest> = {}): FinishRequest {
  return {
    tailBytes: 100,
    deliver: [{ index: 0, url: `file://${dest}/out.txt`, path: '/data/out.txt' }],
    export: [
      { index: 1, url: `s3://${BUCKET}/results`, path: '/results', type: 'DIRECTORY' },
      { index: 2, url: `s3://${BUCKET}/logs`, path: '/tmp/logs/*.log', path_prefix: '/tmp/logs/' },
      { index: 3, url: `s3://${BUCKET}/missing.txt`, path: '/data/missing.txt' },
      { index: 4, url: `s3://${BUCKET}/empty-out`, path: '/empty-out', type: 'DIRECTORY' },
    ],
    roots: [{ path: dest, writable: true }],
    ...over,
  };
}

it('sends results and tails, delivers file:// outputs, exports remote ones without links, and S3 gets them from the mirror', async () => {
  const req = request();
  const run = await runUserSide(task, JSON.stringify(req), { tailBytes: req.tailBytes });
  expect(run.receiveError).toBeUndefined();
  expect(run).toMatchObject({ code: 0, signal: null });
  const got = run.received!;

  // Results: the small files whole, the tails cut with their full sizes; a FIFO is left out, not read.
  expect(readFileSync(join(mirror, 'exec-0', 'exit_code'), 'utf8')).toBe('0\n');
  expect(readFileSync(join(mirror, 'exec-0', 'start'), 'utf8')).toBe('2026-11-30T10:00:00Z\n');
  expect(readFileSync(join(mirror, 'exec-0', 'stdout'), 'utf8')).toBe(STDOUT.slice(-100));
  expect(got.fullSizes.get('exec-0/stdout')).toBe(STDOUT.length);
  expect(got.fullSizes.get('exec-0/stderr')).toBe('warning: short\n'.length);
  expect(got.fullSizes.get('exec-1/stdout')).toBe(0);
  expect(got.fullSizes.has('exec-1/exit_code')).toBe(false);
  expect(run.stderr).toContain('exec-1/exit_code is not a regular file; left out');
  expect(files(join(mirror, 'exec-0'))).toEqual(['end', 'exit_code', 'start', 'stderr', 'stdout']);
  expect(files(join(mirror, 'exec-1'))).toEqual(['start', 'stdout']);
  expect(existsSync(join(mirror, 'job-end'))).toBe(true);
  expect(existsSync(join(mirror, 'system-error'))).toBe(false);
  expect(existsSync(join(mirror, 'job.sh'))).toBe(false);
  expect(existsSync(join(mirror, 'exec-x'))).toBe(false);

  // The file:// output, delivered by the user side, with its record left in the task directory.
  expect(readFileSync(join(dest, 'out.txt'), 'utf8')).toBe('delivered as the user\n');
  expect(readFileSync(join(task, 'delivered'), 'utf8')).toContain('/data/out.txt');
  expect(got.delivery.files).toEqual([
    {
      url: `file://${dest}/out.txt`,
      path: '/data/out.txt',
      size_bytes: String('delivered as the user\n'.length),
    },
  ]);

  // The remote outputs' files, at their paths in the task directory; links and the FIFO left out.
  expect(files(join(mirror, 'mnt'))).toEqual(['results/a.txt', 'results/sub/b.bin']);
  expect(files(join(mirror, 'tmp'))).toEqual(['logs/x.log', 'logs/y.log']);
  expect(readFileSync(join(mirror, 'mnt', 'results', 'sub', 'b.bin')).equals(BINARY)).toBe(true);
  expect(statSync(join(mirror, 'mnt', 'empty-out')).isDirectory()).toBe(true);
  expect(got.exportedFiles).toBe(4);
  expect(got.delivery.notes).toEqual([
    'outputs[1]: 2 symbolic links in /results left out (/results/passwd, /results/sub/up); the gateway does not follow links a task makes',
    'outputs[2]: a symbolic link in /tmp/logs/*.log left out (/tmp/logs/shadow.log); the gateway does not follow links a task makes',
  ]);
  // The output that cannot be expanded: named, and left out of what the gateway sends.
  expect(got.delivery.errors).toEqual([
    `outputs[3]: /data/missing.txt was not created by the executors, so it cannot be delivered to s3://${BUCKET}/missing.txt`,
  ]);
  expect(got.delivery.failedExports).toEqual([3]);

  // The gateway's side: the normal OutputDeliverer over the mirror, with its own S3 credentials.
  const uploader = new S3Storage({
    endpoint: s3.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    accessKeyId: S3_KEY_ID,
    secretAccessKey: S3_SECRET,
    maxAttempts: 2,
  });
  const sendable = req.export.filter((o) => !got.delivery.failedExports.includes(o.index));
  const sent = await new OutputDeliverer(new AllowedRoots([]), [uploader]).deliver(sendable, mirror);
  expect(sent.errors).toEqual([]);
  expect(sent.files.map((f) => [f.url, f.path, f.size_bytes])).toEqual([
    [`s3://${BUCKET}/results/a.txt`, '/results/a.txt', '2'],
    [`s3://${BUCKET}/results/sub/b.bin`, '/results/sub/b.bin', String(BINARY.length)],
    [`s3://${BUCKET}/logs/x.log`, '/tmp/logs/x.log', '2'],
    [`s3://${BUCKET}/logs/y.log`, '/tmp/logs/y.log', '3'],
  ]);
  expect((await s3.read(BUCKET, 'results/sub/b.bin')).bytes.equals(BINARY)).toBe(true);
  expect((await s3.read(BUCKET, 'logs/y.log')).bytes.toString()).toBe('yy\n');
});

it('sends a tail of 0 bytes with the full size when tailBytes is 0', async () => {
  const run = await runUserSide(task, JSON.stringify(request({ tailBytes: 0, deliver: [], export: [] })));
  expect(run).toMatchObject({ code: 0 });
  expect(readFileSync(join(mirror, 'exec-0', 'stdout'), 'utf8')).toBe('');
  expect(run.received!.fullSizes.get('exec-0/stdout')).toBe(STDOUT.length);
  expect(run.received!.delivery).toEqual({ files: [], errors: [], notes: [], failedExports: [] });
});

it('stops with EPIPE, not a hang, when the gateway refuses its frames part way', async () => {
  put(join(task, 'mnt', 'results', 'big.bin'), Buffer.alloc(8 * 1024 * 1024, 1));
  // The gateway asked for 10 bytes of tail: the first stdout frame is refused and the stream let go.
  const run = await runUserSide(task, JSON.stringify(request()), { tailBytes: 10 });
  expect(run.receiveError?.message).toContain('exec-0/stdout: 100 bytes, more than the 10 asked for');
  expect(run).toMatchObject({ code: 1, signal: null });
  expect(run.stderr).toContain(
    'tes-gateway user side: could not write frames: the reader closed the stream (EPIPE)',
  );
});

it('leaves out a result file that is a symbolic link', async () => {
  rmSync(join(task, 'exec-0', 'stderr'));
  symlinkSync('/etc/passwd', join(task, 'exec-0', 'stderr'));
  const run = await runUserSide(task, JSON.stringify(request({ deliver: [], export: [] })), {
    tailBytes: 100,
  });
  expect(run).toMatchObject({ code: 0 });
  expect(run.stderr).toContain('exec-0/stderr is a symbolic link; left out');
  expect(existsSync(join(mirror, 'exec-0', 'stderr'))).toBe(false);
});

it.each([
  ['not JSON', '{"tailBytes":', 'bad request on stdin: the request is not JSON'],
  ['empty', '', 'no request on stdin: the gateway sends one JSON object'],
  [
    'a file:// output to export',
    JSON.stringify({
      tailBytes: 1,
      deliver: [],
      export: [{ index: 0, url: 'file:///x', path: '/x' }],
      roots: [],
    }),
    'bad request on stdin: request.export[0].url: must be a remote URL; file:// outputs go in deliver',
  ],
  [
    'a negative tailBytes and no roots',
    JSON.stringify({ tailBytes: -5, deliver: [], export: [] }),
    'bad request on stdin: request.tailBytes: must be a safe non-negative integer; request.roots: must be a list',
  ],
])('exits 2 with a clear message for a request that is %s', async (_what, text, says) => {
  const run = await runUserSide(task, text);
  expect(run.code).toBe(2);
  expect(run.stderr).toContain(`tes-gateway user side: ${says}`);
  // Nothing was sent and nothing delivered.
  expect(run.receiveError?.message).toContain('ended without a delivery frame');
  expect(readdirSync(dest)).toEqual([]);
});

it('exits 2 with its usage for a bad command line', async () => {
  const run = await runUserSide('relative/dir', JSON.stringify(request()));
  expect(run.code).toBe(2);
  expect(run.stderr).toContain('is not a normalized absolute path; usage: user-side.js finish DIR');
});

it('exits 1 naming the task directory when it is missing', async () => {
  const run = await runUserSide(join(root, 'gone'), JSON.stringify(request()));
  expect(run.code).toBe(1);
  expect(run.stderr).toContain(`the task directory ${join(root, 'gone')} cannot be read: ENOENT`);
});

(process.getuid?.() === 0 ? it : it.skip)(
  'runs as another user (setpriv, root only): reads a 0700 task directory of theirs, writes with their rights',
  async () => {
    const theirs = join(root, 'theirs');
    mkdirSync(theirs);
    const rootOnly = join(root, 'root-only');
    mkdirSync(rootOnly, { mode: 0o755 });
    expect(spawnSync('chown', ['-R', `${NOBODY}:${NOBODY}`, task, theirs]).status).toBe(0);
    chmodSync(task, 0o700);
    const req = request({
      deliver: [
        { index: 0, url: `file://${theirs}/out.txt`, path: '/data/out.txt' },
        { index: 5, url: `file://${rootOnly}/out.txt`, path: '/data/out.txt' },
      ],
      export: [{ index: 1, url: `s3://${BUCKET}/results`, path: '/results', type: 'DIRECTORY' }],
      roots: [
        { path: theirs, writable: true },
        { path: rootOnly, writable: true },
      ],
    });
    const run = await runUserSide(task, JSON.stringify(req), { asNobody: true, tailBytes: 100 });
    expect(run.receiveError).toBeUndefined();
    expect(run.code).toBe(0);
    const got = run.received!;
    expect(lstatSync(join(theirs, 'out.txt')).uid).toBe(NOBODY);
    expect(existsSync(join(rootOnly, 'out.txt'))).toBe(false);
    expect(got.delivery.errors).toHaveLength(1);
    expect(got.delivery.errors[0]).toMatch(/^outputs\[5\]: .*(EACCES|permission denied)/i);
    expect(lstatSync(join(task, 'delivered')).uid).toBe(NOBODY);
    expect(readFileSync(join(mirror, 'exec-0', 'stdout'), 'utf8')).toBe(STDOUT.slice(-100));
    expect(files(join(mirror, 'mnt'))).toEqual(['results/a.txt', 'results/sub/b.bin']);
    // The mirror is the gateway's own (this test's user), whoever ran the user side.
    expect(lstatSync(join(mirror, 'mnt', 'results', 'a.txt')).uid).toBe(process.getuid!());
  },
);

// A task directory nobody may read stops the user side before any frame.
(process.getuid?.() === 0 ? it : it.skip)(
  'exits 1 when the task directory is not readable by its user (root only)',
  async () => {
    chmodSync(task, 0o700);
    const run = await runUserSide(task, JSON.stringify(request()), { asNobody: true });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`the task directory ${task} cannot be read: EACCES`);
  },
);

it('delivers a file:// output once when finish runs again, by its record in the task directory', async () => {
  const req = JSON.stringify(request({ export: [] }));
  expect((await runUserSide(task, req)).code).toBe(0);
  const first = statSync(join(dest, 'out.txt'));
  const again = await runUserSide(task, req);
  expect(again.code).toBe(0);
  expect(again.received!.delivery.files).toHaveLength(1);
  expect(readFileSync(join(task, 'delivered'), 'utf8').trim().split('\n')).toHaveLength(1);
  expect(statSync(join(dest, 'out.txt')).mtimeMs).toBe(first.mtimeMs);
});

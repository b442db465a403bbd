import {
  appendFileSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import {
  encodeHeader,
  FRAME_LIMITS,
  FrameError,
  FrameWriter,
  parseFinishRequest,
  readFrames,
  receiveFinish,
  validateHeader,
  type FinishDelivery,
  type FrameHeader,
} from '../../src/run-as/frames.js';
import { expectGolden } from '../helpers/golden.js';
import { failure } from '../helpers/failure.js';

/**
 * The finish protocol's frames: header checks, the exact bytes a writer sends, a reader over streams
 * cut anywhere, malformed streams, files that change size while they are sent, and receiveFinish
 * writing a mirror.
 */

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'frames-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const DELIVERY: FinishDelivery = {
  files: [{ url: 'file:///dest/out.txt', path: '/data/out.txt', size_bytes: '3' }],
  errors: [],
  notes: [],
  failedExports: [],
};

/** A stream of the given bytes, cut into pieces of `piece` bytes. */
async function* pieces(bytes: Buffer, piece: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < bytes.length; i += piece) yield bytes.subarray(i, i + piece);
}

function frame(header: FrameHeader, body: string | Buffer = ''): Buffer {
  return Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), Buffer.from(body)]);
}

function raw(line: string, body = ''): Buffer {
  return Buffer.from(`${line}\n${body}`);
}

async function collect(bytes: Buffer, piece = bytes.length || 1) {
  const out: Array<{ header: FrameHeader; body: string; offset: number }> = [];
  for await (const f of readFrames(pieces(bytes, piece)))
    out.push({ header: f.header, body: (await f.body.readAll(1 << 20)).toString(), offset: f.offset });
  return out;
}

/** A writer whose frames are collected in memory. */
function memoryWriter(): { writer: FrameWriter; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      parts.push(Buffer.from(chunk));
      done();
    },
  });
  return { writer: new FrameWriter(sink), bytes: () => Buffer.concat(parts) };
}

describe('headers', () => {
  it('accepts each kind in its shape', () => {
    const good: FrameHeader[] = [
      { kind: 'result', path: 'exec-0/exit_code', size: 2 },
      { kind: 'result', path: 'exec-12/stdout', size: 10, fullSize: 100 },
      { kind: 'result', path: 'system-error', size: 0 },
      { kind: 'result', path: 'job-end', size: 4096 },
      { kind: 'export', path: 'mnt/data/out.txt', size: 2 ** 40 },
      { kind: 'export', path: 'tmp/x y/é\n.txt', size: 0 },
      { kind: 'export', path: 'var-tmp/a', size: 1 },
      { kind: 'export-dir', path: 'mnt', size: 0 },
      { kind: 'delivery', size: 17 },
    ];
    for (const h of good) expect(validateHeader(JSON.parse(JSON.stringify(h)))).toEqual(h);
  });

  const BAD: Array<[what: string, header: unknown, says: string]> = [
    ['not an object', [1], 'not a JSON object'],
    ['an unknown kind', { kind: 'secret', size: 0 }, 'unknown kind "secret"'],
    ['no kind', { size: 0 }, 'unknown kind undefined'],
    ['an unknown key', { kind: 'export', path: 'mnt/a', size: 0, mode: 511 }, 'unknown key "mode"'],
    ['a path on delivery', { kind: 'delivery', path: 'mnt/a', size: 0 }, 'unknown key "path"'],
    ['a negative size', { kind: 'export', path: 'mnt/a', size: -1 }, 'size -1 is not a safe non-negative'],
    ['a fractional size', { kind: 'export', path: 'mnt/a', size: 1.5 }, 'size 1.5 is not'],
    ['an unsafe size', { kind: 'export', path: 'mnt/a', size: 2 ** 53 }, 'is not a safe'],
    ['a size as a string', { kind: 'export', path: 'mnt/a', size: '3' }, 'size "3" is not'],
    ['no path', { kind: 'export', size: 0 }, 'path is missing'],
    ['a .. component', { kind: 'export', path: 'mnt/../etc/passwd', size: 0 }, "has a '..' component"],
    ['a leading ..', { kind: 'export', path: '../x', size: 0 }, "has a '..' component"],
    ['an absolute path', { kind: 'export', path: '/etc/passwd', size: 0 }, 'is absolute'],
    ['a NUL', { kind: 'export', path: 'mnt/a\0b', size: 0 }, 'contains a NUL byte'],
    ['a doubled /', { kind: 'export', path: 'mnt//a', size: 0 }, 'empty component'],
    ['a trailing /', { kind: 'export', path: 'mnt/a/', size: 0 }, 'empty component'],
    ['a . component', { kind: 'export', path: 'mnt/./a', size: 0 }, "has a '.' component"],
    ['an empty path', { kind: 'export', path: '', size: 0 }, 'is empty'],
    [
      'a path outside the writable places',
      { kind: 'export', path: 'exec-0/stdout', size: 0 },
      'writable places',
    ],
    [
      'a path too deep',
      { kind: 'export', path: `mnt/${Array(FRAME_LIMITS.exportDepth).fill('d').join('/')}`, size: 0 },
      `more than ${FRAME_LIMITS.exportDepth} components deep`,
    ],
    [
      'a path too long',
      { kind: 'export', path: `mnt/${'d/'.repeat(2100)}x`, size: 0 },
      'longer than 4096 bytes',
    ],
    ['a component too long', { kind: 'export', path: `mnt/${'n'.repeat(256)}`, size: 0 }, 'longer than 255'],
    [
      'a result that is no result file',
      { kind: 'result', path: 'delivered', size: 0 },
      'is not a result file',
    ],
    [
      'an executor folder with a leading 0',
      { kind: 'result', path: 'exec-01/stdout', size: 0, fullSize: 0 },
      'is not a result file',
    ],
    ['an unknown executor file', { kind: 'result', path: 'exec-0/job.sh', size: 0 }, 'is not a result file'],
    [
      'a result one level too deep',
      { kind: 'result', path: 'exec-0/x/stdout', size: 0 },
      'is not a result file',
    ],
    ['a tail without fullSize', { kind: 'result', path: 'exec-0/stderr', size: 3 }, 'fullSize undefined'],
    [
      'a fullSize under the size',
      { kind: 'result', path: 'exec-0/stdout', size: 3, fullSize: 2 },
      'at least the size 3',
    ],
    [
      'fullSize on a small file',
      { kind: 'result', path: 'exec-0/end', size: 3, fullSize: 3 },
      'only for stdout',
    ],
    [
      'a small result over its limit',
      { kind: 'result', path: 'exec-0/exit_code', size: 4097 },
      'over the limit of 4096',
    ],
    ['an export-dir with a body', { kind: 'export-dir', path: 'mnt/a', size: 1 }, 'is not 0'],
    [
      'a delivery over its limit',
      { kind: 'delivery', size: FRAME_LIMITS.deliveryBytes + 1 },
      'over the limit',
    ],
  ];

  it.each(BAD)('refuses %s', (_what, header, says) => {
    expect(() => validateHeader(header)).toThrow(says);
    // A writer refuses to send what a reader would refuse.
    expect(() => encodeHeader(header as FrameHeader)).toThrow(says);
  });
});

describe('the writer', () => {
  it('writes the exact frames of a finish (golden)', async () => {
    const { writer, bytes } = memoryWriter();
    const path = join(dir, 'stdout');
    writeFileSync(path, 'line one\nline two\nline three\n');
    await writer.writeBuffer({ kind: 'result', path: 'exec-0/exit_code' }, Buffer.from('0\n'));
    const file = await open(path, 'r');
    try {
      // The last 11 bytes of 29, as the user side sends a tail.
      await writer.writeFileRange(
        { kind: 'result', path: 'exec-0/stdout', size: 11, fullSize: 29 },
        file,
        18,
      );
      await writer.writeBuffer({ kind: 'export-dir', path: 'mnt/out' }, Buffer.alloc(0));
      await writer.writeFile({ kind: 'export', path: 'mnt/out/all.txt' }, file);
    } finally {
      await file.close();
    }
    await writer.writeBuffer({ kind: 'delivery' }, Buffer.from(JSON.stringify(DELIVERY)));
    expectGolden('frames/finish.txt', bytes().toString());
  });

  it('pads a file that shrinks while it is sent, and says so', async () => {
    const path = join(dir, 'big');
    writeFileSync(path, Buffer.alloc(3 * 1024 * 1024, 0x61));
    const parts: Buffer[] = [];
    let first = true;
    // The reader takes the first chunk, and the file loses all but 100 bytes of what is left.
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        parts.push(Buffer.from(chunk));
        if (first && chunk.length > 1000) {
          first = false;
          truncateSync(path, 1024 * 1024 + 100);
        }
        done();
      },
    });
    const file = await open(path, 'r');
    const copy = await new FrameWriter(sink).writeFile({ kind: 'export', path: 'mnt/big' }, file);
    await file.close();
    expect(copy).toEqual({
      size: 3 * 1024 * 1024,
      fromFile: 1024 * 1024 + 100,
      sizeAfter: 1024 * 1024 + 100,
      changed: true,
    });
    const all = Buffer.concat(parts);
    const header = JSON.parse(all.subarray(0, all.indexOf(0x0a)).toString());
    expect(header).toEqual({ kind: 'export', path: 'mnt/big', size: 3 * 1024 * 1024 });
    const body = all.subarray(all.indexOf(0x0a) + 1);
    expect(body.length).toBe(3 * 1024 * 1024);
    expect(body.subarray(0, 1024 * 1024 + 100).every((b) => b === 0x61)).toBe(true);
    expect(body.subarray(1024 * 1024 + 100).every((b) => b === 0)).toBe(true);
  });

  it('cuts a file that grows while it is sent at the size it announced, and says so', async () => {
    const path = join(dir, 'growing');
    writeFileSync(path, Buffer.alloc(2 * 1024 * 1024, 0x62));
    const parts: Buffer[] = [];
    let first = true;
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        parts.push(Buffer.from(chunk));
        if (first && chunk.length > 1000) {
          first = false;
          appendFileSync(path, Buffer.alloc(5000, 0x63));
        }
        done();
      },
    });
    const file = await open(path, 'r');
    const copy = await new FrameWriter(sink).writeFile({ kind: 'export', path: 'mnt/growing' }, file);
    await file.close();
    expect(copy).toEqual({
      size: 2 * 1024 * 1024,
      fromFile: 2 * 1024 * 1024,
      sizeAfter: 2 * 1024 * 1024 + 5000,
      changed: true,
    });
    const all = Buffer.concat(parts);
    const header = JSON.parse(all.subarray(0, all.indexOf(0x0a)).toString());
    expect(header).toEqual({ kind: 'export', path: 'mnt/growing', size: 2 * 1024 * 1024 });
    expect(all.length - all.indexOf(0x0a) - 1).toBe(2 * 1024 * 1024);
    expect(all.includes(0x63)).toBe(false);
  });

  it('reports a file that stays as it was as unchanged', async () => {
    const path = join(dir, 'still');
    writeFileSync(path, 'still');
    const { writer } = memoryWriter();
    const file = await open(path, 'r');
    const copy = await writer.writeFile({ kind: 'export', path: 'mnt/still' }, file);
    await file.close();
    expect(copy).toEqual({ size: 5, fromFile: 5, sizeAfter: 5, changed: false });
  });
});

describe('the reader', () => {
  const frames = [
    frame({ kind: 'result', path: 'exec-0/exit_code', size: 2 }, '0\n'),
    frame({ kind: 'result', path: 'exec-0/stdout', size: 5, fullSize: 9 }, 'a\nb\nc'),
    frame({ kind: 'export-dir', path: 'mnt/d', size: 0 }),
    frame({ kind: 'export', path: 'mnt/d/x', size: 3 }, '{\n}'),
    frame({ kind: 'delivery', size: 2 }, '{}'),
  ];
  const stream = Buffer.concat(frames);
  const offsets = frames.map((_, i) => Buffer.concat(frames.slice(0, i)).length);

  it.each([1, 2, 7, 64, stream.length])('reads frames from a stream cut every %i bytes', async (piece) => {
    const got = await collect(stream, piece);
    expect(got.map((f) => [f.header.kind, 'path' in f.header ? f.header.path : '', f.body])).toEqual([
      ['result', 'exec-0/exit_code', '0\n'],
      ['result', 'exec-0/stdout', 'a\nb\nc'],
      ['export-dir', 'mnt/d', ''],
      ['export', 'mnt/d/x', '{\n}'],
      ['delivery', '', '{}'],
    ]);
    expect(got.map((f) => f.offset)).toEqual(offsets);
  });

  it('skips the bodies a consumer leaves unread', async () => {
    const kinds: string[] = [];
    for await (const f of readFrames(pieces(stream, 3))) kinds.push(f.header.kind);
    expect(kinds).toEqual(['result', 'result', 'export-dir', 'export', 'delivery']);
  });

  it('streams a body in pieces without holding it whole', async () => {
    const big = Buffer.alloc(5 * 1024 * 1024, 7);
    const sizes: number[] = [];
    for await (const f of readFrames(
      pieces(frame({ kind: 'export', path: 'mnt/big', size: big.length }, big), 1 << 16),
    ))
      for await (const chunk of f.body) sizes.push(chunk.length);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(big.length);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(1 << 16);
  });

  const jobEnd = frame({ kind: 'result', path: 'job-end', size: 0 });
  const MALFORMED: Array<[what: string, bytes: Buffer, frame: number, offset: number, says: string]> = [
    ['a header that is not JSON', raw('{"kind":'), 0, 0, 'the header is not JSON'],
    [
      'a stream that ends inside a header',
      Buffer.from('{"kind":"delivery","size":0}'),
      0,
      0,
      'ended inside a header (28 bytes without a newline)',
    ],
    [
      'a stream that ends inside a body',
      Buffer.concat([jobEnd, raw('{"kind":"export","path":"mnt/x","size":10}', 'abc')]),
      1,
      jobEnd.length,
      "the stream ended after 3 of the body's 10 bytes",
    ],
    [
      'a body longer than its header says',
      Buffer.concat([frame({ kind: 'export', path: 'mnt/x', size: 1 }, 'abc')]),
      1,
      frame({ kind: 'export', path: 'mnt/x', size: 1 }, 'a').length,
      'the stream ended inside a header (2 bytes without a newline)',
    ],
    [
      'a header with a path out of the task directory',
      raw('{"kind":"export","path":"mnt/../../etc/shadow","size":0}'),
      0,
      0,
      'path "mnt/../../etc/shadow" has a \'..\' component',
    ],
    ['an unknown kind', raw('{"kind":"exec","size":0}'), 0, 0, 'unknown kind "exec"'],
    [
      'a header longer than the limit',
      Buffer.from(`{"kind":"export","path":"mnt/${'a'.repeat(FRAME_LIMITS.headerBytes)}`),
      0,
      0,
      `longer than ${FRAME_LIMITS.headerBytes} bytes`,
    ],
    ['an empty line', raw(''), 0, 0, 'the header is not JSON'],
  ];

  it.each(MALFORMED)('fails on %s, naming the frame and where', async (_what, bytes, index, offset, says) => {
    const err = await failure(collect(bytes, 5));
    expect(err).toBeInstanceOf(FrameError);
    expect(err.message).toContain(`frame ${index} at byte ${offset}: `);
    expect(err.message).toContain(says);
  });
});

describe('receiveFinish', () => {
  async function receive(bytes: Buffer, options = {}) {
    return receiveFinish(pieces(bytes, 11), join(dir, 'mirror'), options);
  }

  it('writes results and exports into a fresh mirror, 0700 folders and 0600 files', async () => {
    const got = await receive(
      Buffer.concat([
        frame({ kind: 'result', path: 'exec-0/exit_code', size: 2 }, '3\n'),
        frame({ kind: 'result', path: 'exec-0/stdout', size: 4, fullSize: 1000 }, 'tail'),
        frame({ kind: 'result', path: 'exec-0/stderr', size: 0, fullSize: 0 }),
        frame({ kind: 'result', path: 'job-end', size: 0 }),
        frame({ kind: 'export-dir', path: 'mnt/empty', size: 0 }),
        frame({ kind: 'export', path: 'mnt/d/e/f.txt', size: 1 }, 'f'),
        frame({ kind: 'export', path: 'tmp/g', size: 1 }, 'g'),
        frame({ kind: 'delivery', size: JSON.stringify(DELIVERY).length }, JSON.stringify(DELIVERY)),
      ]),
      { tailBytes: 4 },
    );
    expect(got.delivery).toEqual(DELIVERY);
    expect(got.exportedFiles).toBe(2);
    expect([...got.fullSizes]).toEqual([
      ['exec-0/exit_code', 2],
      ['exec-0/stdout', 1000],
      ['exec-0/stderr', 0],
      ['job-end', 0],
    ]);
    const m = join(dir, 'mirror');
    expect(readFileSync(join(m, 'exec-0/exit_code'), 'utf8')).toBe('3\n');
    expect(readFileSync(join(m, 'exec-0/stdout'), 'utf8')).toBe('tail');
    expect(readFileSync(join(m, 'mnt/d/e/f.txt'), 'utf8')).toBe('f');
    expect(readFileSync(join(m, 'tmp/g'), 'utf8')).toBe('g');
    for (const d of ['', 'exec-0', 'mnt', 'mnt/empty', 'mnt/d', 'mnt/d/e', 'tmp'])
      expect(lstatSync(join(m, d)).mode & 0o7777).toBe(0o700);
    for (const f of ['exec-0/exit_code', 'job-end', 'mnt/d/e/f.txt'])
      expect(lstatSync(join(m, f)).mode & 0o7777).toBe(0o600);
  });

  const delivery = frame(
    { kind: 'delivery', size: JSON.stringify(DELIVERY).length },
    JSON.stringify(DELIVERY),
  );

  const REFUSED: Array<[what: string, bytes: Buffer, says: string]> = [
    [
      'no delivery frame',
      frame({ kind: 'result', path: 'job-end', size: 0 }),
      'ended without a delivery frame',
    ],
    ['an empty stream', Buffer.alloc(0), 'ended without a delivery frame'],
    [
      'a frame after the delivery',
      Buffer.concat([delivery, frame({ kind: 'result', path: 'job-end', size: 0 })]),
      'frame 1 at byte',
    ],
    ['two deliveries', Buffer.concat([delivery, delivery]), 'a delivery frame came after the delivery frame'],
    [
      'a path twice',
      Buffer.concat([
        frame({ kind: 'export', path: 'mnt/a', size: 1 }, 'a'),
        frame({ kind: 'export', path: 'mnt/a', size: 1 }, 'b'),
        delivery,
      ]),
      `frame 1 at byte ${frame({ kind: 'export', path: 'mnt/a', size: 1 }, 'a').length}: mnt/a came twice`,
    ],
    [
      'a file where an earlier frame made a folder',
      Buffer.concat([
        frame({ kind: 'export', path: 'mnt/a/b', size: 1 }, 'a'),
        frame({ kind: 'export', path: 'mnt/a', size: 1 }, 'b'),
        delivery,
      ]),
      'mnt/a is already in the mirror',
    ],
    [
      'a folder where an earlier frame made a file',
      Buffer.concat([
        frame({ kind: 'export', path: 'mnt/a', size: 1 }, 'a'),
        frame({ kind: 'export', path: 'mnt/a/b', size: 1 }, 'b'),
        delivery,
      ]),
      'needs the folder mnt/a, which an earlier frame made a file',
    ],
    [
      'a tail longer than asked for',
      Buffer.concat([
        frame({ kind: 'result', path: 'exec-0/stdout', size: 5, fullSize: 5 }, 'abcde'),
        delivery,
      ]),
      'exec-0/stdout: 5 bytes, more than the 4 asked for',
    ],
    [
      'a delivery that is not JSON',
      frame({ kind: 'delivery', size: 3 }, '{x}'),
      'the delivery frame: not JSON',
    ],
    [
      'a delivery without failedExports',
      frame({ kind: 'delivery', size: 36 }, '{"files":[],"errors":[],"notes":[]}\n'),
      'failedExports is not a list',
    ],
    [
      'a delivery with a bad file log',
      (() => {
        const text = JSON.stringify({ ...DELIVERY, files: [{ url: 'x', path: '/y', size_bytes: 3 }] });
        return frame({ kind: 'delivery', size: text.length }, text);
      })(),
      'files[0] is not a file log',
    ],
  ];

  it.each(REFUSED)('refuses %s', async (_what, bytes, says) => {
    const err = await failure(receive(bytes, { tailBytes: 4 }));
    expect(err.message).toContain(says);
  });

  it('refuses a mirror directory that is not empty', async () => {
    mkdirSync(join(dir, 'mirror'));
    writeFileSync(join(dir, 'mirror', 'left'), '');
    expect((await failure(receive(delivery))).message).toContain(
      'already exists and is not an empty directory',
    );
  });

  it('takes an empty mirror directory that exists', async () => {
    mkdirSync(join(dir, 'mirror'));
    expect((await receive(delivery)).delivery).toEqual(DELIVERY);
  });

  it('reads what a writer writes through a pipe, a large body included', async () => {
    const path = join(dir, 'data');
    const data = Buffer.alloc(4 * 1024 * 1024 + 3);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    writeFileSync(path, data);
    const pipe = new PassThrough({ highWaterMark: 1024 });
    const write = (async () => {
      const writer = new FrameWriter(pipe);
      const file = await open(path, 'r');
      await writer.writeFile({ kind: 'export', path: 'mnt/data' }, file);
      await file.close();
      await writer.writeBuffer({ kind: 'delivery' }, Buffer.from(JSON.stringify(DELIVERY)));
      pipe.end();
    })();
    const [got] = await Promise.all([receiveFinish(pipe, join(dir, 'mirror')), write]);
    expect(got.exportedFiles).toBe(1);
    expect(readFileSync(join(dir, 'mirror', 'mnt', 'data')).equals(data)).toBe(true);
  });
});

describe('the request', () => {
  const good = {
    tailBytes: 100,
    deliver: [{ index: 0, url: 'file:///dest/a', path: '/data/a' }],
    export: [{ index: 2, url: 's3://b/k', path: '/data/*.txt', path_prefix: '/data/', type: 'FILE' }],
    roots: [{ path: '/dest', writable: true }],
  };

  it('accepts a well-formed request', () => {
    expect(parseFinishRequest(JSON.stringify(good))).toEqual(good);
  });

  it('lists every problem with its field', () => {
    const bad = {
      tailBytes: -1,
      deliver: [{ index: 0, url: 's3://b/k', path: 'rel' }, 7],
      export: [{ index: 0, url: 'file:///x', path: '/x', type: 'LINK', mode: 1 }],
      roots: [{ path: 'relative', writable: 'yes' }],
      extra: true,
    };
    const err = (() => {
      try {
        parseFinishRequest(JSON.stringify(bad));
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    for (const says of [
      'request.extra: is not a field of the request',
      'request.tailBytes: must be a safe non-negative integer',
      'request.deliver[0].url: must be a file:// URL or an absolute path',
      'request.deliver[0].path: must be an absolute container path',
      'request.deliver[1]: must be an object',
      'request.export[0].mode: is not a field of an output',
      'request.export[0].index: 0 is given twice',
      'request.export[0].url: must be a remote URL',
      'request.export[0].type: must be FILE or DIRECTORY',
      'request.roots[0]: must be {path: an absolute path, writable: a boolean}',
    ])
      expect(err).toContain(says);
  });

  it('refuses what is not JSON', () => {
    expect(() => parseFinishRequest('{')).toThrow('the request is not JSON');
    expect(() => parseFinishRequest('[]')).toThrow('the request is not a JSON object');
  });
});

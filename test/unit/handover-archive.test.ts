import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { layoutEntries, LayoutError } from '../../src/compute/task-dir.js';
import { writeHandoverArchive } from '../../src/run-as/handover-archive.js';

const A = '01jc0000000000000000000001';
const B = '01jc0000000000000000000002';

describe('the handover archive', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'handover-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Unpacks as the helper does: from the work root, only the named task folders. */
  function unpack(archive: string, into: string, members: string[]): void {
    mkdirSync(into);
    execFileSync(
      'tar',
      [
        '-x',
        '-f',
        archive,
        '--no-same-owner',
        '--no-same-permissions',
        '--no-overwrite-dir',
        '--',
        ...members,
      ],
      { cwd: into },
    );
  }

  it('holds each task folder, its entries from memory and its stage from disk, which GNU tar unpacks', async () => {
    const stage = join(dir, 'stage');
    mkdirSync(join(stage, 'inputs', '0'), { recursive: true });
    writeFileSync(join(stage, 'inputs', '0', 'content'), 'staged\n', { mode: 0o600 });
    const archive = join(dir, 'a.tar');
    await writeHandoverArchive(archive, [
      {
        taskId: A,
        stageDir: stage,
        entries: [
          { kind: 'dir', path: 'exec-0' },
          { kind: 'file', path: 'exec-0/stdout', content: '', mode: 0o600 },
          { kind: 'file', path: 'job.sh', content: '#!/bin/bash\necho hi\n', mode: 0o700 },
        ],
      },
      { taskId: B, entries: [{ kind: 'dir', path: 'tmp' }] },
    ]);
    expect(statSync(archive).mode & 0o777).toBe(0o600);
    const root = join(dir, 'work');
    unpack(archive, root, [A, B]);
    expect(readFileSync(join(root, A, 'inputs', '0', 'content'), 'utf8')).toBe('staged\n');
    expect(readFileSync(join(root, A, 'job.sh'), 'utf8')).toBe('#!/bin/bash\necho hi\n');
    expect(statSync(join(root, A, 'job.sh')).mode & 0o100).toBe(0o100);
    expect(readFileSync(join(root, A, 'exec-0', 'stdout'), 'utf8')).toBe('');
    expect(statSync(join(root, B, 'tmp')).isDirectory()).toBe(true);
    // A file stays a file of its own task: nothing lands beside the task folders.
    expect(
      execFileSync('tar', ['-t', '-f', archive], { encoding: 'utf8' }).split('\n').filter(Boolean),
    ).toEqual([
      `${A}/`,
      `${A}/inputs/`,
      `${A}/inputs/0/`,
      `${A}/inputs/0/content`,
      `${A}/exec-0/`,
      `${A}/exec-0/stdout`,
      `${A}/job.sh`,
      `${B}/`,
      `${B}/tmp/`,
    ]);
  });

  it('keeps long paths whole', async () => {
    const deep = Array.from({ length: 12 }, (_, i) => `folder-number-${i}`).join('/');
    const archive = join(dir, 'a.tar');
    await writeHandoverArchive(archive, [
      { taskId: A, entries: [{ kind: 'file', path: `mnt/${deep}/f`, content: 'x', mode: 0o600 }] },
    ]);
    unpack(archive, join(dir, 'work'), [A]);
    expect(readFileSync(join(dir, 'work', A, 'mnt', deep, 'f'), 'utf8')).toBe('x');
  });

  it('refuses a path that leaves the task folder, a bad task id, and a link in a stage', async () => {
    const archive = join(dir, 'a.tar');
    for (const path of ['../x', '/etc/x', 'a/../../x', 'a//b', '']) {
      await expect(
        writeHandoverArchive(archive, [
          { taskId: A, entries: [{ kind: 'file', path, content: '', mode: 0o600 }] },
        ]),
      ).rejects.toThrow('is not a plain path inside the task directory');
      rmSync(archive, { force: true });
    }
    await expect(writeHandoverArchive(archive, [{ taskId: '../etc', entries: [] }])).rejects.toThrow(
      'is not a task id',
    );
    rmSync(archive, { force: true });
    const stage = join(dir, 'stage');
    mkdirSync(stage);
    symlinkSync('/etc/shadow', join(stage, 'link'));
    await expect(
      writeHandoverArchive(archive, [{ taskId: A, stageDir: stage, entries: [] }]),
    ).rejects.toThrow('is neither a folder nor a regular file');
  });

  it('never writes over a file already at its place', async () => {
    const archive = join(dir, 'a.tar');
    writeFileSync(archive, 'someone else');
    await expect(writeHandoverArchive(archive, [{ taskId: A, entries: [] }])).rejects.toThrow('EEXIST');
    expect(readFileSync(archive, 'utf8')).toBe('someone else');
    expect(existsSync(join(dir, 'work'))).toBe(false);
  });
});

describe('a layout as entries of a task directory to be', () => {
  const W = '/work/01jc0000000000000000000001';

  it('gives every folder on the way once, before what it holds', () => {
    expect(
      layoutEntries(
        [
          { path: `${W}/mnt/data/in`, kind: 'dir', base: W },
          { path: `${W}/mnt/data/in/x.txt`, kind: 'file', base: W },
          { path: `${W}/tmp`, kind: 'dir', base: W },
        ],
        W,
      ),
    ).toEqual([
      { kind: 'dir', path: 'mnt' },
      { kind: 'dir', path: 'mnt/data' },
      { kind: 'dir', path: 'mnt/data/in' },
      { kind: 'file', path: 'mnt/data/in/x.txt', content: '', mode: 0o600 },
      { kind: 'dir', path: 'tmp' },
    ]);
  });

  it('refuses a path needed both as a folder and as a file, and one laid out from elsewhere', () => {
    expect(() =>
      layoutEntries(
        [
          { path: `${W}/mnt/x`, kind: 'file', base: W },
          { path: `${W}/mnt/x/y`, kind: 'dir', base: W },
        ],
        W,
      ),
    ).toThrow(LayoutError);
    expect(() =>
      layoutEntries([{ path: `${W}/inputs/0/data/x`, kind: 'dir', base: `${W}/inputs/0/data` }], W),
    ).toThrow('not from the new task directory');
  });
});

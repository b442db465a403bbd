import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LayoutError, makeLayout, makeTaskDir, writePrivateFile } from '../../src/compute/task-dir.js';

/** The task directory on a real filesystem: private modes, and no link followed while laying it out. */

let root: string;
let work: string;
let secret: string;

const mode = (path: string): number => statSync(path).mode & 0o777;

beforeEach(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), 'task-dir-')));
  work = join(root, 'tasks', 't1');
  secret = join(root, 'secret');
  mkdirSync(secret);
});
afterEach(() => {
  try {
    // Nothing was ever made through a link into the folder outside.
    expect(readdirSync(secret)).toEqual([]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

describe('the task directory', () => {
  it('is created private to the gateway’s user, and made private again when it exists', async () => {
    // The work root below `root` does not exist yet: it is made on the way.
    expect(await makeTaskDir(work)).toBe(true);
    expect(mode(work)).toBe(0o700);
    chmodSync(work, 0o755);
    expect(await makeTaskDir(work)).toBe(false);
    expect(mode(work)).toBe(0o700);
  });

  it('refuses a task directory that is a file', async () => {
    mkdirSync(join(root, 'tasks'));
    writeFileSync(work, '');
    await expect(makeTaskDir(work)).rejects.toThrow(`${work} is not a directory`);
  });

  it('refuses a task directory that is a link', async () => {
    mkdirSync(join(root, 'tasks'));
    symlinkSync(secret, work);
    await expect(makeTaskDir(work)).rejects.toThrow(`${work} is a symbolic link`);
  });

  it('writes its files readable by the gateway’s user only', async () => {
    await makeTaskDir(work);
    await writePrivateFile(join(work, 'job.sh'), '#!/bin/bash\n', 0o700);
    await writePrivateFile(join(work, 'sbatch-command'), 'sbatch x\n');
    expect(mode(join(work, 'job.sh'))).toBe(0o700);
    expect(mode(join(work, 'sbatch-command'))).toBe(0o600);
  });

  it('writes a large file whole, multi-byte characters included', async () => {
    await makeTaskDir(work);
    const text = `${'é'.repeat(3 << 20)}\n`;
    await writePrivateFile(join(work, 'job.sh'), text, 0o700);
    expect(readFileSync(join(work, 'job.sh'), 'utf8')).toBe(text);
  });

  it('writes over a file of an earlier preparation, and makes it private again', async () => {
    await makeTaskDir(work);
    writeFileSync(join(work, 'sbatch-command'), 'an earlier, longer command\n', { mode: 0o644 });
    await writePrivateFile(join(work, 'sbatch-command'), 'sbatch y\n');
    expect(readFileSync(join(work, 'sbatch-command'), 'utf8')).toBe('sbatch y\n');
    expect(mode(join(work, 'sbatch-command'))).toBe(0o600);
  });

  it('refuses to write a file through a link, or into a FIFO, in its place', async () => {
    await makeTaskDir(work);
    symlinkSync(join(secret, 'planted'), join(work, 'job.sh'));
    await expect(writePrivateFile(join(work, 'job.sh'), '#!/bin/bash\n', 0o700)).rejects.toThrow(
      `${work}/job.sh is a symbolic link; the gateway does not follow symbolic links`,
    );
    execFileSync('mkfifo', [join(work, 'sbatch-command')]);
    await expect(writePrivateFile(join(work, 'sbatch-command'), 'sbatch x\n')).rejects.toThrow(
      `${work}/sbatch-command is in the way of a file`,
    );
  });

  it('checks the base of a layout, unless the caller has just made it', async () => {
    mkdirSync(join(root, 'tasks'));
    symlinkSync(secret, work);
    await expect(makeLayout([{ path: join(work, 'tmp'), kind: 'dir', base: work }])).rejects.toThrow(
      `${work} is a symbolic link`,
    );
    rmSync(work);
    expect(await makeTaskDir(work)).toBe(true);
    await makeLayout([{ path: join(work, 'tmp'), kind: 'dir', base: work }], [work]);
    expect(mode(join(work, 'tmp'))).toBe(0o700);
  });

  it('lays out directories 0700 and mount-point files 0600', async () => {
    await makeTaskDir(work);
    await makeLayout([
      { path: join(work, 'mnt/data/sub'), kind: 'dir', base: work },
      { path: join(work, 'mnt/data/in.txt'), kind: 'file', base: work },
    ]);
    expect(mode(join(work, 'mnt'))).toBe(0o700);
    expect(mode(join(work, 'mnt/data/sub'))).toBe(0o700);
    expect(mode(join(work, 'mnt/data/in.txt'))).toBe(0o600);
    // Again, as a retried submission does: what exists is kept.
    await makeLayout([{ path: join(work, 'mnt/data/in.txt'), kind: 'file', base: work }]);
    expect(lstatSync(join(work, 'mnt/data/in.txt')).isFile()).toBe(true);
  });

  it('refuses a component that is a link, in the middle or at the end', async () => {
    await makeTaskDir(work);
    mkdirSync(join(work, 'mnt'));
    symlinkSync(secret, join(work, 'mnt/data'));
    const below = [{ path: join(work, 'mnt/data/sub'), kind: 'dir' as const, base: work }];
    await expect(makeLayout(below)).rejects.toBeInstanceOf(LayoutError);
    await expect(makeLayout(below)).rejects.toThrow(
      `${work}/mnt/data is a symbolic link; the gateway does not follow symbolic links while it lays out a task's directories`,
    );
    symlinkSync(join(secret, 'planted'), join(work, 'mnt/file'));
    await expect(makeLayout([{ path: join(work, 'mnt/file'), kind: 'file', base: work }])).rejects.toThrow(
      `${work}/mnt/file is a symbolic link`,
    );
  });

  it('refuses a FIFO where a mount-point file goes, without waiting on it', async () => {
    await makeTaskDir(work);
    execFileSync('mkfifo', [join(work, 'fifo')]);
    await expect(makeLayout([{ path: join(work, 'fifo'), kind: 'file', base: work }])).rejects.toThrow(
      `${work}/fifo is in the way of a file the task needs`,
    );
  });

  it('makes mount points inside an input directory from the input down', async () => {
    const input = join(root, 'input');
    mkdirSync(input);
    symlinkSync(secret, join(input, 'sub'));
    await expect(makeLayout([{ path: join(input, 'sub/point'), kind: 'dir', base: input }])).rejects.toThrow(
      `${input}/sub is a symbolic link`,
    );
    await makeLayout([{ path: join(input, 'other/point'), kind: 'dir', base: input }]);
    expect(existsSync(join(input, 'other/point'))).toBe(true);
    writeFileSync(join(input, 'plain'), '');
    await expect(makeLayout([{ path: join(input, 'plain/x'), kind: 'dir', base: input }])).rejects.toThrow(
      `${input}/plain is in the way of a directory the task needs`,
    );
  });
});

import {
  chmodSync,
  existsSync,
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
import { dirname, join } from 'node:path';
import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { OutputDeliverer, type OutputUploader } from '../../src/staging/deliver-outputs.js';
import type { TesOutput } from '../../src/tes/types.js';

/**
 * Output delivery against real files: a task directory whose writable places hold what a hostile
 * task would leave there (links to host files and folders, dangling links, links inside folders),
 * and a canary outside every place that must stay as it is, where it is.
 */

let root: string;
let work: string;
let dest: string;
let secretDir: string;
let canary: string;

const NO_LINKS = 'the gateway does not follow links a task makes';

/** Writes a file in the task's host view of a container path (everything outside /tmp lives in mnt/). */
function put(containerPath: string, text: string): string {
  const host = join(work, 'mnt', containerPath);
  mkdirSync(dirname(host), { recursive: true });
  writeFileSync(host, text);
  return host;
}

function plant(containerPath: string, target: string): void {
  const host = join(work, 'mnt', containerPath);
  mkdirSync(dirname(host), { recursive: true });
  symlinkSync(target, host);
}

function deliverer(uploaders: OutputUploader[] = []): OutputDeliverer {
  return new OutputDeliverer(new AllowedRoots([dest]), uploaders);
}

function expectCanaryUntouched(): void {
  expect(readFileSync(canary, 'utf8')).toBe('canary\n');
  expect(readdirSync(secretDir)).toEqual(['canary.txt']);
}

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

beforeEach(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), 'deliver-')));
  work = join(root, 'task');
  for (const d of ['mnt', 'tmp', 'var-tmp']) mkdirSync(join(work, d), { recursive: true });
  dest = join(root, 'dest');
  mkdirSync(dest);
  secretDir = join(root, 'secret');
  mkdirSync(secretDir);
  canary = join(secretDir, 'canary.txt');
  writeFileSync(canary, 'canary\n');
});

afterEach(() => {
  try {
    expectCanaryUntouched();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

describe('OutputDeliverer', () => {
  it('copies FILE, DIRECTORY and wildcard outputs, leaving the task’s files in place', async () => {
    const result = put('/out/result.txt', 'result');
    chmodSync(result, 0o600);
    put('/out/dir/a.txt', 'a');
    put('/out/dir/sub/b.txt', 'bb');
    put('/out/one.log', '1');
    put('/out/deep/er/x.txt', 'deep');
    put('/out/x.txt', 'top');
    writeFileSync(join(work, 'tmp/t.txt'), 'in tmp');
    const outputs: TesOutput[] = [
      { path: '/out/result.txt', url: `file://${dest}/result.txt`, type: 'FILE' },
      { path: '/out/dir', url: `${dest}/dir`, type: 'DIRECTORY' },
      { path: '/out/*.log', path_prefix: '/out/', url: `${dest}/logs/`, type: 'FILE' },
      { path: '/out/**/x.txt', path_prefix: '/out/', url: `${dest}/x/`, type: 'FILE' },
      { path: '/tmp/t.txt', url: `${dest}/t.txt`, type: 'FILE' },
    ];
    const delivered = await deliverer().deliver(outputs, work);
    expect(delivered.errors).toEqual([]);
    expect(delivered.notes).toEqual([]);
    expect(delivered.files.map((f) => [f.path, f.size_bytes])).toEqual([
      ['/out/result.txt', '6'],
      ['/out/dir/a.txt', '1'],
      ['/out/dir/sub/b.txt', '2'],
      ['/out/one.log', '1'],
      ['/out/deep/er/x.txt', '4'],
      ['/out/x.txt', '3'],
      ['/tmp/t.txt', '6'],
    ]);
    expect(files(dest)).toEqual([
      'dir/a.txt',
      'dir/sub/b.txt',
      'logs/one.log',
      'result.txt',
      't.txt',
      'x/deep/er/x.txt',
      'x/x.txt',
    ]);
    // Copied, not moved; and the copy is an ordinary file of the gateway's, not private like the task's.
    expect(readFileSync(result, 'utf8')).toBe('result');
    const umask = parseInt(/^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]!, 8);
    expect(statSync(join(dest, 'result.txt')).mode & 0o777).toBe(0o666 & ~umask);
  });

  it('refuses a FILE output that is a link to a host file', async () => {
    plant('/out/result.txt', canary);
    const { files: sent, errors } = await deliverer().deliver(
      [{ path: '/out/result.txt', url: `${dest}/result.txt`, type: 'FILE' }],
      work,
    );
    expect(errors).toEqual([
      `outputs[0]: /out/result.txt resolves to ${canary}, outside the task's writable places; ${NO_LINKS}`,
    ]);
    expect(sent).toEqual([]);
    expect(files(dest)).toEqual([]);
  });

  it('refuses an output below a directory the task replaced with a link to a host folder', async () => {
    plant('/w/x', secretDir);
    const { errors } = await deliverer().deliver(
      [{ path: '/w/x/canary.txt', url: `${dest}/stolen.txt`, type: 'FILE' }],
      work,
    );
    expect(errors).toEqual([
      `outputs[0]: /w/x/canary.txt resolves to ${canary}, outside the task's writable places; ${NO_LINKS}`,
    ]);
    expect(files(dest)).toEqual([]);
  });

  it('refuses a DIRECTORY output that is a link to a host folder', async () => {
    plant('/out/dir', secretDir);
    const { errors } = await deliverer().deliver(
      [{ path: '/out/dir', url: `${dest}/dir`, type: 'DIRECTORY' }],
      work,
    );
    expect(errors).toEqual([
      `outputs[0]: /out/dir resolves to ${secretDir}, outside the task's writable places; ${NO_LINKS}`,
    ]);
    expect(files(dest)).toEqual([]);
  });

  it('refuses a wildcard whose base directory is a link to a host folder', async () => {
    plant('/out/sub', secretDir);
    const { errors } = await deliverer().deliver(
      [{ path: '/out/sub/*.txt', path_prefix: '/out/', url: `${dest}/`, type: 'FILE' }],
      work,
    );
    expect(errors).toEqual([
      `outputs[0]: /out/sub resolves to ${secretDir}, outside the task's writable places; ${NO_LINKS}`,
    ]);
    expect(files(dest)).toEqual([]);
  });

  it('leaves links inside a DIRECTORY output or a wildcard’s directory out, and says so', async () => {
    put('/out/dir/real.txt', 'real');
    plant('/out/dir/leak.txt', canary);
    plant('/out/dir/nested/folder', secretDir);
    plant('/out/dir/inside.txt', 'real.txt');
    const {
      files: sent,
      errors,
      notes,
    } = await deliverer().deliver(
      [
        { path: '/out/dir', url: `${dest}/dir`, type: 'DIRECTORY' },
        { path: '/out/dir/*.txt', path_prefix: '/out/dir/', url: `${dest}/w/`, type: 'FILE' },
      ],
      work,
    );
    expect(errors).toEqual([]);
    expect(sent.map((f) => f.path)).toEqual(['/out/dir/real.txt', '/out/dir/real.txt']);
    expect(notes).toEqual([
      'outputs[0]: 3 symbolic links in /out/dir left out (/out/dir/inside.txt, /out/dir/leak.txt, ' +
        `/out/dir/nested/folder); ${NO_LINKS}`,
      `outputs[1]: 2 symbolic links in /out/dir/*.txt left out (/out/dir/inside.txt, /out/dir/leak.txt); ${NO_LINKS}`,
    ]);
    expect(files(dest)).toEqual(['dir/real.txt', 'w/real.txt']);
  });

  it('refuses a dangling link, whose target a copy would create', async () => {
    plant('/out/result.txt', join(dest, 'planted.txt'));
    const { errors } = await deliverer().deliver(
      [{ path: '/out/result.txt', url: `${dest}/result.txt`, type: 'FILE' }],
      work,
    );
    expect(errors).toEqual([
      `outputs[0]: /out/result.txt is a symbolic link to a path that does not exist; ${NO_LINKS}`,
    ]);
    expect(files(dest)).toEqual([]);
  });

  it('refuses a loop of links', async () => {
    plant('/out/a', join(work, 'mnt/out/b'));
    plant('/out/b', join(work, 'mnt/out/a'));
    const { errors } = await deliverer().deliver([{ path: '/out/a', url: `${dest}/a`, type: 'FILE' }], work);
    expect(errors).toEqual([`outputs[0]: /out/a is a loop of symbolic links; ${NO_LINKS}`]);
  });

  it('delivers a FILE output through a link that stays inside the writable places', async () => {
    put('/out/real.txt', 'real');
    plant('/out/alias.txt', 'real.txt');
    writeFileSync(join(work, 'tmp/scratch.txt'), 'scratch');
    plant('/out/from-tmp.txt', join(work, 'tmp/scratch.txt'));
    const { files: sent, errors } = await deliverer().deliver(
      [
        { path: '/out/alias.txt', url: `${dest}/alias.txt`, type: 'FILE' },
        { path: '/out/from-tmp.txt', url: `${dest}/from-tmp.txt`, type: 'FILE' },
      ],
      work,
    );
    expect(errors).toEqual([]);
    expect(sent.map((f) => f.size_bytes)).toEqual(['4', '7']);
    expect(readFileSync(join(dest, 'alias.txt'), 'utf8')).toBe('real');
    expect(readFileSync(join(dest, 'from-tmp.txt'), 'utf8')).toBe('scratch');
  });

  it('hands uploaders the resolved, checked path, and nothing outside', async () => {
    put('/out/real.txt', 'real');
    plant('/out/alias.txt', 'real.txt');
    plant('/out/leak.txt', canary);
    const uploaded: string[] = [];
    const s3: OutputUploader = {
      schemes: ['s3'],
      upload: async (localPath) => {
        uploaded.push(localPath);
      },
    };
    const { errors } = await deliverer([s3]).deliver(
      [
        { path: '/out/alias.txt', url: 's3://b/alias.txt', type: 'FILE' },
        { path: '/out/leak.txt', url: 's3://b/leak.txt', type: 'FILE' },
      ],
      work,
    );
    expect(uploaded).toEqual([join(work, 'mnt/out/real.txt')]);
    expect(errors).toEqual([
      `outputs[1]: /out/leak.txt resolves to ${canary}, outside the task's writable places; ${NO_LINKS}`,
    ]);
  });

  it('still says what the executors did not create', async () => {
    const { errors } = await deliverer().deliver(
      [
        { path: '/out/missing.txt', url: `${dest}/m.txt`, type: 'FILE' },
        { path: '/out/none/*.txt', url: `${dest}/n/`, type: 'FILE' },
      ],
      work,
    );
    expect(errors).toEqual([
      `outputs[0]: /out/missing.txt was not created by the executors, so it cannot be delivered to ${dest}/m.txt`,
    ]);
    expect(existsSync(join(dest, 'm.txt'))).toBe(false);
  });
});

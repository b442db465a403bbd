import { jest } from '@jest/globals';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  createTask,
  FAKE_APPTAINER,
  requireSlurm,
  startTestGateway,
  testImages,
  waitFor,
  type TestGateway,
} from '../helpers/gateway.js';
import { S3_KEY_ID, S3_SECRET, startS3Server, type S3Server } from '../helpers/s3-server.js';

/**
 * Data in and out on the real cluster: inputs as content, file:// and http, outputs to a file, a
 * directory and a wildcard, to disk and to an S3 bucket; refusals of paths outside the allowed roots;
 * a folder of a writable root bound in place, which the executor writes (Toil's job store), and one
 * of a read-only root, which it cannot; images pulled once into the shared cache from the stand-in's
 * registry.
 */
jest.setTimeout(240_000);

let gw: TestGateway;
let s3: S3Server;
let http: Server;
let httpBase: string;
let data: string;
let shared: string;
let pullLog: string;
const ids: Record<string, string> = {};
const REMOTE = 'remote input over http\n';

beforeAll(async () => {
  requireSlurm();
  const images = testImages();
  data = mkdtempSync('/var/tmp/tesgw-data-');
  writeFileSync(join(data, 'local.txt'), 'local input\n');
  symlinkSync('/etc/passwd', join(data, 'sneaky'));
  mkdirSync(join(data, 'store'));
  shared = mkdtempSync('/var/tmp/tesgw-shared-');
  mkdirSync(join(shared, 'jobstore'));
  writeFileSync(join(shared, 'jobstore', 'job-1'), 'queued\n');
  pullLog = join(data, 'pulls.log');
  process.env.FAKE_APPTAINER_REGISTRY = images.registry;
  process.env.FAKE_APPTAINER_PULL_LOG = pullLog;
  process.env.FAKE_APPTAINER_PULL_DELAY_MS = '300';

  http = createServer((req, res) => {
    if (req.url === '/remote.txt') res.end(REMOTE);
    else res.writeHead(404).end('no such file');
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  httpBase = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  s3 = await startS3Server();
  await s3.createBucket('results');

  gw = await startTestGateway('data', {
    backend: 'slurm',
    container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
    slurm: { defaultPartition: 'debug' },
    storage: {
      allowedRoots: [data, { path: shared, writable: true }],
      // The test's file server listens on loopback, which downloads may reach only when allowed.
      http: { allowedPrivateNetworks: ['127.0.0.0/8'] },
      s3: { endpoint: s3.endpoint, forcePathStyle: true, accessKeyId: S3_KEY_ID, secretAccessKey: S3_SECRET },
    },
  });

  ids.typical = await createTask(gw.base, {
    inputs: [
      {
        path: '/in/script.sh',
        content:
          'cat /in/local.txt /in/remote.txt > /out/result.txt\nmkdir -p /out/dir/sub\necho nested > /out/dir/sub/n.txt\necho top > /out/dir/t.txt\necho a > /out/a.log\necho bb > /out/b.log\n',
      },
      { path: '/in/local.txt', url: `file://${data}/local.txt` },
      { path: '/in/remote.txt', url: `${httpBase}/remote.txt` },
    ],
    outputs: [
      { path: '/out/result.txt', url: `file://${data}/results/result.txt` },
      { path: '/out/dir', url: 's3://results/dir', type: 'DIRECTORY' },
      { path: '/out/*.log', path_prefix: '/out/', url: 's3://results/logs/' },
    ],
    executors: [{ image: 'alpine', command: ['sh', '/in/script.sh'] }],
  });
  ids.failedWithOutput = await createTask(gw.base, {
    outputs: [{ path: '/out/rc', url: `${data}/results/rc` }],
    executors: [{ image: 'alpine', command: ['sh', '-c', 'echo 3 > /out/rc; exit 3'] }],
  });
  ids.symlinkInput = await createTask(gw.base, {
    inputs: [{ path: '/in/p', url: `${data}/sneaky` }],
    executors: [{ image: 'alpine', command: ['true'] }],
  });
  ids.gs = await createTask(gw.base, {
    inputs: [{ path: '/in/x', url: 'gs://bucket/x' }],
    executors: [{ image: 'alpine', command: ['true'] }],
  });
  ids.unknownImage = await createTask(gw.base, {
    executors: [{ image: 'docker://nope/never:1', command: ['true'] }],
  });
  // Toil's shape: the job store as a DIRECTORY input at its own path, written by the job.
  const writeStore = (store: string) => ({
    inputs: [{ path: store, url: `file://${store}`, type: 'DIRECTORY' }],
    executors: [
      {
        image: 'alpine',
        command: ['sh', '-c', 'cat "$0/job-1" > /dev/null && echo done > "$0/job-1.done"', store],
      },
    ],
  });
  writeFileSync(join(data, 'store', 'job-1'), 'queued\n');
  ids.writableStore = await createTask(gw.base, writeStore(join(shared, 'jobstore')));
  ids.readOnlyStore = await createTask(gw.base, writeStore(join(data, 'store')));
  ids.shared1 = await createTask(gw.base, {
    executors: [{ image: 'ubuntu:22.04', command: ['echo', 'one'] }],
  });
  ids.shared2 = await createTask(gw.base, {
    executors: [{ image: 'docker://ubuntu:22.04', command: ['echo', 'two'] }],
  });
});

afterAll(async () => {
  await gw?.close();
  if (shared) rmSync(shared, { recursive: true, force: true });
  await s3?.close();
  http?.close();
  delete process.env.FAKE_APPTAINER_PULL_DELAY_MS;
});

const systemLogs = (task: any): string => (task.logs?.[0]?.system_logs ?? []).join('\n');

describe('inputs and outputs on the real cluster', () => {
  it('stages content, file and http inputs and delivers file, directory and wildcard outputs', async () => {
    const task = await waitFor(gw.base, ids.typical!);
    expect(systemLogs(task)).not.toMatch(/error/i);
    expect(task.state).toBe('COMPLETE');
    expect(readFileSync(join(data, 'results/result.txt'), 'utf8')).toBe(`local input\n${REMOTE}`);
    expect((await s3.read('results', 'dir/sub/n.txt')).bytes.toString()).toBe('nested\n');
    expect((await s3.read('results', 'dir/t.txt')).bytes.toString()).toBe('top\n');
    expect((await s3.read('results', 'logs/a.log')).bytes.toString()).toBe('a\n');
    expect((await s3.read('results', 'logs/b.log')).bytes.toString()).toBe('bb\n');
    const outputs = [...task.logs[0].outputs].sort((a: any, b: any) => a.url.localeCompare(b.url));
    expect(outputs).toEqual([
      {
        url: `file://${data}/results/result.txt`,
        path: '/out/result.txt',
        size_bytes: String(12 + REMOTE.length),
      },
      { url: 's3://results/dir/sub/n.txt', path: '/out/dir/sub/n.txt', size_bytes: '7' },
      { url: 's3://results/dir/t.txt', path: '/out/dir/t.txt', size_bytes: '4' },
      { url: 's3://results/logs/a.log', path: '/out/a.log', size_bytes: '2' },
      { url: 's3://results/logs/b.log', path: '/out/b.log', size_bytes: '3' },
    ]);
    expect(JSON.stringify(task)).not.toContain(S3_SECRET);
  });

  it('delivers outputs of a failed executor and keeps EXECUTOR_ERROR', async () => {
    const task = await waitFor(gw.base, ids.failedWithOutput!);
    expect(task.state).toBe('EXECUTOR_ERROR');
    expect(readFileSync(join(data, 'results/rc'), 'utf8')).toBe('3\n');
  });

  it('refuses an input through a symlink out of a root, naming the URL and the allowed roots', async () => {
    const task = await waitFor(gw.base, ids.symlinkInput!);
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(systemLogs(task)).toContain('sneaky is outside the allowed roots');
    expect(systemLogs(task)).toContain(data);
  });

  it.each([
    [
      'an input outside the roots',
      'inputs[0].url',
      { inputs: [{ path: '/in/shadow', url: 'file:///etc/shadow' }] },
    ],
    [
      'an input with ..',
      'inputs[0].url',
      { inputs: [{ path: '/in/p', url: `file://${data}/../../etc/passwd` }] },
    ],
    [
      'an output outside the roots',
      'outputs[0].url',
      { outputs: [{ path: '/out/evil', url: 'file:///etc/tesgw-evil' }] },
    ],
  ])('refuses at create %s with a 400 naming the field and the roots', async (_what, field, body) => {
    const res = await fetch(`${gw.base}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        ...body,
        executors: [{ image: 'alpine', command: ['sh', '-c', 'echo x > /out/evil'] }],
      }),
    });
    expect(res.status).toBe(400);
    const answer = (await res.json()) as { message: string; errors: Array<{ path: string }> };
    expect(answer.errors.map((e) => e.path)).toEqual([field]);
    expect(answer.message).toContain('is outside the allowed roots: ');
    expect(answer.message).toContain(data);
    expect(existsSync('/etc/tesgw-evil')).toBe(false);
  });

  it('binds a folder of a writable root read-write at its own path: the executor writes into it', async () => {
    const task = await waitFor(gw.base, ids.writableStore!);
    expect(systemLogs(task)).not.toMatch(/error/i);
    expect(task.state).toBe('COMPLETE');
    expect(readFileSync(join(shared, 'jobstore', 'job-1.done'), 'utf8')).toBe('done\n');
  });

  it('binds a folder of a read-only root read-only: writing there fails the executor', async () => {
    const task = await waitFor(gw.base, ids.readOnlyStore!);
    expect(task.state).toBe('EXECUTOR_ERROR');
    expect(task.logs[0].logs[0].stderr).toContain('Read-only file system');
    expect(existsSync(join(data, 'store', 'job-1.done'))).toBe(false);
  });

  it('accepts an unsupported scheme at create time and fails the task with the reason', async () => {
    const task = await waitFor(gw.base, ids.gs!);
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(systemLogs(task)).toMatch(
      /gs:\/\/ URLs are not supported by this gateway \(supported: file, http, https, s3\)/,
    );
  });

  it('fails a task with an unknown image at once, with the registry message', async () => {
    const task = await waitFor(gw.base, ids.unknownImage!, undefined, 30_000);
    expect(task.state).toBe('SYSTEM_ERROR');
    expect(systemLogs(task)).toMatch(
      /executors\[0\]\.image: cannot pull docker:\/\/nope\/never:1: .*manifest unknown/,
    );
    expect(task.logs[0].metadata).toBeUndefined();
  });

  it('pulls an image shared by two tasks once', async () => {
    const [one, two] = await Promise.all([waitFor(gw.base, ids.shared1!), waitFor(gw.base, ids.shared2!)]);
    expect([one.state, two.state]).toEqual(['COMPLETE', 'COMPLETE']);
    const pulls = readFileSync(pullLog, 'utf8')
      .split('\n')
      .filter((l) => l.includes('ubuntu'));
    expect(pulls).toHaveLength(1);
    mkdirSync(join(data, 'done'), { recursive: true });
  });
});

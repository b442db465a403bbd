import { jest } from '@jest/globals';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  FAKE_APPTAINER,
  requireSlurm,
  startTestGateway,
  testImages,
  type TestGateway,
} from '../helpers/gateway.js';
import { isTerminal } from '../../src/tes/state.js';

/**
 * Nextflow (nf-ga4gh), Cromwell and Sprocket cannot be installed here, so their request shapes are
 * replayed through the HTTP API on the real single-node Slurm, each as its client sends and polls them
 * (read from their sources; see ../shared/FACTS.md), and their outputs are read back where the client
 * reads them. Images come from the Apptainer stand-in's registry. Every task sends `disk_gb`: the
 * cluster's nodes advertise no TmpDisk, so a disk request must not make a task unrunnable.
 */
jest.setTimeout(300_000);

let gw: TestGateway;
let data: string;
const POLL_MS = 1000;

/** One HTTP exchange as a client makes it; `body` is sent as written (a string) or as JSON. */
async function call(method: string, url: string, body?: unknown): Promise<{ status: number; json: any }> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.headers = { 'content-type': 'application/json' };
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

/** Like `call`, but anything other than 200 fails the replay, as it would fail the client. */
async function ok(method: string, url: string, body?: unknown): Promise<any> {
  const { status, json } = await call(method, url, body);
  if (status !== 200) throw new Error(`${method} ${url} answered ${status}: ${JSON.stringify(json)}`);
  return json;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Writes a file, making its folder first. */
function put(path: string, text: string): string {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return path;
}

const read = (path: string) => readFileSync(path, 'utf8');

/** Fails naming, for each task not in its expected state, what the gateway logged about it. */
async function expectStates(listed: Array<{ id: string; state: string }>, expected: Map<string, string>) {
  const wrong = [];
  for (const [id, state] of expected) {
    const got = listed.find((t) => t.id === id)?.state;
    if (got === state) continue;
    const full = await ok('GET', `${gw.base}/tasks/${id}?view=FULL`);
    const log = full.logs?.[0] ?? {};
    const stderr = (log.logs ?? []).map((l: any) => l.stderr ?? '').join('');
    wrong.push(
      `${full.name} ${id}: ${got ?? 'not listed'}, not ${state}\n  ${(log.system_logs ?? []).join('\n  ')}\n  ${stderr}`,
    );
  }
  if (wrong.length > 0) throw new Error(wrong.join('\n'));
}

beforeAll(async () => {
  requireSlurm();
  process.env.FAKE_APPTAINER_REGISTRY = testImages().registry;
  data = mkdtempSync('/var/tmp/tesgw-replays-data-');
  gw = await startTestGateway('replays', {
    backend: 'slurm',
    container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
    slurm: { defaultPartition: 'debug' },
    storage: { allowedRoots: [data] },
  });
});

afterAll(async () => {
  await gw?.close();
  delete process.env.FAKE_APPTAINER_REGISTRY;
  rmSync(data, { recursive: true, force: true });
});

/**
 * nf-ga4gh: `/v1` paths, the API key as a query parameter on every call, `.command.sh` and
 * `.command.run` as file:// inputs at /work, a `bash -o pipefail -c` executor, control files as
 * outputs, a wildcard output with `path_prefix` and a directory output; it polls GET without `view`
 * about once a second, then reads the exit code from the FULL view.
 */
describe('Nextflow (nf-ga4gh) request shapes', () => {
  const API_KEY = 'nf-key-0123456789';
  const withKey = (path: string) => `${gw.url}/v1${path}${path.includes('?') ? '&' : '?'}apikey=${API_KEY}`;

  const wrapper = [
    '#!/bin/bash',
    'NXF_CHDIR=/work',
    'cd "$NXF_CHDIR"',
    '/bin/bash -ue .command.sh > .command.out 2> .command.err',
    'ret=$?',
    'printf %s "$ret" > .exitcode',
    'exit $ret',
    '',
  ].join('\n');

  async function submit(name: string, script: string): Promise<{ id: string; workDir: string }> {
    const workDir = join(data, 'nextflow', 'work', name.replace(/\W/g, ''), 'a1b2c3d4e5');
    put(join(workDir, '.command.sh'), script);
    put(join(workDir, '.command.run'), wrapper);
    const reads = put(join(data, 'nextflow', 'reads.txt'), 'acgt\nttga\n');
    const fileUrl = (path: string) => `file://${path}`;
    const body = {
      name,
      inputs: [
        { url: fileUrl(join(workDir, '.command.sh')), path: '/work/.command.sh', type: 'FILE' },
        { url: fileUrl(join(workDir, '.command.run')), path: '/work/.command.run', type: 'FILE' },
        { url: fileUrl(reads), path: '/work/reads.txt', type: 'FILE' },
      ],
      outputs: [
        ...['.command.out', '.command.err', '.command.log', '.exitcode'].map((f) => ({
          path: `/work/${f}`,
          url: fileUrl(join(workDir, f)),
        })),
        { path: '/work/*.fa', path_prefix: '/work', url: fileUrl(workDir), type: 'FILE' },
        { path: '/work/results', url: fileUrl(join(workDir, 'results')), type: 'DIRECTORY' },
      ],
      resources: { cpu_cores: 1, ram_gb: 0.5, disk_gb: 1.0 },
      executors: [
        {
          image: 'alpine',
          command: ['bash', '-o', 'pipefail', '-c', 'bash /work/.command.run 2>&1 | tee /work/.command.log'],
          workdir: '/work',
        },
      ],
    };
    const { id } = await ok('POST', withKey('/tasks'), body);
    return { id, workDir };
  }

  /** Nextflow's polling: a GET without view until the state is final, then FULL for the exit code. */
  async function follow(id: string): Promise<{ polls: number; full: any }> {
    let polls = 0;
    for (;;) {
      const task = await ok('GET', withKey(`/tasks/${id}`));
      polls += 1;
      expect(Object.keys(task).sort()).toEqual(['id', 'state']);
      if (isTerminal(task.state)) break;
      await sleep(POLL_MS);
    }
    return { polls, full: await ok('GET', withKey(`/tasks/${id}?view=FULL`)) };
  }

  it('runs a process and delivers its control files, wildcard and directory outputs', async () => {
    const { id, workDir } = await submit(
      'hello (1)',
      [
        'tr a-z A-Z < reads.txt > upper.fa',
        'cp reads.txt copy.fa',
        'mkdir -p results/sub && echo report > results/sub/report.txt',
        'echo "nextflow task done"',
        '',
      ].join('\n'),
    );
    const { full } = await follow(id);
    expect(full.state).toBe('COMPLETE');
    expect(full.logs[0].logs[0].exit_code).toBe(0);
    expect(read(join(workDir, '.exitcode'))).toBe('0');
    expect(read(join(workDir, '.command.out'))).toBe('nextflow task done\n');
    expect(read(join(workDir, 'upper.fa'))).toBe('ACGT\nTTGA\n');
    expect(read(join(workDir, 'copy.fa'))).toBe('acgt\nttga\n');
    expect(read(join(workDir, 'results', 'sub', 'report.txt'))).toBe('report\n');
    expect(full.resources.disk_gb).toBe(1);
  });

  it('delivers the exit-code file of a failed process', async () => {
    const { id, workDir } = await submit(
      'fails (2)',
      'echo partial > partial.fa\necho "bad input" >&2\nexit 3\n',
    );
    const { full } = await follow(id);
    expect(full.state).toBe('EXECUTOR_ERROR');
    expect(full.logs[0].logs[0].exit_code).toBe(3);
    expect(read(join(workDir, '.exitcode'))).toBe('3');
    expect(read(join(workDir, '.command.err'))).toBe('bad input\n');
    expect(read(join(workDir, 'partial.fa'))).toBe('partial\n');
  });
});

/**
 * Cromwell's TES backend (granular outputs): `/v1` paths, bare absolute host paths as URLs with
 * container paths under /cromwell-executions, the command script as an input, `rc`, `stdout`,
 * `stderr` and a WDL Directory (path and URL ending in `/`, plus its `.list`) as outputs, `null` in
 * optional fields and in tag and backend_parameters values; it polls the FULL view and reads the exit
 * code from the delivered `rc` file.
 */
describe('Cromwell request shapes', () => {
  async function submit(call: string, exitCode: number) {
    const workflowId = `0f4e5d6c-7b8a-4c3d-9e1f-${String(exitCode).padStart(12, '0')}`;
    const hostRoot = join(data, 'cromwell', 'cromwell-executions', 'wf', workflowId, `call-${call}`);
    const guestRoot = `/cromwell-executions/wf/${workflowId}/call-${call}`;
    const exec = `${guestRoot}/execution`;
    const input = put(join(data, 'cromwell', 'inputs', 'data.txt'), 'one\ntwo\n');
    const guestInput = `${guestRoot}/inputs/-1829461/data.txt`;
    const script = put(
      join(hostRoot, 'execution', 'script'),
      [
        '#!/bin/bash',
        `cd ${exec}`,
        '(',
        `  tr a-z A-Z < ${guestInput} > out.txt`,
        '  mkdir -p outdir/nested && echo nested > outdir/nested/n.txt && echo top > outdir/t.txt',
        '  echo "hello from cromwell"',
        '  echo "warning from cromwell" >&2',
        `  exit ${exitCode}`,
        ')',
        'rc=$?',
        'find outdir -type f | sort > outdir.list',
        'echo $rc > rc.tmp',
        'mv rc.tmp rc',
        // The replay's executor ends with the command's code, so a failed command fails the executor.
        'exit $rc',
        '',
      ].join('\n'),
    );
    const host = (f: string) => join(hostRoot, 'execution', f);
    const output = (name: string, f: string, type = 'FILE') => ({
      name,
      description: `wf.${call}.${name}`,
      url: f.endsWith('/') ? `${host(f)}/` : host(f),
      path: `${exec}/${f}`,
      type,
    });
    const body = {
      name: `wf.${call}`,
      description: `${workflowId}:wf.${call}:-1:1`,
      inputs: [
        {
          name: `wf.${call}.infile.0`,
          description: `wf.wf.${call}.infile.0`,
          url: input,
          path: guestInput,
          type: 'FILE',
          content: null,
        },
        {
          name: 'commandScript',
          description: `wf.${call}.commandScript`,
          url: script,
          path: `${exec}/script`,
          type: 'FILE',
          content: null,
        },
      ],
      outputs: [
        output('rc', 'rc'),
        output('stdout', 'stdout'),
        output('stderr', 'stderr'),
        output('commandScript', 'script'),
        output(`wf.${call}.output.0`, 'out.txt'),
        output('dirPath.1', 'outdir/', 'DIRECTORY'),
        output('dirList.1', 'outdir.list'),
      ],
      resources: {
        cpu_cores: 1,
        ram_gb: 2.0,
        disk_gb: 10.0,
        preemptible: false,
        zones: null,
        backend_parameters: { vm_size: null },
      },
      executors: [
        {
          image: 'ubuntu:22.04',
          command: ['/bin/bash', `${exec}/script`],
          workdir: null,
          stdout: `${exec}/stdout`,
          stderr: `${exec}/stderr`,
          stdin: null,
          env: null,
        },
      ],
      volumes: null,
      tags: { 'cromwell-workflow-id': workflowId, 'cromwell-parent-workflow-id': null },
    };
    const { id } = await ok('POST', `${gw.url}/v1/tasks`, body);
    return { id, host };
  }

  /** Cromwell's polling: the FULL view on every poll. */
  async function follow(id: string): Promise<any> {
    for (;;) {
      const task = await ok('GET', `${gw.url}/v1/tasks/${id}?view=FULL`);
      if (isTerminal(task.state)) return task;
      await sleep(POLL_MS);
    }
  }

  it('runs a call and delivers rc, stdout, stderr, a file and a Directory to bare paths', async () => {
    const { id, host } = await submit('hello', 0);
    const task = await follow(id);
    expect(task.state).toBe('COMPLETE');
    expect(task.tags).toEqual({ 'cromwell-workflow-id': expect.any(String) });
    expect(read(host('rc'))).toBe('0\n');
    expect(read(host('stdout'))).toBe('hello from cromwell\n');
    expect(read(host('stderr'))).toBe('warning from cromwell\n');
    expect(read(host('out.txt'))).toBe('ONE\nTWO\n');
    expect(read(host('outdir/nested/n.txt'))).toBe('nested\n');
    expect(read(host('outdir/t.txt'))).toBe('top\n');
    expect(read(host('outdir.list'))).toBe('outdir/nested/n.txt\noutdir/t.txt\n');
  });

  it('delivers the rc file of a failed command, which Cromwell reads for the exit code', async () => {
    const { id, host } = await submit('fails', 5);
    const task = await follow(id);
    expect(task.state).toBe('EXECUTOR_ERROR');
    expect(task.logs[0].logs[0].exit_code).toBe(5);
    expect(read(host('rc'))).toBe('5\n');
    expect(read(host('stderr'))).toBe('warning from cromwell\n');
    expect(read(host('out.txt'))).toBe('ONE\nTWO\n');
  });
});

/**
 * Sprocket (crankshaft's TES backend, the Rust `tes` crate): the command as a `content` input, the work
 * directory as a DIRECTORY output, `volumes`, a group tag on each task; one ListTasks per second by
 * tag at page_size 2047 in the MINIMAL view (a single failed list fails every task), and `:cancel`
 * with a literal JSON `null` body.
 */
describe('Sprocket request shapes', () => {
  const TAG_KEY = 'crankshaft-task-group';
  const tag = `sprocket-${Math.floor(Date.now() / 1000)}-1`;
  const ids: Record<string, string> = {};

  // A failed run must not leave its 600 s task holding the cluster.
  afterAll(async () => {
    if (ids.long) await call('POST', `${gw.base}/tasks/${ids.long}:cancel`, 'null');
  });

  function task(name: string, command: string) {
    const out = `file://${join(data, 'sprocket', 'runs', `${name}-20260101-000000`)}`;
    return {
      body: {
        name,
        inputs: [{ path: '/mnt/task/command', content: command, type: 'FILE' }],
        outputs: [
          { path: '/mnt/task/work', url: `${out}/work`, type: 'DIRECTORY' },
          { path: '/mnt/task/stdout', url: `${out}/stdout`, type: 'FILE' },
          { path: '/mnt/task/stderr', url: `${out}/stderr`, type: 'FILE' },
        ],
        resources: { cpu_cores: 1, ram_gb: 2.0, disk_gb: 1.0, preemptible: false },
        executors: [
          {
            image: 'ubuntu:22.04',
            command: ['bash', '/mnt/task/command'],
            workdir: '/mnt/task/work',
            env: { TASK_NAME: name },
            stdout: '/mnt/task/stdout',
            stderr: '/mnt/task/stderr',
          },
        ],
        volumes: ['/mnt/scratch'],
        tags: { [TAG_KEY]: tag },
      },
      out: out.slice('file://'.length),
    };
  }

  it('runs, fails and cancels tasks of a group followed by tag-filtered list polling', async () => {
    const hello = task(
      'hello',
      [
        'echo scratch > /mnt/scratch/s.txt',
        'cp /mnt/scratch/s.txt from-volume.txt',
        'mkdir -p sub && echo "$TASK_NAME" > sub/name.txt',
        'echo "hello from sprocket"',
        '',
      ].join('\n'),
    );
    const fails = task('fails', 'echo "about to fail" >&2\nexit 2\n');
    const long = task('long', 'sleep 600\n');
    for (const [name, t] of Object.entries({ hello, fails, long })) {
      ids[name] = (await ok('POST', `${gw.base}/tasks`, t.body)).id;
    }

    const listUrl =
      `${gw.base}/tasks?tag_key=${TAG_KEY}&tag_value=${encodeURIComponent(tag)}` +
      '&page_size=2047&view=MINIMAL';
    let cancelAnswer: { status: number; json: any } | undefined;
    let listed: Array<{ id: string; state: string }> = [];
    for (;;) {
      const page = await ok('GET', listUrl);
      listed = page.tasks;
      for (const t of listed) expect(Object.keys(t).sort()).toEqual(['id', 'state']);
      const longState = listed.find((t) => t.id === ids.long)?.state;
      if (!cancelAnswer && longState === 'RUNNING') {
        cancelAnswer = await call('POST', `${gw.base}/tasks/${ids.long}:cancel`, 'null');
      }
      if (listed.length === 3 && listed.every((t) => isTerminal(t.state as any))) break;
      await sleep(POLL_MS);
    }

    await expectStates(
      listed,
      new Map([
        [ids.hello!, 'COMPLETE'],
        [ids.fails!, 'EXECUTOR_ERROR'],
        [ids.long!, 'CANCELED'],
      ]),
    );
    expect(cancelAnswer).toEqual({ status: 200, json: {} });
    const failed = await ok('GET', `${gw.base}/tasks/${ids.fails}?view=FULL`);
    expect(failed.logs[0].logs[0].exit_code).toBe(2);
    expect(read(join(fails.out, 'stderr'))).toBe('about to fail\n');
    expect(read(join(hello.out, 'stdout'))).toBe('hello from sprocket\n');
    expect(read(join(hello.out, 'work', 'from-volume.txt'))).toBe('scratch\n');
    expect(read(join(hello.out, 'work', 'sub', 'name.txt'))).toBe('hello\n');
  });
});

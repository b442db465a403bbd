import { jest } from '@jest/globals';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTask, getTask, startTestGateway, waitFor, type TestGateway } from '../helpers/gateway.js';

/**
 * The local backend with the bwrap-host runtime (the quick start's setup): the very same job script,
 * run as a child process on this host, with real sandboxed executors.
 */
jest.setTimeout(60_000);

let gw: TestGateway;
let data: string;

beforeAll(async () => {
  data = mkdtempSync('/var/tmp/tesgw-local-data-');
  gw = await startTestGateway('local', {
    backend: 'local',
    container: { runtime: 'bwrap-host' },
    local: { maxConcurrentTasks: 4 },
    storage: { allowedRoots: [data] },
  });
});
afterAll(async () => {
  await gw.close();
});

describe('the local backend', () => {
  it('runs a task end to end and says the image was ignored', async () => {
    const id = await createTask(gw.base, {
      inputs: [{ path: '/data/in.txt', content: 'hello\n' }],
      executors: [
        {
          image: 'alpine',
          command: ['sh', '-c', 'cat /data/in.txt; echo "$NAME"; pwd'],
          env: { NAME: "it's $(me)" },
          workdir: '/work',
        },
      ],
    });
    const task = await waitFor(gw.base, id, undefined, 30_000);
    expect(task.state).toBe('COMPLETE');
    expect(task.logs[0].logs[0]).toMatchObject({ exit_code: 0, stdout: "hello\nit's $(me)\n/work\n" });
    expect(task.logs[0].metadata).toMatchObject({ backend: 'local', job_id: id });
    expect(task.logs[0].system_logs.join('\n')).toMatch(
      /container images ignored \(alpine\): the bwrap-host runtime/,
    );
  });

  it('reads file inputs in place and delivers file outputs', async () => {
    writeFileSync(join(data, 'input.txt'), 'abc');
    const id = await createTask(gw.base, {
      inputs: [{ path: '/in/input.txt', url: `file://${data}/input.txt` }],
      outputs: [
        { path: '/out/result.txt', url: `${data}/results/result.txt` },
        { path: '/out/dir', url: `file://${data}/results/dir`, type: 'DIRECTORY' },
      ],
      executors: [
        {
          image: 'alpine',
          command: [
            'sh',
            '-c',
            'tr a-z A-Z < /in/input.txt > /out/result.txt; mkdir -p /out/dir/sub; echo x > /out/dir/sub/f',
          ],
        },
      ],
    });
    const task = await waitFor(gw.base, id, undefined, 30_000);
    expect(task.state).toBe('COMPLETE');
    expect(readFileSync(join(data, 'results/result.txt'), 'utf8')).toBe('ABC');
    expect(readFileSync(join(data, 'results/dir/sub/f'), 'utf8')).toBe('x\n');
    expect(task.logs[0].outputs).toEqual([
      { url: `${data}/results/result.txt`, path: '/out/result.txt', size_bytes: '3' },
      { url: `file://${data}/results/dir/sub/f`, path: '/out/dir/sub/f', size_bytes: '2' },
    ]);
  });

  it('refuses at create a file input or output outside the allowed roots, as written or encoded', async () => {
    for (const [field, body] of [
      ['inputs[0].url', { inputs: [{ path: '/in/passwd', url: 'file:///etc/passwd' }] }],
      ['inputs[0].url', { inputs: [{ path: '/in/p', url: `file://${data}/%2e%2e/%2e%2e/etc/passwd` }] }],
      ['outputs[0].url', { outputs: [{ path: '/out/x', url: `${data}/../evil` }] }],
    ] as const) {
      const res = await fetch(`${gw.base}/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, executors: [{ image: 'alpine', command: ['true'] }] }),
      });
      expect(res.status).toBe(400);
      const answer = (await res.json()) as { message: string; errors: Array<{ path: string }> };
      expect(answer.errors.map((e) => e.path)).toEqual([field]);
      expect(answer.message).toContain(`is outside the allowed roots: ${data} (storage.allowedRoots)`);
    }
  });

  it('cancels a running task and kills its processes', async () => {
    const id = await createTask(gw.base, { executors: [{ image: 'alpine', command: ['sleep', '300'] }] });
    await waitFor(gw.base, id, ['RUNNING'], 30_000);
    const res = await fetch(`${gw.base}/tasks/${id}:cancel`, { method: 'POST' });
    expect(res.status).toBe(200);
    const task = await waitFor(gw.base, id, undefined, 30_000);
    expect(task.state).toBe('CANCELED');
    const pid = Number(readFileSync(join(gw.workRoot, id, 'local.pid'), 'utf8'));
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it('ends EXECUTOR_ERROR with the exit code', async () => {
    const id = await createTask(gw.base, {
      executors: [{ image: 'alpine', command: ['sh', '-c', 'exit 7'] }],
    });
    const task = await waitFor(gw.base, id, undefined, 30_000);
    expect(task.state).toBe('EXECUTOR_ERROR');
    expect(task.logs[0].logs[0].exit_code).toBe(7);
  });

  it('fails clearly when the container runtime is missing', async () => {
    const other = await startTestGateway('local-noruntime', {
      backend: 'local',
      container: { runtime: 'apptainer', executable: '/nonexistent/apptainer' },
    });
    try {
      const id = await createTask(other.base, { executors: [{ image: 'alpine', command: ['true'] }] });
      const task = await waitFor(other.base, id, undefined, 30_000);
      expect(task.state).toBe('SYSTEM_ERROR');
      expect(task.logs[0].system_logs.join('\n')).toMatch(
        /the container runtime \/nonexistent\/apptainer was not found/,
      );
    } finally {
      await other.close();
    }
  });

  it('keeps reads cheap: MINIMAL has only id and state', async () => {
    const id = await createTask(gw.base, { executors: [{ image: 'alpine', command: ['true'] }] });
    expect(Object.keys(await getTask(gw.base, id, 'MINIMAL')).sort()).toEqual(['id', 'state']);
    mkdirSync(join(data, 'x'), { recursive: true });
  });
});

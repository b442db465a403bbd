import {
  formatSeconds,
  renderStateChange,
  renderTask,
  renderTaskTable,
  renderWaitRows,
} from '../../src/cli/render.js';
import { serverMessage, type Task } from '../../src/cli/tes-client.js';
import { expectGolden } from '../helpers/golden.js';

const FULL: Task = {
  id: '01JDX7Q6ZS4K2B3M8N9P0QRSTV',
  state: 'EXECUTOR_ERROR',
  name: 'wf.align (1)',
  description: 'align reads',
  creation_time: '2026-11-30T23:10:00Z',
  tags: { project: 'genomes', run: '' },
  resources: {
    cpu_cores: 4,
    ram_gb: 7.5,
    disk_gb: 20,
    preemptible: true,
    backend_parameters: { partition: 'short' },
  },
  inputs: [
    { path: '/data/ref.fa', url: 'file:///shared/ref.fa' },
    { path: '/data/script.sh', type: 'FILE' },
  ],
  outputs: [{ path: '/out/aligned.bam', url: 's3://bucket/aligned.bam' }],
  volumes: ['/scratch'],
  executors: [
    { image: 'alpine', command: ['sh', '-c', "echo 'hi' > /out/x"], workdir: '/work' },
    { image: 'alpine', command: ['false'] },
  ],
  logs: [
    {
      start_time: '2026-11-30T23:10:02Z',
      end_time: '2026-11-30T23:10:09Z',
      logs: [
        { exit_code: 0, start_time: '2026-11-30T23:10:03Z', end_time: '2026-11-30T23:10:05Z' },
        { exit_code: 1 },
      ],
      outputs: [{ url: 's3://bucket/aligned.bam', path: '/out/aligned.bam', size_bytes: '1024' }],
      system_logs: ['executor 1 exited with 1'],
    },
  ],
};

describe('renderers', () => {
  it('renders a list as a table, absent fields as -, control characters escaped', () => {
    expectGolden(
      'task-cli/list.txt',
      renderTaskTable([
        FULL,
        { id: 'T2', state: 'RUNNING', name: 'evil\u001b[2J\nname', creation_time: '2026-11-30T23:00:00Z' },
        { id: 'T3', state: 'UNKNOWN' },
      ]),
    );
    expect(renderTaskTable([])).toBe('no tasks\n');
  });

  it('renders a task field by field, and a MINIMAL one as id and state', () => {
    expectGolden('task-cli/get-full.txt', renderTask(FULL));
    expect(renderTask({ id: 'T3', state: 'QUEUED' })).toBe('id     T3\nstate  QUEUED\n');
  });

  it('renders wait progress and state changes', () => {
    expectGolden(
      'task-cli/wait.txt',
      renderWaitRows([
        { taskId: FULL.id, state: 'RUNNING', seconds: 75.4 },
        { taskId: 'T2', state: 'COMPLETE', seconds: 3 },
      ]) + renderStateChange(new Date('2026-11-30T23:59:01.123Z'), 'T2', 'COMPLETE'),
    );
    expect(formatSeconds(3700)).toBe('1h01m40s');
    expect(formatSeconds(0.4)).toBe('0s');
  });
});

describe('serverMessage', () => {
  it("reads the server's message from the fields TES servers use", () => {
    expect(serverMessage('{"status":404,"message":"no task x"}')).toBe('no task x');
    expect(serverMessage('{"msg":"task not found","status_code":404}')).toBe('task not found');
    expect(serverMessage('{"code":5,"message":"task not found","details":[]}')).toBe('task not found');
    expect(serverMessage('{"detail":"Not authenticated"}')).toBe('Not authenticated');
    expect(serverMessage('{"error":{"message":"quota exceeded"}}')).toBe('quota exceeded');
    expect(serverMessage('{"status":500}')).toBe('{"status":500}');
  });

  it('reads a proxy page by its title, and quotes other text shortened to one line', () => {
    expect(
      serverMessage(
        '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway</h1></center></body></html>',
      ),
    ).toBe('502 Bad Gateway');
    expect(serverMessage('upstream connect error\nor disconnect')).toBe(
      'upstream connect error or disconnect',
    );
    expect(serverMessage('x'.repeat(400))).toHaveLength(300);
    expect(serverMessage('  ')).toBeUndefined();
  });
});

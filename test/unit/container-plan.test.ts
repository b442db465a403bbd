import { hostPathOf, planContainer, PlanError } from '../../src/apptainer/container-plan.js';
import type { TaskRequest } from '../../src/tes/types.js';

const W = '/w/t1';

describe('planContainer', () => {
  it('binds inputs read-only, writable places from the task directory, outer binds first', () => {
    const task: TaskRequest = {
      inputs: [{ path: '/data/in.txt', url: 'file:///s/in.txt', type: 'FILE' }],
      outputs: [{ path: '/data/out.txt', url: 'file:///s/out.txt', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'] }],
    };
    const plan = planContainer(task, W, [
      { index: 0, hostPath: '/s/in.txt', containerPath: '/data/in.txt', kind: 'file' },
    ]);
    expect(plan.binds).toEqual([
      { src: '/w/t1/tmp', dst: '/tmp', readOnly: false, kind: 'dir' },
      { src: '/w/t1/mnt/data', dst: '/data', readOnly: false, kind: 'dir' },
      { src: '/w/t1/var-tmp', dst: '/var/tmp', readOnly: false, kind: 'dir' },
      { src: '/s/in.txt', dst: '/data/in.txt', readOnly: true, kind: 'file' },
    ]);
    // The input lands inside the writable /data bind: its mount point exists beforehand.
    expect(plan.files).toEqual(['/w/t1/mnt/data/in.txt']);
  });

  it('folds nested writable places into the outermost', () => {
    const task: TaskRequest = {
      volumes: ['/vol', '/vol/sub'],
      outputs: [{ path: '/vol/sub/x', url: 'file:///s/x', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'], workdir: '/vol/sub/w' }],
    };
    const dsts = planContainer(task, W, []).binds.map((b) => b.dst);
    expect(dsts).toEqual(['/tmp', '/vol', '/var/tmp']);
  });

  it('maps stdin, stdout and stderr to host files', () => {
    const task: TaskRequest = {
      inputs: [{ path: '/in/data', url: 'file:///s/data', type: 'FILE' }],
      outputs: [{ path: '/out/stdout', url: 'file:///s/stdout', type: 'FILE' }],
      executors: [
        { image: 'alpine', command: ['cat'], stdin: '/in/data', stdout: '/out/stdout', stderr: '/tmp/err' },
      ],
    };
    const plan = planContainer(task, W, [
      { index: 0, hostPath: '/s/data', containerPath: '/in/data', kind: 'file' },
    ]);
    expect(plan.executors[0]).toMatchObject({
      stdinHost: '/s/data',
      stdoutHost: '/w/t1/mnt/out/stdout',
      stderrHost: '/w/t1/tmp/err',
    });
  });

  it('refuses a stdin that is not inside anything bound', () => {
    const task: TaskRequest = { executors: [{ image: 'alpine', command: ['cat'], stdin: '/etc/hostname' }] };
    expect(() => planContainer(task, W, [])).toThrow(PlanError);
    expect(() => planContainer(task, W, [])).toThrow(
      'executors[0].stdin: /etc/hostname is not inside an input, output, volume or workdir',
    );
  });

  it('binds the literal directory of a wildcard output', () => {
    const task: TaskRequest = {
      outputs: [{ path: '/out/*.txt', path_prefix: '/out/', url: 'file:///s/', type: 'FILE' }],
      executors: [{ image: 'alpine', command: ['true'] }],
    };
    expect(planContainer(task, W, []).binds.map((b) => b.dst)).toContain('/out');
  });

  it('finds outputs on the host where the job left them', () => {
    expect(hostPathOf(W, '/data/out.txt')).toBe('/w/t1/mnt/data/out.txt');
    expect(hostPathOf(W, '/tmp/x')).toBe('/w/t1/tmp/x');
    expect(hostPathOf(W, '/var/tmp/y')).toBe('/w/t1/var-tmp/y');
  });
});

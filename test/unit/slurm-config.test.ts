import { loadConfig } from '../../src/config/load-config.js';
import { ConfigError } from '../../src/errors.js';

describe('the slurm settings for disk requests and preemption', () => {
  it('default to auto disk requests, dropping what no node can satisfy, and PREEMPTED', () => {
    const { slurm } = loadConfig({ env: {} });
    expect(slurm.diskRequests).toBe('auto');
    expect(slurm.unsatisfiableDisk).toBe('drop');
    expect(slurm.tmpDiskRefreshMs).toBe(300_000);
    expect(slurm.preempted).toBe('PREEMPTED');
  });

  it('take the other choices', () => {
    const { slurm } = loadConfig({
      env: {},
      overrides: {
        slurm: { diskRequests: 'ignore', unsatisfiableDisk: 'refuse', preempted: 'SYSTEM_ERROR' },
      },
    });
    expect([slurm.diskRequests, slurm.unsatisfiableDisk, slurm.preempted]).toEqual([
      'ignore',
      'refuse',
      'SYSTEM_ERROR',
    ]);
  });

  it('refuse anything else, naming each setting', () => {
    let error: unknown;
    try {
      loadConfig({
        env: {},
        overrides: {
          slurm: {
            diskRequests: 'always',
            unsatisfiableDisk: 'fail',
            preempted: 'CANCELED',
            tmpDiskRefreshMs: 10,
          },
        },
      });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    for (const key of ['diskRequests', 'unsatisfiableDisk', 'preempted', 'tmpDiskRefreshMs']) {
      expect(problems).toContain(`slurm.${key}:`);
    }
  });
});

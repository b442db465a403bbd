import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load-config.js';
import { ConfigError } from '../../src/errors.js';

function file(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  const path = join(dir, 'gateway.yaml');
  writeFileSync(path, text);
  return path;
}

describe('loadConfig', () => {
  it('gives defaults without a file', () => {
    const c = loadConfig({ env: {} });
    expect(c.server.port).toBe(8000);
    expect(c.redis.prefix).toBe('tesgw:');
    expect(c.backend).toBe('slurm');
  });

  it('reads a YAML file', () => {
    const c = loadConfig({
      path: file('server:\n  port: 9000\nbackend: local\nslurm:\n  defaultPartition: debug\n'),
      env: {},
    });
    expect(c.server.port).toBe(9000);
    expect(c.backend).toBe('local');
    expect(c.slurm.defaultPartition).toBe('debug');
  });

  it('lets the environment override the common settings', () => {
    const c = loadConfig({
      path: file('server:\n  port: 9000\n'),
      env: {
        TES_GATEWAY_PORT: '9100',
        TES_GATEWAY_REDIS_URL: 'redis://r:6380',
        TES_GATEWAY_REDIS_PREFIX: 'x:',
      },
    });
    expect(c.server.port).toBe(9100);
    expect(c.redis.url).toBe('redis://r:6380');
    expect(c.redis.prefix).toBe('x:');
  });

  it('lists every problem at once: unknown keys and bad values', () => {
    let error: ConfigError | undefined;
    try {
      loadConfig({
        path: file('server:\n  prot: 1\n  maxContentBytes: 10\nbackend: pbs\nslurm:\n  overLimit: maybe\n'),
        env: { TES_GATEWAY_PORT: 'eighty' },
      });
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error!.problems).toEqual(
      expect.arrayContaining([
        'TES_GATEWAY_PORT: must be a whole number, got "eighty"',
        'server: unknown setting prot',
        'server.maxContentBytes: must be at least 131072 (128 KiB), the size TES clients rely on',
        expect.stringMatching(/^backend: Invalid enum value/),
        expect.stringMatching(/^slurm.overLimit: Invalid enum value/),
      ]),
    );
    expect(error!.problems).toHaveLength(5);
  });

  it('says which file it could not read', () => {
    expect(() => loadConfig({ path: '/nonexistent/gw.yaml', env: {} })).toThrow(
      /invalid configuration in \/nonexistent\/gw.yaml/,
    );
  });
});

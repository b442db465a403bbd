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

  it('has limits on the shape of a task, each one configurable', () => {
    expect(loadConfig({ env: {} }).limits).toEqual({
      maxExecutors: 64,
      maxInputs: 10_000,
      maxOutputs: 10_000,
      maxVolumes: 1_000,
      maxTags: 256,
      maxEnvPerExecutor: 1_000,
      maxCommandArgs: 10_000,
      maxBackendParameters: 256,
      maxZones: 256,
      maxStringBytes: 128 * 1024,
      listPageMaxBytes: 4 * 1024 * 1024,
    });
    const c = loadConfig({
      path: file('limits:\n  maxExecutors: 4\n  listPageMaxBytes: 1048576\n'),
      env: {},
    });
    expect(c.limits.maxExecutors).toBe(4);
    expect(c.limits.listPageMaxBytes).toBe(1048576);
    expect(() => loadConfig({ path: file('limits:\n  maxExecuters: 4\n'), env: {} })).toThrow(
      /limits: unknown setting maxExecuters/,
    );
    expect(() => loadConfig({ path: file('limits:\n  maxStringBytes: 10\n'), env: {} })).toThrow(
      /limits.maxStringBytes: Number must be greater than or equal to 4096/,
    );
  });

  it('runs no local image file and only registry images unless told otherwise', () => {
    const c = loadConfig({ env: {} });
    expect(c.container.imageRoots).toEqual([]);
    expect(c.container.allowedImageSchemes).toEqual(['docker', 'oras', 'library']);
    const d = loadConfig({
      path: file('container:\n  imageRoots: [/srv/images]\n  allowedImageSchemes: [docker, oci-archive]\n'),
      env: {},
    });
    expect(d.container.imageRoots).toEqual(['/srv/images']);
    expect(d.container.allowedImageSchemes).toEqual(['docker', 'oci-archive']);
    expect(() =>
      loadConfig({
        path: file('container:\n  imageRoots: [images]\n  allowedImageSchemes: [ftp]\n'),
        env: {},
      }),
    ).toThrow(
      /container.imageRoots.0: must be an absolute path[\s\S]*container.allowedImageSchemes.0: Invalid enum value/,
    );
  });

  it('refuses a configured partition that is a list', () => {
    let error: ConfigError | undefined;
    try {
      loadConfig({
        path: file(
          'slurm:\n  defaultPartition: a,b\n  gpuPartition: gpu\n  limits:\n    "x,y": { maxCpus: 1 }\n',
        ),
        env: {},
      });
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error!.problems).toEqual([
      'slurm.defaultPartition: must be one partition name (no commas or white space)',
      'slurm.limits.x,y: must be one partition name (no commas or white space)',
    ]);
  });

  it('says which file it could not read', () => {
    expect(() => loadConfig({ path: '/nonexistent/gw.yaml', env: {} })).toThrow(
      /invalid configuration in \/nonexistent\/gw.yaml/,
    );
  });
});

describe('worker.submitConcurrency', () => {
  it('defaults to 256 whoever the tasks run as; a set value wins', () => {
    const of = (overrides: Record<string, unknown>) =>
      loadConfig({ env: {}, overrides }).worker.submitConcurrency;
    expect(of({})).toBe(256);
    expect(of({ identity: { runAs: 'user' } })).toBe(256);
    expect(of({ identity: { runAs: 'user' }, worker: { submitConcurrency: 16 } })).toBe(16);
  });
});

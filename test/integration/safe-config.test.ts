import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load-config.js';
import type { Config } from '../../src/config/schema.js';
import {
  checkStartup,
  findStartupProblems,
  type FileFacts,
  type StartupFacts,
} from '../../src/config/startup-checks.js';
import { ConfigError } from '../../src/errors.js';
import { startGateway } from '../../src/gateway.js';
import { createLogger } from '../../src/logger.js';

/**
 * Settings that are each valid but unsafe together, or for the user the gateway runs as: refused once
 * at start, with the setting to change and why. Paths are compared after resolving symbolic links.
 */

function config(overrides: Record<string, unknown>): Config {
  return loadConfig({
    env: {},
    overrides: { workRoot: '/srv/tes/tasks', container: { imageCacheDir: '/srv/tes/images' }, ...overrides },
  });
}

const facts = (over: Partial<StartupFacts> = {}): StartupFacts => ({
  uid: 1000,
  runsJobs: true,
  realPaths: new Map(),
  ...over,
});

async function configError(p: Promise<unknown>): Promise<ConfigError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tesgw-safe-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('allowed roots and the gateway’s own folders', () => {
  it('accepts roots beside the work root and the image cache', () => {
    const c = config({ storage: { allowedRoots: ['/srv/data', '/srv/tes-data', '/srv/tes/tasks2'] } });
    expect(findStartupProblems(c, facts())).toEqual([]);
  });

  it('refuses a root that contains the work root, saying what a client could do', () => {
    const c = config({ storage: { allowedRoots: ['/srv/data', '/srv/tes'] } });
    expect(findStartupProblems(c, facts())).toEqual([
      "storage.allowedRoots[1]: /srv/tes contains workRoot /srv/tes/tasks, so through file:// inputs and outputs other tasks' files, their job scripts included, could be read and overwritten; keep allowed roots apart from workRoot",
      'storage.allowedRoots[1]: /srv/tes contains container.imageCacheDir /srv/tes/images, so through file:// inputs and outputs the images other tasks run could be read and replaced; keep allowed roots apart from container.imageCacheDir',
    ]);
  });

  it.each([
    ['/srv/tes/tasks', 'is workRoot /srv/tes/tasks'],
    ['/srv/tes/tasks/', 'is workRoot /srv/tes/tasks'],
    ['/srv/tes/tasks/shared', 'lies inside workRoot /srv/tes/tasks'],
    ['/', 'contains workRoot /srv/tes/tasks'],
  ])('refuses the root %s, which %s', (root, how) => {
    const problems = findStartupProblems(config({ storage: { allowedRoots: [root] } }), facts());
    expect(problems[0]).toMatch(new RegExp(`^storage\\.allowedRoots\\[0\\]: ${root} ${how}, `));
  });

  it('refuses a root inside the image cache, unless the runtime uses no images', () => {
    const inside = { storage: { allowedRoots: ['/srv/tes/images/x'] } };
    expect(findStartupProblems(config(inside), facts())).toEqual([
      expect.stringMatching(
        /^storage\.allowedRoots\[0\]: \/srv\/tes\/images\/x lies inside container\.imageCacheDir/,
      ),
    ]);
    const bwrap = config({
      ...inside,
      container: { runtime: 'bwrap-host', imageCacheDir: '/srv/tes/images' },
    });
    expect(findStartupProblems(bwrap, facts())).toEqual([]);
  });

  it('refuses an image root that overlaps the work root, where a task could write the image it runs', () => {
    const c = config({
      container: { imageCacheDir: '/srv/tes/images', imageRoots: ['/srv/images', '/srv/tes'] },
    });
    expect(findStartupProblems(c, facts())).toEqual([
      'container.imageRoots[1]: /srv/tes overlaps workRoot /srv/tes/tasks, so a task could run an image file it wrote itself; keep image roots apart from the work root',
    ]);
  });

  it('checks writable roots against the work root and the image cache like any other', () => {
    const c = config({ storage: { allowedRoots: ['/srv/data', { path: '/srv/tes', writable: true }] } });
    expect(findStartupProblems(c, facts())).toEqual([
      expect.stringMatching(/^storage\.allowedRoots\[1\]: \/srv\/tes contains workRoot \/srv\/tes\/tasks, /),
      expect.stringMatching(/^storage\.allowedRoots\[1\]: \/srv\/tes contains container\.imageCacheDir /),
    ]);
  });

  it.each([
    ['contains', '/srv/shared'],
    ['is', '/srv/shared/images'],
    ['lies inside', '/srv/shared/images/team'],
  ])(
    'refuses a writable root that %s an image root, where a task could replace an image others run',
    (_how, root) => {
      const c = config({
        storage: { allowedRoots: [{ path: root, writable: true }] },
        container: { imageCacheDir: '/srv/tes/images', imageRoots: ['/srv/images', '/srv/shared/images'] },
      });
      expect(findStartupProblems(c, facts())).toEqual([
        `storage.allowedRoots[0]: the writable root ${root} overlaps container.imageRoots[1] /srv/shared/images, ` +
          'so a task could replace an image other tasks run, or run one it wrote itself; keep writable roots ' +
          'apart from the image roots',
      ]);
    },
  );

  it('lets a runtime that runs no images have a writable root over the image roots', () => {
    const container = { imageCacheDir: '/srv/tes/images', imageRoots: ['/srv/shared/images'] };
    const bwrap = config({
      storage: { allowedRoots: [{ path: '/srv/shared', writable: true }] },
      container: { ...container, runtime: 'bwrap-host' },
    });
    expect(findStartupProblems(bwrap, facts())).toEqual([]);
  });

  it('refuses a read-only root inside a writable one, which tasks could write anyway', () => {
    const c = config({
      storage: {
        allowedRoots: [
          { path: '/srv/shared', writable: true },
          '/srv/shared/ref',
          { path: '/srv/shared', writable: false },
          '/srv/ref',
          { path: '/srv/shared/scratch', writable: true },
        ],
      },
    });
    expect(findStartupProblems(c, facts())).toEqual([
      'storage.allowedRoots[1]: the read-only root /srv/shared/ref lies inside the writable root ' +
        'storage.allowedRoots[0] /srv/shared, so tasks could write it anyway; keep read-only roots out of writable ones',
      'storage.allowedRoots[2]: the read-only root /srv/shared is also the writable root ' +
        'storage.allowedRoots[0] /srv/shared, so tasks could write it anyway; keep read-only roots out of writable ones',
    ]);
    // A writable root inside a read-only one is fine: mount points are never made in it.
    const inside = config({
      storage: { allowedRoots: ['/srv/shared', { path: '/srv/shared/scratch', writable: true }] },
    });
    expect(findStartupProblems(inside, facts())).toEqual([]);
  });

  it('compares real paths: a root that reaches the work root through a symbolic link is refused', async () => {
    mkdirSync(join(dir, 'shared/tasks'), { recursive: true });
    symlinkSync(join(dir, 'shared'), join(dir, 'projects'));
    const c = loadConfig({
      env: {},
      overrides: {
        workRoot: join(dir, 'shared/tasks'),
        container: { imageCacheDir: join(dir, 'images') },
        storage: { allowedRoots: [join(dir, 'data'), join(dir, 'projects')] },
      },
    });
    const err = await configError(checkStartup(c, false, 'gateway.yaml'));
    expect(err.message).toBe(
      'invalid configuration in gateway.yaml:\n' +
        `  - storage.allowedRoots[1]: ${join(dir, 'projects')} (${join(dir, 'shared')}) contains workRoot ` +
        `${join(dir, 'shared/tasks')}, so through file:// inputs and outputs other tasks' files, their job ` +
        'scripts included, could be read and overwritten; keep allowed roots apart from workRoot',
    );
    // A work root that does not exist yet is judged by the real path of its nearest existing parent.
    const later = { ...c, workRoot: join(dir, 'projects/new/tasks') };
    expect((await configError(checkStartup(later, false, 'x'))).problems[0]).toContain(
      `contains workRoot ${join(dir, 'projects/new/tasks')} (${join(dir, 'shared/new/tasks')})`,
    );
  });
});

describe('running as root', () => {
  const root = facts({ uid: 0 });
  const WHY =
    'security.allowRoot: the gateway runs as root (uid 0) with the slurm backend, so job scripts and ' +
    'output delivery would run as root, and a task that tricks either one would have the whole host; ' +
    'run it as a service account, or set security.allowRoot: true where that is impossible';

  it('refuses root with the slurm backend, and says why', () => {
    expect(findStartupProblems(config({ backend: 'slurm' }), root)).toEqual([WHY]);
  });

  it('allows root when security.allowRoot says so, with the local backend, or without workers', () => {
    expect(findStartupProblems(config({ security: { allowRoot: true } }), root)).toEqual([]);
    expect(findStartupProblems(config({ backend: 'local' }), root)).toEqual([]);
    expect(findStartupProblems(config({}), { ...root, runsJobs: false })).toEqual([]);
    expect(findStartupProblems(config({}), facts())).toEqual([]);
  });

  it('stops startGateway before it connects to anything', async () => {
    const c = loadConfig({
      env: {},
      overrides: {
        workRoot: join(dir, 'tasks'),
        container: { imageCacheDir: join(dir, 'images') },
        storage: { allowedRoots: [dir] },
        redis: { url: 'redis://127.0.0.1:1' },
      },
    });
    const err = await configError(startGateway(c, { api: true, worker: true }, createLogger('silent')));
    expect(err.problems[0]).toMatch(/^storage\.allowedRoots\[0\]: .* contains workRoot /);
    if (process.getuid?.() === 0) expect(err.problems).toContain(WHY);
  });
});

describe('running tasks as their owners (identity.runAs user)', () => {
  const helper = { uid: 0, mode: 0o100755, isFile: true, isDirectory: false };
  const workRoot = { uid: 999, mode: 0o41733, isFile: false, isDirectory: true };
  const runAs = (over: { helper?: FileFacts | undefined; workRoot?: FileFacts | undefined } = {}) =>
    facts({ runAs: { helper, workRoot, ...over } });
  const userMode = (over: Record<string, unknown> = {}) =>
    config({ identity: { runAs: 'user' }, auth: { mode: 'tokens' }, ...over });

  it('accepts a gateway of its own account, an installed helper and a sticky work root', () => {
    expect(findStartupProblems(userMode(), runAs())).toEqual([]);
    expect(findStartupProblems(userMode(), runAs({ workRoot: undefined }))).toEqual([]);
  });

  it('refuses what would leave tasks without owners, or jobs as the gateway', () => {
    expect(findStartupProblems(userMode({ backend: 'local' }), runAs())).toEqual([
      'identity.runAs: user needs backend slurm (the local backend runs jobs as the gateway itself)',
    ]);
    expect(findStartupProblems(userMode({ auth: { mode: 'none' } }), runAs())).toEqual([
      'identity.runAs: user needs auth.mode tokens or oidc, so that every task has an owner to run as (docs/authentication.md)',
    ]);
    expect(findStartupProblems(userMode({ security: { allowRoot: true } }), { ...runAs(), uid: 0 })).toEqual([
      'identity.runAs: user runs jobs as their owners through sudo and the helper; the gateway itself must not be root: run it as the service account the sudoers rule names (docs/security.md)',
    ]);
  });

  it('refuses a helper that is missing, or that someone besides root could change', () => {
    expect(findStartupProblems(userMode(), runAs({ helper: undefined }))).toEqual([
      'identity.helper.path: /usr/libexec/tes-gateway/tes-gateway-helper is not an installed helper; install libexec/tes-gateway-helper there (docs/security.md)',
    ]);
    expect(findStartupProblems(userMode(), runAs({ helper: { ...helper, uid: 999 } }))).toEqual([
      'identity.helper.path: /usr/libexec/tes-gateway/tes-gateway-helper must belong to root and be writable by root alone (it is uid 999, mode 755); anyone who can change it runs as every user',
    ]);
    expect(findStartupProblems(userMode(), runAs({ helper: { ...helper, mode: 0o100775 } }))).toHaveLength(1);
  });

  it('refuses a work root where users could not make their directories, or could list or remove others', () => {
    for (const mode of [0o40755, 0o40777, 0o41777, 0o40733]) {
      expect(findStartupProblems(userMode(), runAs({ workRoot: { ...workRoot, mode } }))).toEqual([
        `workRoot: /srv/tes/tasks must be a directory with mode 1733 (sticky, users may make their task directories there but not list it or remove others'); it is mode ${(mode & 0o7777).toString(8)}: chmod 1733 /srv/tes/tasks`,
      ]);
    }
  });
});

describe('defaults and settings', () => {
  it('listens on 127.0.0.1 unless told otherwise', () => {
    expect(loadConfig({ env: {} }).server.host).toBe('127.0.0.1');
    expect(loadConfig({ env: { TES_GATEWAY_HOST: '0.0.0.0' } }).server.host).toBe('0.0.0.0');
  });

  it('has download budgets and no private network allowed', () => {
    const c = loadConfig({ env: {} });
    expect(c.storage.maxTaskDownloadBytes).toBe(1024 ** 4);
    expect(c.storage.s3.maxListedObjects).toBe(100_000);
    expect(c.storage.http.allowedPrivateNetworks).toEqual([]);
    expect(c.security.allowRoot).toBe(false);
  });

  it('names each bad allowedPrivateNetworks entry', () => {
    let err: ConfigError | undefined;
    try {
      loadConfig({
        env: {},
        overrides: { storage: { http: { allowedPrivateNetworks: ['10.1.0.0/16', '10.1.2.3/16', 'a b'] } } },
      });
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err?.problems).toEqual([
      'storage.http.allowedPrivateNetworks.1: "10.1.2.3/16" has bits set past its prefix length; did you mean 10.1.0.0/16?',
      'storage.http.allowedPrivateNetworks.2: "a b" is neither a network (10.1.0.0/16, fd00::/8), an address nor a host name',
    ]);
  });
});

import { loadConfig } from '../../src/config/load-config.js';
import { policyFor } from '../../src/identity/policy.js';
import { userNameProblem } from '../../src/identity/identity.js';
import { DEFAULT_DENIED_USERS } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';

function policy(identity: Record<string, unknown>, allowedRoots: unknown[] = ['/site']) {
  return policyFor(loadConfig({ env: {}, overrides: { identity, storage: { allowedRoots } } }));
}

describe('identity.policy', () => {
  const p = policy({
    admins: { users: ['root-of-all'], groups: ['hpc-admins'] },
    policy: {
      everyone: {
        roots: ['/home/{user}', { path: '/scratch/{user}', writable: true }],
        accounts: ['general'],
      },
      groups: {
        genomics: {
          members: ['alice'],
          roots: ['/projects/{group}'],
          accounts: ['gen'],
          defaultAccount: 'gen',
        },
        imaging: { roots: ['/projects/{group}'], partitions: ['gpu'] },
      },
      users: { alice: { qos: ['long'] }, bob: { defaultAccount: 'bobs' } },
    },
  });

  it('joins the site roots and the templated roots of every entry that applies', () => {
    expect(p.forUser('alice', p.groupsOf('alice', ['imaging'])).roots).toEqual([
      { path: '/site', writable: false },
      { path: '/home/alice', writable: false },
      { path: '/scratch/alice', writable: true },
      { path: '/projects/genomics', writable: false },
      { path: '/projects/imaging', writable: false },
    ]);
  });

  it('joins the Slurm lists that apply and leaves unset ones open', () => {
    const alice = p.forUser('alice', p.groupsOf('alice', []));
    expect([...alice.accounts!]).toEqual(['general', 'gen']);
    expect([...alice.qos!]).toEqual(['long']);
    expect(alice.partitions).toBeUndefined();
    expect(alice.defaultAccount).toBe('gen');
    expect(p.forUser('bob', []).defaultAccount).toBe('bobs');
    expect(p.forUser('carol', []).defaultAccount).toBeUndefined();
  });

  it('finds groups from the members lists and from the credentials, and admins by either', () => {
    expect(p.groupsOf('alice', ['x'])).toEqual(['genomics', 'x']);
    expect(p.isAdmin('root-of-all', [])).toBe(true);
    expect(p.isAdmin('dana', ['hpc-admins'])).toBe(true);
    expect(p.isAdmin('alice', p.groupsOf('alice', []))).toBe(false);
  });

  it('judges file paths as written: .. and other places never match a root', () => {
    const task = (url: string) => ({
      executors: [{ image: 'a', command: ['true'] }],
      inputs: [{ url, path: '/x' }],
    });
    expect(p.checkTask(task('/home/bob/x'), 'bob', [])).toEqual([]);
    expect(p.checkTask(task('file:///scratch/bob/a%20b'), 'bob', [])).toEqual([]);
    expect(p.checkTask(task('http://example.org/x'), 'bob', [])).toEqual([]);
    for (const url of [
      '/home/alice/x',
      '/home/bob/../alice/x',
      'file:///home/bob/%2e%2e/alice',
      // Folded by the URL parser into bob's own /home/bob/x, but written with `..`: refused as written.
      'file:///home/bob/sub/%2e%2e/x',
      'file:///home/bob/sub/%2E%2E/x',
      '/home/bobby/x',
    ]) {
      expect(p.checkTask(task(url), 'bob', []).map((q) => q.path)).toEqual(['inputs[0].url']);
    }
  });

  it('refuses unknown placeholders in its roots at start', () => {
    expect(() => policy({ policy: { everyone: { roots: ['/home/{uid}'] } } })).toThrow(ConfigError);
  });
});

describe('user names', () => {
  it('accepts portable POSIX names and refuses the rest and the denied ones', () => {
    for (const ok of ['alice', '_svc', 'a1-b_c', 'x'.repeat(32)])
      expect(userNameProblem(ok, DEFAULT_DENIED_USERS)).toBeUndefined();
    for (const bad of ['', 'Alice', '1abc', 'a b', 'a/b', '..', 'a;b', 'x'.repeat(33), 'ålice', 'a\n']) {
      expect(userNameProblem(bad, DEFAULT_DENIED_USERS)).toMatch(/not a valid POSIX user name/);
    }
    for (const denied of ['root', 'daemon', 'nobody', 'slurm']) {
      expect(userNameProblem(denied, DEFAULT_DENIED_USERS)).toMatch(/may not use this service/);
    }
  });
});

import { AllowedRoots } from '../../src/staging/allowed-roots.js';
import { StagingError } from '../../src/staging/staging-error.js';

/**
 * `file://` inputs of tasks run as their owners are judged by their path as written: the gateway's
 * account may not see the owner's files, and must not read them. The job checks the rest as the owner.
 */
describe('AllowedRoots.locateAsOwner', () => {
  const roots = new AllowedRoots([
    { path: '/data', writable: false },
    { path: '/data/scratch/', writable: true },
    { path: '/home', writable: false },
  ]);

  it('names the innermost root a path lies in, and whether it is bound in place', () => {
    expect(roots.locateAsOwner('file:///home/alice/in.txt', 'inputs[0]')).toEqual({
      real: '/home/alice/in.txt',
      root: '/home',
      writableBelow: [],
    });
    expect(roots.locateAsOwner('/data/scratch/run1/', 'inputs[1]')).toEqual({
      real: '/data/scratch/run1',
      root: '/data/scratch/',
      writableRoot: '/data/scratch/',
      writableBelow: [],
    });
    expect(roots.locateAsOwner('file:///data', 'inputs[2]')).toEqual({
      real: '/data',
      root: '/data',
      writableBelow: ['/data/scratch/'],
    });
  });

  it.each([
    ['file:///etc/passwd', /inputs\[0\]: file:\/\/\/etc\/passwd is outside the allowed roots/],
    ['file:///home/../etc/passwd', /contains '\.\.'/],
    ['file:///home/%2e%2e/etc/passwd', /contains '\.\.'/],
    ['file:///homes/alice', /is outside the allowed roots/],
    ['file://elsewhere/home/a', /names host elsewhere/],
    ['home/alice', /is not an absolute path/],
  ])('refuses %s', (url, message) => {
    let err: unknown;
    try {
      roots.locateAsOwner(url, 'inputs[0]');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StagingError);
    expect((err as Error).message).toMatch(message);
  });
});

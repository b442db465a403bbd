import { evictionOrder, type CachedImage } from '../../src/apptainer/image-eviction.js';
import { SingleFlight } from '../../src/apptainer/single-flight.js';

describe('evictionOrder', () => {
  const image = (path: string, mtimeMs: number): CachedImage => ({ path, bytes: 1, mtimeMs });

  it('puts the least recently used first, counting an unrecorded image from its mtime', () => {
    const images = [image('/c/a.sif', 50), image('/c/b.sif', 10), image('/c/c.sif', 900)];
    const lastUse = new Map([
      ['/c/a.sif', 300],
      ['/c/c.sif', 100],
    ]);
    expect(evictionOrder(images, lastUse, new Set()).map((i) => i.path)).toEqual([
      '/c/b.sif',
      '/c/c.sif',
      '/c/a.sif',
    ]);
  });

  it('never offers an image in use', () => {
    const images = [image('/c/a.sif', 1), image('/c/b.sif', 2)];
    expect(evictionOrder(images, new Map(), new Set(['/c/a.sif'])).map((i) => i.path)).toEqual(['/c/b.sif']);
  });
});

describe('SingleFlight', () => {
  it('shares one run between callers of the same key while it is under way', async () => {
    const flight = new SingleFlight<number>();
    let starts = 0;
    let finish!: (n: number) => void;
    const start = (): Promise<number> => {
      starts++;
      return new Promise((resolve) => (finish = resolve));
    };
    const a = flight.run('k', start);
    const b = flight.run('k', start);
    finish(7);
    expect(await Promise.all([a, b])).toEqual([7, 7]);
    expect(starts).toBe(1);
  });

  it('starts afresh after a run has failed, and keeps keys apart', async () => {
    const flight = new SingleFlight<string>();
    await expect(flight.run('k', () => Promise.reject(new Error('down')))).rejects.toThrow('down');
    expect(await flight.run('k', () => Promise.resolve('up'))).toBe('up');
    const other = flight.run('j', () => Promise.resolve('j'));
    expect(await flight.run('k', () => Promise.resolve('k'))).toBe('k');
    expect(await other).toBe('j');
  });
});

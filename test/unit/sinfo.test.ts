import { PartitionDiskCache, parseSinfoTmpDisk, SINFO_TMP_DISK_ARGS } from '../../src/compute/slurm/sinfo.js';

describe('parseSinfoTmpDisk', () => {
  it('reads each partition, marks the default one and spans unlike nodes from least to most', () => {
    const { disks, errors } = parseSinfoTmpDisk('debug* 0\nbig 1000\nbig 200000\nmixed 500+\n\n');
    expect(errors).toEqual([]);
    expect(disks.defaultPartition).toBe('debug');
    expect(Object.fromEntries(disks.partitions)).toEqual({
      debug: { minMB: 0, maxMB: 0 },
      big: { minMB: 1000, maxMB: 200000 },
      mixed: { minMB: 500, maxMB: 500 },
    });
  });

  it('fails only the lines it cannot read', () => {
    const { disks, errors } = parseSinfoTmpDisk('debug* 0\ngarbled\nshort n/a\n');
    expect(errors).toHaveLength(2);
    expect([...disks.partitions.keys()]).toEqual(['debug']);
  });

  it('has no default partition when sinfo marks none', () => {
    expect(parseSinfoTmpDisk('a 0\n').disks.defaultPartition).toBeUndefined();
  });

  it('asks sinfo for every partition, hidden ones too, without a header', () => {
    expect(SINFO_TMP_DISK_ARGS).toEqual(['--all', '--noheader', '--format=%P %d']);
  });
});

describe('PartitionDiskCache', () => {
  let clock = 0;
  const warnings: string[] = [];
  const logger = { warn: (_o: unknown, msg?: string) => void warnings.push(msg ?? '') };
  beforeEach(() => {
    clock = 1_000_000;
    warnings.length = 0;
  });

  function cache(answers: Array<string | Error>): PartitionDiskCache {
    return new PartitionDiskCache({
      read: async () => {
        const next = answers.shift();
        if (next === undefined) throw new Error('no more answers');
        if (next instanceof Error) throw next;
        return next;
      },
      refreshMs: 300_000,
      logger,
      now: () => clock,
    });
  }

  it('reads sinfo at first need and not again before the refresh interval', async () => {
    const c = cache(['debug* 0\n', 'debug* 5000\n']);
    expect(c.reads).toBe(0);
    expect((await c.current())?.partitions.get('debug')?.maxMB).toBe(0);
    clock += 299_999;
    expect((await c.current())?.partitions.get('debug')?.maxMB).toBe(0);
    expect(c.reads).toBe(1);
    clock += 1;
    expect((await c.current())?.partitions.get('debug')?.maxMB).toBe(5000);
    expect(c.reads).toBe(2);
  });

  it('runs one sinfo at a time however many submissions ask', async () => {
    const c = cache(['debug* 7\n']);
    const all = await Promise.all(Array.from({ length: 20 }, () => c.current()));
    expect(c.reads).toBe(1);
    expect(all.every((d) => d?.partitions.get('debug')?.maxMB === 7)).toBe(true);
  });

  it('keeps the figures it had when sinfo fails, and says so in the log', async () => {
    const c = cache(['debug* 9\n', new Error('sinfo: error: slurm_load_partitions: Socket timed out')]);
    await c.current();
    clock += 300_000;
    expect((await c.current())?.partitions.get('debug')?.maxMB).toBe(9);
    expect(warnings).toEqual(["sinfo failed; the partitions' TmpDisk figures read before stay in use"]);
  });

  it('knows nothing until sinfo first answers, and asks again 30 s after a failure', async () => {
    const c = cache([new Error('down'), 'debug* 3\n']);
    expect(await c.current()).toBeUndefined();
    expect(warnings).toEqual(["sinfo failed; no partition's TmpDisk is known yet"]);
    clock += 29_999;
    expect(await c.current()).toBeUndefined();
    expect(c.reads).toBe(1);
    clock += 1;
    expect((await c.current())?.partitions.get('debug')?.maxMB).toBe(3);
    expect(c.reads).toBe(2);
  });
});

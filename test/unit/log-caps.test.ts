import { shareLogBytes } from '../../src/compute/executor-results.js';
import { SYSTEM_LOGS_MAX_BYTES, withSystemLogs } from '../../src/tes/task-logs.js';

describe('shareLogBytes', () => {
  it('keeps every log whole while all fit', () => {
    expect(shareLogBytes([10, 0, 300], 1000, 10_000)).toEqual([10, 0, 300]);
  });

  it('keeps at most the per-log tail of each', () => {
    expect(shareLogBytes([5000, 20], 1000, 10_000)).toEqual([1000, 20]);
  });

  it('shares the task total equally, and gives what small logs leave to the large ones', () => {
    expect(shareLogBytes([1000, 1000, 1000, 1000], 1000, 2000)).toEqual([500, 500, 500, 500]);
    expect(shareLogBytes([100, 1000, 0, 1000], 1000, 2000)).toEqual([100, 950, 0, 950]);
  });

  it('stays within the total for any number of logs', () => {
    const sizes = Array.from({ length: 5000 }, (_, i) => (i * 7919) % 70_000);
    const kept = shareLogBytes(sizes, 64 * 1024, 1024 * 1024);
    expect(kept.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(1024 * 1024);
    expect(kept.filter((k, i) => k > Math.min(sizes[i]!, 64 * 1024))).toEqual([]);
  });
});

describe('withSystemLogs', () => {
  const lines = (log: ReturnType<typeof withSystemLogs>) => log[0]!.system_logs ?? [];

  it('appends lines while they fit', () => {
    const first = withSystemLogs(undefined, ['a', 'b']);
    expect(lines(withSystemLogs(first, ['c']))).toEqual(['a', 'b', 'c']);
  });

  it('keeps the first lines, cuts the one that overflows and counts the rest', () => {
    const log = withSystemLogs(undefined, ['x'.repeat(100), 'y'.repeat(150), 'z', 'w'], 300);
    expect(lines(log)).toEqual([
      'x'.repeat(100),
      `${'y'.repeat(96)} …`,
      'system_logs reached their limit of 300 bytes: 2 later lines dropped',
    ]);
  });

  it('keeps counting what later appends drop', () => {
    let log = withSystemLogs(undefined, ['x'.repeat(500), 'a'], 300);
    log = withSystemLogs(log, ['b', 'c'], 300);
    log = withSystemLogs(log, ['d'], 300);
    expect(lines(log)).toEqual([
      `${'x'.repeat(196)} …`,
      'system_logs reached their limit of 300 bytes: 4 later lines dropped',
    ]);
  });

  it('bounds a flood of lines to the task limit', () => {
    let log = withSystemLogs(undefined, ['started']);
    for (let i = 0; i < 200; i++)
      log = withSystemLogs(
        log,
        Array.from({ length: 100 }, (_, j) => `line ${i}.${j}`),
      );
    const kept = lines(log);
    expect(Buffer.byteLength(kept.join(''))).toBeLessThanOrEqual(SYSTEM_LOGS_MAX_BYTES);
    expect(kept[0]).toBe('started');
    expect(kept.at(-1)).toMatch(/^system_logs reached their limit of 65536 bytes: \d+ later lines dropped$/);
    const dropped = Number(/: (\d+) later/.exec(kept.at(-1)!)![1]);
    expect(kept.length - 1 + dropped).toBe(1 + 200 * 100);
  });

  it('cuts a long line on a character boundary', () => {
    const log = withSystemLogs(undefined, ['✓'.repeat(100), 'next'], 200);
    const cut = lines(log)[0]!;
    expect(cut).toMatch(/^✓+ …$/);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(100);
  });
});

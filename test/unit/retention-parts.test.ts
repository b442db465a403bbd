import { parseCommandLine } from '../../src/command-line.js';
import { loadConfig } from '../../src/config/load-config.js';
import { ConfigError } from '../../src/errors.js';
import { renderGcReport } from '../../src/gc-command.js';
import { creationPrefixAt, endOf } from '../../src/store/retention.js';
import { emptyTally } from '../../src/task-retention.js';
import { newTaskId } from '../../src/tes/task-id.js';

describe('retention settings', () => {
  it('keeps finished tasks 30 days by default, 500 a pass, every minute', () => {
    expect(loadConfig({ env: {} }).retention).toEqual({
      terminalTasksDays: 30,
      batchSize: 500,
      intervalMs: 60_000,
    });
  });

  it('takes 0 days (keep for ever) and fractions of days, and refuses negative and unknown settings', () => {
    expect(
      loadConfig({ env: {}, overrides: { retention: { terminalTasksDays: 0 } } }).retention.terminalTasksDays,
    ).toBe(0);
    expect(
      loadConfig({ env: {}, overrides: { retention: { terminalTasksDays: 0.25 } } }).retention
        .terminalTasksDays,
    ).toBe(0.25);
    for (const retention of [{ terminalTasksDays: -1 }, { batchSize: 0 }, { intervalMs: 10 }, { days: 3 }]) {
      expect(() => loadConfig({ env: {}, overrides: { retention } })).toThrow(ConfigError);
    }
  });
});

describe('the gc command line', () => {
  it('reads --dry-run and --config', () => {
    expect(parseCommandLine(['gc'])).toEqual({ kind: 'gc', dryRun: false });
    expect(parseCommandLine(['gc', '--dry-run', '--config', '/etc/g.yaml'])).toEqual({
      kind: 'gc',
      dryRun: true,
      configPath: '/etc/g.yaml',
    });
  });

  it('refuses a stray argument and an option of another command', () => {
    expect(parseCommandLine(['gc', 'now']).kind).toBe('usage-error');
    expect(parseCommandLine(['gc', '--pid-file', 'x']).kind).toBe('usage-error');
  });
});

describe('when a task ended', () => {
  it('reads `ended`, else the last log end_time, else the creation time', () => {
    const created = '2026-01-01T00:00:00.000Z';
    const logs = JSON.stringify([{ end_time: '2026-01-02T00:00:00Z' }, { end_time: '2026-01-03T00:00:00Z' }]);
    expect(endOf({ ended: '1000', logs, created })).toEqual({ endedMs: 1000, endSource: 'ended' });
    expect(endOf({ ended: null, logs, created })).toEqual({
      endedMs: Date.parse('2026-01-03T00:00:00Z'),
      endSource: 'logs',
    });
    expect(endOf({ logs: '[{}]', created })).toEqual({ endedMs: Date.parse(created), endSource: 'created' });
    expect(endOf({ logs: 'not json', created })).toEqual({
      endedMs: Date.parse(created),
      endSource: 'created',
    });
    expect(endOf({})).toBeUndefined();
  });

  it('bounds the walk by the ids created before the cutoff', () => {
    const cutoff = Date.parse('2026-06-01T00:00:00Z');
    const bound = creationPrefixAt(cutoff);
    expect(newTaskId(cutoff - 1) < bound).toBe(true);
    expect(newTaskId(cutoff) > bound).toBe(true);
    expect(newTaskId(cutoff + 1) > bound).toBe(true);
  });
});

describe('the gc report', () => {
  it('counts by state in the states order and names the span of ends and the bytes', () => {
    const tally = {
      ...emptyTally(),
      count: 3,
      byState: { CANCELED: 1, COMPLETE: 2 },
      oldestEndMs: Date.parse('2026-01-01T00:00:00Z'),
      newestEndMs: Date.parse('2026-02-01T12:00:00Z'),
      bytes: 3 * 2 ** 20,
    };
    expect(renderGcReport(tally, { dryRun: true, cutoffMs: Date.parse('2026-03-01T00:00:00Z'), days: 30 }))
      .toBe(`would expire 3 finished tasks that ended before 2026-03-01T00:00:00Z (retention.terminalTasksDays 30)
  COMPLETE        2
  CANCELED        1
oldest end 2026-01-01T00:00:00Z, newest end 2026-02-01T12:00:00Z
task directories: 3145728 bytes (3.0 MiB)
nothing was changed (--dry-run)
`);
  });

  it('names the job array files it removed, when there were any', () => {
    const tally = { ...emptyTally(), arrayFiles: 3, arrayBytes: 120 };
    expect(renderGcReport(tally, { dryRun: false, cutoffMs: 0, days: 30 })).toContain(
      'job array files in .arrays/: 3 (120 bytes) removed\n',
    );
  });
});

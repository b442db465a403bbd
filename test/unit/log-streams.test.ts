import { LogStreams, newText } from '../../src/cli/log-streams.js';
import type { Task } from '../../src/cli/tes-client.js';

describe('newText', () => {
  it('returns what was appended', () => {
    expect(newText('', 'a\n')).toBe('a\n');
    expect(newText('a\n', 'a\nb\n')).toBe('b\n');
    expect(newText('a\nb\n', 'a\nb\n')).toBe('');
  });

  it('finds the overlap when the tail has dropped its start', () => {
    expect(newText('line 1\nline 2\n', 'line 2\nline 3\n')).toBe('line 3\n');
    expect(newText('abcdef', 'defgh')).toBe('gh');
    expect(newText('abcdef', 'ef')).toBe('');
    // No overlap at all: everything moved on between two looks.
    expect(newText('abc', 'xyz')).toBe('xyz');
    // The longest overlap wins, found past a shorter partial match.
    expect(newText('xaab', 'aabz')).toBe('z');
    expect(newText('aaaa', 'aaab')).toBe('b');
  });

  it('takes linear time on a long tail', () => {
    const previous = 'a'.repeat(200_000);
    const current = `${'a'.repeat(199_999)}b`;
    const start = Date.now();
    expect(newText(previous, current)).toBe('b');
    expect(Date.now() - start).toBeLessThan(1_000);
  });
});

describe('LogStreams', () => {
  const task = (stdout: string, stderr = '', system: string[] = []): Task => ({
    id: 't',
    state: 'RUNNING',
    logs: [{ logs: [{ exit_code: 0, stdout, stderr }], system_logs: system }],
  });

  it('returns only what is new in each stream, and heads a stream only when it changes', () => {
    const streams = new LogStreams();
    let out = streams.render(streams.next(task('one\n', 'warn', ['queued'])));
    expect(out).toBe(
      '==> executor 0 stdout <==\none\n\n==> executor 0 stderr <==\nwarn\n\n==> system logs <==\nqueued\n',
    );
    out = streams.render(streams.next(task('one\ntwo\n', 'warn', ['queued'])));
    expect(out).toBe('\n==> executor 0 stdout <==\ntwo\n');
    out = streams.render(streams.next(task('two\nthree\n', 'warn', ['queued'])));
    expect(out).toBe('three\n');
    expect(streams.next(task('two\nthree\n', 'warn', ['queued']))).toEqual([]);
    expect(streams.finish()).toBe('');
  });

  it('labels attempts when the task ran more than once', () => {
    const streams = new LogStreams();
    const chunks = streams.next({
      id: 't',
      state: 'COMPLETE',
      logs: [{ system_logs: ['requeued'] }, { logs: [{ stdout: 'ok' }] }],
    });
    expect(chunks.map((c) => c.label)).toEqual(['attempt 1, system logs', 'attempt 2, executor 0 stdout']);
    expect(streams.render(chunks) + streams.finish()).toBe(
      '==> attempt 1, system logs <==\nrequeued\n\n==> attempt 2, executor 0 stdout <==\nok\n',
    );
  });
});

import { parseCommandLine } from '../../src/command-line.js';
import { resolveServer } from '../../src/cli/task-command.js';

describe('parseCommandLine: task', () => {
  it('reads each verb with its arguments and options', () => {
    expect(parseCommandLine(['task', 'create', '-'])).toEqual({
      kind: 'task',
      task: { verb: 'create', file: '-' },
      server: {},
      json: false,
    });
    expect(
      parseCommandLine([
        'task',
        'list',
        '--state=running',
        '--name-prefix',
        'wf.',
        '--tag',
        'project=x=y',
        '--tag',
        'run',
        '--view',
        'minimal',
        '--page-size',
        '10',
        '--page-token',
        'abc',
        '--all',
        '--json',
        '--url',
        'http://h:1',
        '--token',
        't0k',
      ]),
    ).toEqual({
      kind: 'task',
      task: {
        verb: 'list',
        filter: {
          state: 'RUNNING',
          namePrefix: 'wf.',
          tags: [{ key: 'project', value: 'x=y' }, { key: 'run' }],
        },
        view: 'MINIMAL',
        pageSize: 10,
        pageToken: 'abc',
        all: true,
      },
      server: { url: 'http://h:1', token: 't0k' },
      json: true,
    });
    expect(parseCommandLine(['task', 'get', 'T1'])).toMatchObject({
      task: { verb: 'get', taskId: 'T1', view: 'BASIC' },
    });
    expect(parseCommandLine(['task', 'cancel', 'T1', 'T2'])).toMatchObject({
      task: { verb: 'cancel', taskIds: ['T1', 'T2'] },
    });
    expect(parseCommandLine(['task', 'wait', 'T1', 'T2', '--timeout', '90'])).toMatchObject({
      task: { verb: 'wait', taskIds: ['T1', 'T2'], timeoutMs: 90_000 },
    });
    expect(parseCommandLine(['task', 'wait', 'T1', '--timeout=1.5m'])).toMatchObject({
      task: { timeoutMs: 90_000 },
    });
    expect(parseCommandLine(['task', 'wait', 'T1', '--timeout=500ms'])).toMatchObject({
      task: { timeoutMs: 500 },
    });
    expect(parseCommandLine(['task', 'logs', '-f', 'T1'])).toMatchObject({
      task: { verb: 'logs', taskId: 'T1', follow: true },
    });
    expect(parseCommandLine(['task', 'list'])).toMatchObject({
      task: { verb: 'list', filter: { tags: [] }, view: 'BASIC', all: false },
    });
  });

  it('refuses what each verb does not take, with exit code 64 and a named reason', () => {
    const cases: [string[], string][] = [
      [['task'], 'task needs a verb: create, list, get, cancel, wait, logs'],
      [['task', 'show', 'x'], 'unknown task verb "show": use create, list, get, cancel, wait, logs'],
      [['task', 'create'], 'task create needs one task file (JSON), or - to read it from standard input'],
      [
        ['task', 'create', 'a.json', 'b.json'],
        'task create needs one task file (JSON), or - to read it from standard input',
      ],
      [['task', 'get', 'T1', '--follow'], "unknown option '--follow'"],
      [['task', 'get'], 'task get needs one task id'],
      [['task', 'get', 'T1', '--view', 'ALL'], '--view: "ALL" is not a view (MINIMAL, BASIC, FULL)'],
      [['task', 'cancel'], 'task cancel needs one or more task ids'],
      [['task', 'wait', ''], 'task wait: argument 1 is empty, not a task id'],
      [
        ['task', 'wait', 'T1', '--timeout', 'soon'],
        '--timeout: "soon" is not a duration: write seconds (90), or a number and a unit (500ms, 30s, 10m, 2h)',
      ],
      [['task', 'logs', 'T1', 'T2'], 'task logs needs one task id'],
      [
        ['task', 'list', 'T1'],
        'task list takes no task ids ("T1"): filter with --state, --name-prefix or --tag',
      ],
      [['task', 'list', '--tag', '=v'], '--tag: "=v" has no key (write KEY or KEY=VALUE)'],
      [['task', 'list', '--page-size', '2048'], '--page-size: "2048" is not a whole number from 1 to 2047'],
      [['task', 'list', '--page-size', '0'], '--page-size: "0" is not a whole number from 1 to 2047'],
      [['task', 'list', '--url'], "option '--url <value>' argument missing"],
    ];
    for (const [argv, message] of cases) {
      expect(parseCommandLine(argv)).toEqual({ kind: 'usage-error', message, exitCode: 64 });
    }
    expect(parseCommandLine(['task', 'list', '--state', 'done'])).toMatchObject({
      kind: 'usage-error',
      message: expect.stringMatching(/^--state: "done" is not a TES state \(UNKNOWN, QUEUED, /),
    });
  });

  it('leaves the other commands their own usage exit code', () => {
    expect(parseCommandLine(['serve', '--bogus'])).toEqual({
      kind: 'usage-error',
      message: "unknown option '--bogus'",
    });
  });
});

describe('resolveServer', () => {
  it('takes the flags first, then TES_URL and TES_TOKEN, then the default URL and no token', () => {
    const env = { TES_URL: 'https://tes.example.org/api/', TES_TOKEN: ' secret\n' };
    expect(resolveServer({}, env)).toEqual({ url: 'https://tes.example.org/api/', token: 'secret' });
    expect(resolveServer({ url: 'http://h:8/v1', token: 'flag' }, env)).toEqual({
      url: 'http://h:8/v1',
      token: 'flag',
    });
    expect(resolveServer({}, { TES_URL: '', TES_TOKEN: '' })).toEqual({
      url: 'http://127.0.0.1:8000/ga4gh/tes/v1',
      token: undefined,
    });
  });

  it('refuses URLs it cannot use, and tokens a header cannot carry, without echoing the token', () => {
    expect(resolveServer({ url: 'tes.example.org' }, {})).toBe(
      '--url: "tes.example.org" is not a URL (write http://host:port/ga4gh/tes/v1)',
    );
    expect(resolveServer({}, { TES_URL: 'ftp://h/' })).toBe('TES_URL: use an http or https URL');
    expect(resolveServer({ url: 'http://u:p@h/' }, {})).toBe(
      '--url: the URL must not carry credentials; give the token with --token or TES_TOKEN',
    );
    expect(resolveServer({ url: 'http://h/?key=1' }, {})).toBe('--url: the URL takes no query or fragment');
    const refused = resolveServer({ token: 'two words' }, {});
    expect(refused).toBe('--token: the token holds spaces or characters an HTTP header cannot carry');
    expect(resolveServer({}, { TES_TOKEN: 'a\u0000b' })).toBe(
      'TES_TOKEN: the token holds spaces or characters an HTTP header cannot carry',
    );
  });
});

import { parseCommandLine } from '../../src/command-line.js';

describe('parseCommandLine', () => {
  it('runs serve when no command is given', () => {
    expect(parseCommandLine([])).toEqual({ kind: 'run', command: 'serve' });
    expect(parseCommandLine(['--config', 'g.yaml'])).toEqual({
      kind: 'run',
      command: 'serve',
      configPath: 'g.yaml',
    });
  });

  it('reads the command first and both options, with a space or an equals sign', () => {
    expect(parseCommandLine(['worker', '--config', 'a.yaml', '--pid-file=/run/g.pid'])).toEqual({
      kind: 'run',
      command: 'worker',
      configPath: 'a.yaml',
      pidFile: '/run/g.pid',
    });
    expect(parseCommandLine(['api', '--config=b.yaml', '--pid-file', 'p'])).toEqual({
      kind: 'run',
      command: 'api',
      configPath: 'b.yaml',
      pidFile: 'p',
    });
  });

  it('passes on a command it does not know, for the caller to refuse', () => {
    expect(parseCommandLine(['launch'])).toEqual({ kind: 'run', command: 'launch' });
  });

  it('keeps the last of a repeated option', () => {
    expect(parseCommandLine(['images', '--config=a', '--config', 'b'])).toMatchObject({ configPath: 'b' });
  });

  it('answers help for --help or -h anywhere on the line', () => {
    expect(parseCommandLine(['--help'])).toEqual({ kind: 'help' });
    expect(parseCommandLine(['serve', '--config', 'x', '-h'])).toEqual({ kind: 'help' });
    expect(parseCommandLine(['serve', '--bogus', '--help'])).toEqual({ kind: 'help' });
  });

  it('refuses a trailing --config or --pid-file that lacks its value', () => {
    expect(parseCommandLine(['serve', '--config'])).toEqual({
      kind: 'usage-error',
      message: "option '--config <value>' argument missing",
    });
    expect(parseCommandLine(['stop', '--pid-file'])).toMatchObject({ kind: 'usage-error' });
  });

  it('refuses an option whose value would be the next option', () => {
    expect(parseCommandLine(['serve', '--config', '--pid-file', 'p'])).toEqual({
      kind: 'usage-error',
      message: "option '--config' argument is ambiguous",
    });
  });

  it('refuses an unknown option and a stray argument, naming each', () => {
    expect(parseCommandLine(['serve', '--port', '80'])).toEqual({
      kind: 'usage-error',
      message: "unknown option '--port'",
    });
    expect(parseCommandLine(['serve', 'extra'])).toEqual({
      kind: 'usage-error',
      message: "unexpected argument 'extra'",
    });
    expect(parseCommandLine(['--config', 'g.yaml', 'serve'])).toMatchObject({ kind: 'usage-error' });
  });
});

describe('parseCommandLine: token', () => {
  const ID = '0123456789abcdef';

  it('reads token create with its user, label, lifetime and configuration', () => {
    expect(
      parseCommandLine(['token', 'create', '--user', 'alice', '--name=CI runner', '--expires', '2w']),
    ).toEqual({ kind: 'token', token: { verb: 'create', user: 'alice', name: 'CI runner', expires: '2w' } });
    expect(parseCommandLine(['token', 'create', '--config', 'g.yaml', '--user=bob'])).toEqual({
      kind: 'token',
      token: { verb: 'create', user: 'bob' },
      configPath: 'g.yaml',
    });
  });

  it('reads token list with and without a user, as a table or JSON', () => {
    expect(parseCommandLine(['token', 'list'])).toEqual({
      kind: 'token',
      token: { verb: 'list', json: false },
    });
    expect(parseCommandLine(['token', 'list', '--user', 'alice', '--json', '--config=g.yaml'])).toEqual({
      kind: 'token',
      token: { verb: 'list', user: 'alice', json: true },
      configPath: 'g.yaml',
    });
  });

  it('reads token revoke with one id', () => {
    expect(parseCommandLine(['token', 'revoke', ID])).toEqual({
      kind: 'token',
      token: { verb: 'revoke', tokenId: ID },
    });
    expect(parseCommandLine(['token', 'revoke', '--config', 'g.yaml', ID])).toMatchObject({
      configPath: 'g.yaml',
    });
  });

  it('refuses a missing or unknown verb', () => {
    expect(parseCommandLine(['token'])).toEqual({
      kind: 'usage-error',
      message: 'token needs a verb: create, list or revoke',
    });
    expect(parseCommandLine(['token', '--user', 'alice'])).toMatchObject({ kind: 'usage-error' });
    expect(parseCommandLine(['token', 'delete', ID])).toEqual({
      kind: 'usage-error',
      message: 'unknown token verb "delete": use create, list or revoke',
    });
  });

  it('refuses token create without --user, or with a bad label or lifetime', () => {
    expect(parseCommandLine(['token', 'create'])).toEqual({
      kind: 'usage-error',
      message: 'token create needs --user NAME',
    });
    expect(parseCommandLine(['token', 'create', '--user'])).toEqual({
      kind: 'usage-error',
      message: "option '--user <value>' argument missing",
    });
    expect(parseCommandLine(['token', 'create', '--user', 'a', '--name', 'x'.repeat(101)])).toEqual({
      kind: 'usage-error',
      message: '--name: a token label holds at most 100 characters, not 101',
    });
    expect(parseCommandLine(['token', 'create', '--user', 'a', '--name', 'x'.repeat(100)])).toMatchObject({
      kind: 'token',
    });
    expect(parseCommandLine(['token', 'create', '--user', 'a', '--name', 'a\nb'])).toEqual({
      kind: 'usage-error',
      message: '--name: a token label holds only printable characters (no control characters)',
    });
    expect(parseCommandLine(['token', 'create', '--user', 'a', '--name', ''])).toMatchObject({
      kind: 'usage-error',
    });
    expect(parseCommandLine(['token', 'create', '--user', 'a', '--expires', '1y'])).toEqual({
      kind: 'usage-error',
      message:
        '--expires: "1y" is not a duration: write a number and a unit (m, h, d or w), as in 30m, 12h, 90d or 2w',
    });
  });

  it("refuses another verb's options, --pid-file and stray arguments", () => {
    expect(parseCommandLine(['token', 'list', '--expires', '1d'])).toEqual({
      kind: 'usage-error',
      message: "unknown option '--expires'",
    });
    expect(parseCommandLine(['token', 'create', '--user', 'a', '--json'])).toMatchObject({
      kind: 'usage-error',
    });
    expect(parseCommandLine(['token', 'revoke', ID, '--user', 'a'])).toMatchObject({ kind: 'usage-error' });
    expect(parseCommandLine(['token', 'list', '--pid-file', 'p'])).toMatchObject({ kind: 'usage-error' });
    expect(parseCommandLine(['token', 'list', 'alice'])).toEqual({
      kind: 'usage-error',
      message: "unexpected argument 'alice'",
    });
  });

  it('refuses token revoke without exactly one id, and a malformed id without echoing it', () => {
    const needsOne = {
      kind: 'usage-error',
      message: 'token revoke needs one token id (token list shows them)',
    };
    expect(parseCommandLine(['token', 'revoke'])).toEqual(needsOne);
    expect(parseCommandLine(['token', 'revoke', ID, ID])).toEqual(needsOne);
    const pasted = `tesgw_${ID}_${'s'.repeat(43)}`;
    const refused = parseCommandLine(['token', 'revoke', pasted]);
    expect(refused).toEqual({
      kind: 'usage-error',
      message: 'a token id is 16 hexadecimal digits, as token list shows it',
    });
    expect(JSON.stringify(refused)).not.toContain('sss');
  });

  it('answers help for --help after token', () => {
    expect(parseCommandLine(['token', 'create', '--help'])).toEqual({ kind: 'help' });
  });
});

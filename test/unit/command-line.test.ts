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

import { commandRunsScript, parsePid } from '../../src/pid-file.js';

describe('pid files', () => {
  it('hold one process id, with or without a newline', () => {
    expect(parsePid('4242\n')).toBe(4242);
    expect(parsePid(' 17 ')).toBe(17);
  });

  it('hold nothing usable when empty, signed, zero, fractional, too large or two pids', () => {
    for (const text of ['', '\n', '-1', '0', '012', '3.5', '1e3', '4242 4243', '99999999999', 'pid'])
      expect(parsePid(text)).toBeUndefined();
  });
});

describe('whether a command line runs the gateway', () => {
  const script = '/opt/tes/dist/src/main.js';
  // A file system where /usr/bin/tes-gateway links to the script, as `npm install -g` makes it.
  const realpath = (path: string): string | undefined =>
    ({ [script]: script, '/usr/bin/tes-gateway': script, '/usr/bin/sleep': '/usr/bin/sleep' })[path];
  const cmdline = (...argv: string[]): string => `${argv.join('\0')}\0`;

  it('finds the script given relative to the process working directory', () => {
    expect(
      commandRunsScript(cmdline('node', 'dist/src/main.js', 'serve'), '/opt/tes', script, realpath),
    ).toBe(true);
  });

  it('finds the script after node options and through a symbolic link', () => {
    expect(
      commandRunsScript(cmdline('node', '--enable-source-maps', script, 'api'), '/', script, realpath),
    ).toBe(true);
    expect(commandRunsScript(cmdline('node', '/usr/bin/tes-gateway', 'serve'), '/', script, realpath)).toBe(
      true,
    );
  });

  it('does not take another program, or the same words run from elsewhere, for the gateway', () => {
    expect(commandRunsScript(cmdline('/usr/bin/sleep', '30'), '/', script, realpath)).toBe(false);
    expect(
      commandRunsScript(cmdline('node', 'dist/src/main.js', 'serve'), '/srv/other', script, realpath),
    ).toBe(false);
    // The program name alone (argv[0]) does not count: a shell named after the script is not it.
    expect(commandRunsScript(cmdline(script), '/', script, realpath)).toBe(false);
  });
});

import { CommandThread } from '../../src/exec/command-thread.js';

describe('the thread that starts programs', () => {
  const thread = new CommandThread();
  afterAll(() => thread.close());
  const PATH = process.env.PATH ?? '/usr/bin:/bin';
  const run = (
    file: string,
    args: string[],
    more: { timeoutMs?: number; maxBuffer?: number; env?: Record<string, string> } = {},
  ) =>
    thread.run({
      file,
      args,
      env: more.env ?? { PATH },
      timeoutMs: more.timeoutMs ?? 10_000,
      maxBuffer: more.maxBuffer ?? 1e6,
    });

  it("gives a program's output without its final line break, and its exit code", async () => {
    expect(await run('sh', ['-c', 'printf "a\\n\\n"; echo oops >&2'])).toEqual({
      failed: false,
      exitCode: 0,
      stdout: 'a\n',
      stderr: 'oops',
      timedOut: false,
    });
    expect(await run('sh', ['-c', 'echo no >&2; exit 3'])).toMatchObject({
      failed: true,
      exitCode: 3,
      stderr: 'no',
      shortMessage: 'Command failed with exit code 3: sh',
    });
  });

  it('gives the program exactly the environment asked for', async () => {
    const out = await run('env', [], { env: { PATH, ONLY: 'this' } });
    expect(out.stdout.split('\n').sort()).toEqual([`PATH=${PATH}`, 'ONLY=this'].sort());
  });

  it('says why a program did not run, or was stopped', async () => {
    expect(await run('no-such-program-anywhere', [])).toMatchObject({
      failed: true,
      timedOut: false,
      shortMessage: expect.stringContaining('ENOENT'),
    });
    expect(await run('sleep', ['30'], { timeoutMs: 200 })).toMatchObject({
      failed: true,
      timedOut: true,
      signal: 'SIGTERM',
      shortMessage: 'Command timed out after 200 milliseconds: sleep',
    });
    expect(await run('sh', ['-c', 'yes | head -c 100000'], { maxBuffer: 1000 })).toMatchObject({
      failed: true,
      timedOut: false,
      shortMessage: 'Command produced more than 1000 bytes of output: sh',
    });
  });

  it('fails the calls under way when the thread stops, and starts a new one for the next', async () => {
    const waiting = run('sleep', ['3']);
    await new Promise((r) => setTimeout(r, 100));
    await thread.close();
    await expect(waiting).rejects.toThrow('the thread that starts programs exited');
    expect((await run('echo', ['again'])).stdout).toBe('again');
  });
});

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** The built `tes-gateway` program (npm run build), as an operator runs it. */
export const MAIN = join(process.cwd(), 'dist', 'src', 'main.js');

/** The built user side of run-as-user mode (`finish`), which the helper runs as a task's owner. */
export const USER_SIDE = join(process.cwd(), 'dist', 'src', 'run-as', 'user-side.js');

export function requireBuiltProgram(): void {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
}

export interface ProgramRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * `tes-gateway ARGS` run to its end without blocking this process (which may host a gateway the
 * program talks to). The timeout turns a program that should have stopped into a failure, not a hang;
 * a loaded machine takes seconds to start node.
 */
export function runProgram(args: readonly string[], timeoutMs = 90_000): Promise<ProgramRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [MAIN, ...args],
      { encoding: 'utf8', timeout: timeoutMs },
      (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

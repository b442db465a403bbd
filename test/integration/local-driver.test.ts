import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { LocalDriver } from '../../src/compute/local/local-driver.js';
import { TASK_FILE, taskDirOf, taskFile } from '../../src/tes/task-directory.js';
import { until } from '../helpers/until.js';

/** The local launcher on its own, with real child processes and real task directories. */

let workRoot: string;
const logged: Array<{ msg?: string; taskId?: string }> = [];
const sink = new Writable({
  write(chunk: Buffer, _enc, done) {
    logged.push(JSON.parse(chunk.toString()) as { msg?: string; taskId?: string });
    done();
  },
});

beforeEach(() => {
  workRoot = mkdtempSync('/var/tmp/tesgw-local-driver-');
  logged.length = 0;
});
afterEach(() => rmSync(workRoot, { recursive: true, force: true }));

/** A task directory whose job script runs `body`. */
function taskWith(taskId: string, body: string): { taskId: string; workDir: string } {
  const workDir = taskDirOf(workRoot, taskId);
  mkdirSync(workDir, { mode: 0o700 });
  writeFileSync(taskFile(workDir, TASK_FILE.jobScript), `#!/bin/bash\n${body}\n`, { mode: 0o700 });
  return { taskId, workDir };
}

describe('the local launcher', () => {
  it('goes on when a task directory is removed while its job runs', async () => {
    const driver = new LocalDriver({
      workRoot,
      maxConcurrentTasks: 1,
      logger: pino({ level: 'warn' }, sink),
    });
    try {
      const gone = taskWith('gone', 'sleep 0.5');
      const next = taskWith('next', 'true');
      for (const t of [gone, next]) {
        await driver.submit({ ...t, ledgerDir: t.workDir, args: [], since: new Date(), marker: '' });
      }
      await until('the first job starting', 10_000, async () =>
        existsSync(taskFile(gone.workDir, TASK_FILE.localPid)) ? true : undefined,
      );
      rmSync(gone.workDir, { recursive: true, force: true });
      // The end of the first job has nowhere to go: it is logged, and the one waiting behind it runs.
      const exit = await until('the waiting job ending', 10_000, async () =>
        existsSync(taskFile(next.workDir, TASK_FILE.localExit))
          ? readFileSync(taskFile(next.workDir, TASK_FILE.localExit), 'utf8').trim()
          : undefined,
      );
      expect(exit).toBe('0:0');
      expect(logged).toContainEqual(
        expect.objectContaining({ msg: 'could not record the end of a local job', taskId: 'gone' }),
      );
    } finally {
      await driver.close();
    }
  });
});

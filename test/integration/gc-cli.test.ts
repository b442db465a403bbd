import { jest } from '@jest/globals';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { Keys } from '../../src/store/keys.js';
import { taskDirOf } from '../../src/tes/task-directory.js';
import { seedOldTask } from '../helpers/old-tasks.js';
import { connect, dropPrefix, testPrefix, keysUnder } from '../helpers/redis.js';
import { requireBuiltProgram, runProgram } from '../helpers/built-program.js';

/** `tes-gateway gc` as an operator runs it: the built program (npm run build) against real Redis. */
jest.setTimeout(60_000);

const run = (...args: string[]) => runProgram(args);

describe('tes-gateway gc', () => {
  let redis: Redis;
  let prefix: string;
  let workRoot: string;
  let configFile: string;

  beforeAll(requireBuiltProgram);

  beforeEach(() => {
    redis = connect();
    prefix = testPrefix('gc-cli');
    workRoot = mkdtempSync(join('/var/tmp', 'tesgw-gc-cli-'));
    configFile = join(mkdtempSync(join(tmpdir(), 'tesgw-gc-cli-')), 'gateway.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({ redis: { prefix }, workRoot, log: { level: 'warn' }, retention: { batchSize: 2 } }),
    );
  });

  afterEach(async () => {
    await dropPrefix(redis, prefix);
    redis.disconnect();
    rmSync(workRoot, { recursive: true, force: true });
  });

  it('shows with --dry-run what would go and changes nothing, then removes it without', async () => {
    const seed = (state: 'COMPLETE' | 'EXECUTOR_ERROR' | 'RUNNING', endedDaysAgo: number, bytes: number) =>
      seedOldTask(redis, prefix, workRoot, {
        ageDays: 60,
        state,
        endedDaysAgo,
        request: { name: 'n', tags: { project: 'p' } },
        owner: 'ann',
        dirBytes: bytes,
      });
    const gone = [
      await seed('COMPLETE', 50, 1000),
      await seed('COMPLETE', 40, 200),
      await seed('EXECUTOR_ERROR', 31, 30),
    ];
    const kept = [await seed('COMPLETE', 29, 7), await seed('RUNNING', 0, 5)];
    const before = await keysUnder(redis, prefix);

    const dry = await run('gc', '--dry-run', '--config', configFile);

    expect(dry.stderr).toBe('');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(
      /^would expire 3 finished tasks that ended before \S+Z \(retention\.terminalTasksDays 30\)$/m,
    );
    expect(dry.stdout).toMatch(/^ {2}COMPLETE +2$/m);
    expect(dry.stdout).toMatch(/^ {2}EXECUTOR_ERROR +1$/m);
    expect(dry.stdout).toMatch(/^oldest end \S+Z, newest end \S+Z$/m);
    expect(dry.stdout).toMatch(/^task directories: 1230 bytes \(0\.0 MiB\)$/m);
    expect(dry.stdout).toMatch(/nothing was changed \(--dry-run\)/);
    expect(await keysUnder(redis, prefix)).toEqual(before);
    for (const id of [...gone, ...kept]) expect(existsSync(taskDirOf(workRoot, id))).toBe(true);

    const real = await run('gc', '--config', configFile);

    expect(real.stderr).toBe('');
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/^expired 3 finished tasks that ended before/m);
    expect(real.stdout).toMatch(/^task directories: 1230 bytes \(0\.0 MiB\) removed$/m);
    const keys = new Keys(prefix);
    for (const id of gone) {
      expect(await redis.exists(keys.task(id))).toBe(0);
      expect(existsSync(taskDirOf(workRoot, id))).toBe(false);
    }
    for (const id of kept) {
      expect(await redis.exists(keys.task(id))).toBe(1);
      expect(existsSync(taskDirOf(workRoot, id))).toBe(true);
    }
    expect(await redis.zrange(keys.tagValue('project', 'p'), 0, -1)).toEqual(kept);
    expect(await redis.zrange(keys.owner('ann'), 0, -1)).toEqual(kept);

    const again = await run('gc', '--config', configFile);
    expect(again.stdout).toMatch(/^expired 0 finished tasks/m);
  });

  it('says that nothing expires when terminalTasksDays is 0', async () => {
    writeFileSync(
      configFile,
      JSON.stringify({ redis: { prefix }, workRoot, retention: { terminalTasksDays: 0 } }),
    );
    const id = await seedOldTask(redis, prefix, workRoot, { ageDays: 400, state: 'COMPLETE' });
    const result = await run('gc', '--config', configFile);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/terminalTasksDays is 0: finished tasks are kept for ever/);
    expect(await redis.exists(new Keys(prefix).task(id))).toBe(1);
  });

  it('refuses an unknown option and an unknown retention key as usage errors', async () => {
    const bad = await run('gc', '--force');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown option '--force'/i);
    writeFileSync(configFile, JSON.stringify({ redis: { prefix }, retention: { terminalTaskDays: 3 } }));
    const typo = await run('gc', '--config', configFile);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/terminalTaskDays/);
  });
});

import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FAKE_APPTAINER,
  requireSlurm,
  startTestGateway,
  testImages,
  type TestGateway,
} from '../helpers/gateway.js';
import {
  cancelJobsOf,
  notComplete,
  shortTask,
  sleep,
  startBurst,
  waitAllEnded,
  wrongJobCounts,
} from '../helpers/fault-burst.js';

/**
 * sacct fails for many reconciler cycles in the middle of a burst, as when slurmdbd is overloaded or
 * its database is away while the controller keeps running jobs. The gateway's `slurm.binDir` holds
 * wrappers that run the real tools; the one for sacct exits 1 until a deadline the test sets. Every
 * accepted task ends COMPLETE with exactly one Slurm job or array element.
 */
jest.setTimeout(180_000);

const FAILING_MS = 15_000;
const TOOLS = ['sbatch', 'sacct', 'squeue', 'scancel', 'sinfo'] as const;
let image: string;
let binDir: string;
let gw: TestGateway | undefined;
let ids: readonly string[] = [];

/** One wrapper per tool; sacct's fails while the epoch second in `sacct-fails-until` is ahead. */
function writeWrappers(dir: string): void {
  for (const tool of TOOLS) {
    const real = execFileSync('bash', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim();
    const fail =
      tool === 'sacct'
        ? [
            `until=$(cat '${dir}/sacct-fails-until' 2>/dev/null || echo 0)`,
            'if (( $(date +%s) < until )); then',
            `  echo "$$" >>'${dir}/sacct-failures'`,
            "  echo 'sacct: error: Problem talking to the database: Connection refused' >&2",
            '  exit 1',
            'fi',
          ]
        : [];
    writeFileSync(join(dir, tool), ['#!/usr/bin/env bash', ...fail, `exec '${real}' "$@"`, ''].join('\n'));
    chmodSync(join(dir, tool), 0o755);
  }
}

beforeAll(() => {
  requireSlurm();
  image = testImages().busybox;
  binDir = mkdtempSync(join(tmpdir(), 'tesgw-fault-bin-'));
  writeWrappers(binDir);
});
afterAll(async () => {
  if (gw) await cancelJobsOf(ids, gw.workRoot);
  await gw?.close();
  rmSync(binDir, { recursive: true, force: true });
});

it('loses no task and runs none twice while sacct fails for several reconciler cycles', async () => {
  gw = await startTestGateway('fault-sacct', {
    backend: 'slurm',
    container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
    slurm: { defaultPartition: 'debug', binDir },
  });
  const base = gw.base;
  const burst = startBurst(
    () => [base],
    (n) => shortTask(image, `sacct-${n}`),
  );
  ids = burst.ids;
  try {
    await sleep(3_000);
    writeFileSync(join(binDir, 'sacct-fails-until'), `${Math.ceil((Date.now() + FAILING_MS) / 1000)}\n`);
    await sleep(FAILING_MS + 2_000);
  } finally {
    await burst.stop();
  }
  // The reconciler polls every 500 ms: the failures span many of its cycles.
  const failures = readFileSync(join(binDir, 'sacct-failures'), 'utf8').split('\n').filter(Boolean);
  expect(failures.length).toBeGreaterThanOrEqual(10);

  const tasks = await waitAllEnded(() => base, burst.ids, 120_000);
  expect(notComplete(tasks)).toEqual([]);
  expect(await wrongJobCounts(tasks, gw.workRoot, 15)).toEqual([]);
});

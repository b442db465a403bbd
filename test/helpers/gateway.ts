import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { basename, join } from 'node:path';
import { loadConfig } from '../../src/config/load-config.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import { createLogger } from '../../src/logger.js';
import { isTerminal, type TesState } from '../../src/tes/state.js';
import { connect, dropPrefix, testPrefix } from './redis.js';

export const ROOT = process.cwd();
export const FAKE_APPTAINER = join(ROOT, 'test', 'apptainer', 'apptainer');

/** Where the test images are built: the image root of every test gateway. */
export const TEST_IMAGES_DIR = process.env.TES_TEST_IMAGES ?? join(ROOT, '.tmp', 'images');

/** Builds the small test images once per run (busybox + bash, as a real .sif). */
export function testImages(): { dir: string; busybox: string; registry: string } {
  const dir = TEST_IMAGES_DIR;
  execFileSync('bash', [join(ROOT, 'test', 'apptainer', 'build-images.sh'), dir], { stdio: 'pipe' });
  return { dir, busybox: join(dir, 'busybox.sif'), registry: join(dir, 'registry') };
}

/** The real cluster must be there: the Slurm tests fail, never skip, without it. */
export function requireSlurm(): void {
  try {
    execFileSync('sinfo', ['-h', '-o', '%T'], { stdio: 'pipe', timeout: 10_000 });
  } catch (err) {
    throw new Error(
      `the Slurm tests need the single-node cluster (bash scripts/slurm-up.sh): ${(err as Error).message}`,
    );
  }
}

export interface TestGateway {
  gateway: Gateway;
  url: string;
  base: string;
  workRoot: string;
  prefix: string;
  close(): Promise<void>;
}

/** A whole gateway (API, workers, reconciler) in this process, on its own prefix and work root. */
export async function startTestGateway(
  name: string,
  overrides: Record<string, unknown> = {},
  options: { roles?: { api: boolean; worker: boolean }; prefix?: string; workRoot?: string } = {},
): Promise<TestGateway> {
  const prefix = options.prefix ?? testPrefix(name);
  const workRoot =
    options.workRoot ?? mkdtempSync(join(existsSync('/var/tmp') ? '/var/tmp' : '/tmp', `tesgw-${name}-`));
  const config = loadConfig({
    env: {},
    overrides: {
      server: { port: 0, host: '127.0.0.1' },
      redis: { prefix },
      workRoot,
      log: { level: process.env.TES_TEST_LOG ?? 'silent' },
      reconciler: { pollIntervalMs: 500 },
      worker: { submitBackoffMs: 200 },
      // Tests run as root (CI does); the refusal to run so has tests of its own.
      security: { allowRoot: true },
      ...overrides,
      ...withImageCache(overrides, workRoot),
    },
  });
  const gateway = await startGateway(
    config,
    options.roles ?? { api: true, worker: true },
    createLogger(config.log.level),
  );
  const url = `http://127.0.0.1:${gateway.port}`;
  return {
    gateway,
    url,
    base: `${url}/ga4gh/tes/v1`,
    workRoot,
    prefix,
    async close() {
      await gateway.close();
      const redis = connect();
      await dropPrefix(redis, prefix);
      redis.disconnect();
    },
  };
}

/**
 * Tests keep pulled images in a directory of their own, unless they name one, and may run the local
 * test images (container.imageRoots), unless they name other roots.
 */
function withImageCache(overrides: Record<string, unknown>, workRoot: string): Record<string, unknown> {
  const container = (overrides.container ?? {}) as Record<string, unknown>;
  return {
    container: {
      imageCacheDir: join(workRoot, '..', `${basename(workRoot)}-images`),
      imageRoots: [TEST_IMAGES_DIR],
      ...container,
    },
  };
}

export async function createTask(base: string, body: unknown): Promise<string> {
  const res = await fetch(`${base}/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as { id?: string; message?: string };
  if (res.status !== 200 || !json.id) throw new Error(`create failed (${res.status}): ${json.message}`);
  return json.id;
}

export async function getTask(
  base: string,
  id: string,
  view = 'FULL',
  headers: Record<string, string> = {},
): Promise<any> {
  const res = await fetch(`${base}/tasks/${id}?view=${view}`, { headers });
  return res.json();
}

/** Polls until the task reaches one of `states` (a terminal state by default). */
export async function waitFor(
  base: string,
  id: string,
  states?: TesState[],
  timeoutMs = 120_000,
  headers: Record<string, string> = {},
): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let task: any;
  while (Date.now() < deadline) {
    task = await getTask(base, id, 'FULL', headers);
    if (states ? states.includes(task.state) : isTerminal(task.state)) return task;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `task ${id} did not reach ${states?.join('/') ?? 'a terminal state'} in ${timeoutMs} ms; last: ${JSON.stringify(task)}`,
  );
}

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const GOLDEN_DIR = join(process.cwd(), 'test', 'golden');

/**
 * Compares text with test/golden/<name>. Goldens are written only on request
 * (`UPDATE_GOLDEN=1 npm test`) and reviewed in the diff; a missing one fails.
 */
export function expectGolden(name: string, actual: string): void {
  const file = join(GOLDEN_DIR, name);
  if (process.env.UPDATE_GOLDEN === '1') {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, actual);
  } else if (!existsSync(file)) {
    // A golden written by the run that checks it would pass whatever the code produced.
    throw new Error(
      `golden file test/golden/${name} is missing: create it with UPDATE_GOLDEN=1 and review it`,
    );
  }
  expect(actual).toBe(readFileSync(file, 'utf8'));
}

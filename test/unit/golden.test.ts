import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expectGolden, GOLDEN_DIR } from '../helpers/golden.js';

describe('expectGolden', () => {
  const saved = process.env.UPDATE_GOLDEN;
  beforeEach(() => {
    delete process.env.UPDATE_GOLDEN;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.UPDATE_GOLDEN;
    else process.env.UPDATE_GOLDEN = saved;
  });

  it('fails on a missing golden, says how to create it, and writes nothing', () => {
    const name = 'never-written/missing.txt';
    expect(() => expectGolden(name, 'anything')).toThrow(
      'golden file test/golden/never-written/missing.txt is missing: create it with UPDATE_GOLDEN=1',
    );
    expect(existsSync(join(GOLDEN_DIR, name))).toBe(false);
  });

  it('compares with an existing golden', () => {
    expect(() => expectGolden('sbatch/typical.txt', 'not what the golden holds')).toThrow();
  });
});

import { isTaskId, newTaskId } from '../../src/tes/task-id.js';

describe('task ids', () => {
  it('sort by creation time', () => {
    const a = newTaskId(1_700_000_000_000);
    const b = newTaskId(1_700_000_000_001);
    const c = newTaskId(1_800_000_000_000);
    expect([c, a, b].sort()).toEqual([a, b, c]);
  });

  it('are 26 characters of lower-case base32 and unique', () => {
    const ids = new Set(Array.from({ length: 10_000 }, () => newTaskId(1_700_000_000_000)));
    expect(ids.size).toBe(10_000);
    for (const id of ids) expect(isTaskId(id)).toBe(true);
  });

  it('rejects what it did not make', () => {
    expect(isTaskId('../../etc/passwd')).toBe(false);
    expect(isTaskId('01J0000000000000000000000U')).toBe(false);
  });
});

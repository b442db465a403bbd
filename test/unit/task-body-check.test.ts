import { formats as validatorFormats } from 'express-openapi-validator/dist/framework/ajv/formats.js';
import { specPath } from '../../src/app.js';
import { compileTaskBodyCheck, NUMERIC_FORMATS } from '../../src/api/task-body-check.js';

/**
 * The fast path's check of a task body (src/api/task-body-check.ts) means what the app's validator
 * means: its numeric formats are held to express-openapi-validator's own, so an upgrade that changes
 * those fails here, and its verdicts on the fields they judge are pinned.
 */

const EDGES = [
  0,
  1,
  -1,
  0.5,
  -0.5,
  2 ** 31 - 1,
  2 ** 31,
  -(2 ** 31),
  -(2 ** 31) - 1,
  2 ** 53,
  2 ** 63,
  -(2 ** 63),
  2 ** 64,
  1e-40,
  1e-45,
  3.4e38,
  3.5e38,
  -3.5e38,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
];

describe("the fast path's check of a task body", () => {
  it.each(Object.keys(NUMERIC_FORMATS) as Array<keyof typeof NUMERIC_FORMATS>)(
    "judges numbers of format %s as express-openapi-validator's own format does",
    (name) => {
      const ours = EDGES.map((n) => NUMERIC_FORMATS[name].validate(n));
      const theirs = EDGES.map((n) => validatorFormats[name].validate(n));
      expect(ours).toEqual(theirs);
      expect(NUMERIC_FORMATS[name].type).toBe(validatorFormats[name].type);
    },
  );

  it('accepts a task the spec describes, and refuses what the spec refuses', () => {
    const check = compileTaskBodyCheck(specPath());
    const executors = [{ image: 'alpine', command: ['true'] }];
    expect(check({ executors })).toBe(true);
    expect(check({ executors, resources: { cpu_cores: 4, ram_gb: 1.5, preemptible: true } })).toBe(true);
    for (const body of [
      {},
      [],
      'task',
      { executors: [{ image: 'alpine' }] },
      { executors: [{ image: 7, command: ['true'] }] },
      { executors, resources: { cpu_cores: 2 ** 31 } },
      { executors, resources: { cpu_cores: 1.5 } },
      { executors, resources: { ram_gb: '1' } },
      { executors, inputs: [{ path: '/in', type: 'FOLDER' }] },
      { executors, tags: { a: 1 } },
      // A read-only field, as the validator refuses it (the app drops those before either check).
      { executors, state: 'QUEUED' },
    ]) {
      expect([body, check(body)]).toEqual([body, false]);
    }
  });
});

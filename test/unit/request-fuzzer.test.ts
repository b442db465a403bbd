import { specPath } from '../../src/app.js';
import { loadConfig } from '../../src/config/load-config.js';
import { normalizeTaskBody } from '../../src/tes/normalize.js';
import { checkTaskRules, taskRulesFor } from '../../src/tes/validate-task.js';
import { fuzzCase, loadSpec, mutatedTaskText, Rng, TaskGenerator } from '../helpers/request-fuzzer.js';
import { schemaValidator } from '../helpers/spec-validator.js';

const spec = loadSpec(specPath());
const generator = new TaskGenerator(spec);

describe('the request fuzzer', () => {
  it('generates valid tasks that pass the schema and the gateway rules', () => {
    const schema = schemaValidator(spec, 'tesTask');
    const rules = taskRulesFor(loadConfig({ env: {}, overrides: {} }), [
      'partition',
      'account',
      'qos',
      'time_limit',
      'constraint',
    ]);
    const problems: string[] = [];
    for (let i = 0; i < 300; i++) {
      const task = normalizeTaskBody(generator.task(Rng.forRequest(i, -1)));
      if (!schema(task)) problems.push(`task ${i}: ${JSON.stringify(schema.errors)}`);
      for (const p of checkTaskRules(task, rules).problems)
        problems.push(`task ${i}: ${p.path}: ${p.message}`);
    }
    expect(problems).toEqual([]);
  });

  it('makes the same request for the same seed and index, and another for another index', () => {
    const a = fuzzCase(42, 7, generator, ['t1', 't2']);
    expect(fuzzCase(42, 7, generator, ['t1', 't2'])).toEqual(a);
    expect(fuzzCase(42, 8, generator, ['t1', 't2'])).not.toEqual(a);
  });

  it('writes numbers JSON.stringify cannot, such as 1e999, into mutated bodies', () => {
    const texts = Array.from({ length: 400 }, (_, i) => mutatedTaskText(Rng.forRequest(1, i), generator));
    expect(texts.some((t) => /[:,[]1e999[,}\]]/.test(t))).toBe(true);
    expect(texts.some((t) => t.includes('\\u0001raw:'))).toBe(false);
  });
});

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/load-config.js';
import { ValidationError } from '../../src/errors.js';
import {
  jsonTextNestingExceeds,
  MAX_BODY_DEPTH,
  nestingExceeds,
  normalizeTaskBody,
  REQUEST_FIELDS,
} from '../../src/tes/normalize.js';
import { checkTaskRules, taskRulesFor } from '../../src/tes/validate-task.js';
import { projectRoot } from '../../src/version.js';

const RULES = taskRulesFor(loadConfig({ env: {}, overrides: { server: { maxContentBytes: 128 * 1024 } } }), [
  'partition',
  'account',
]);

/** The problems normalizeTaskBody refuses a body with, as `path: message` lines. */
function refusal(body: unknown): string[] {
  try {
    normalizeTaskBody(body);
  } catch (err) {
    if (err instanceof ValidationError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

/** `levels` arrays inside each other, innermost empty: `[[[]]]` is 3 levels. */
function nestedArrays(levels: number): unknown {
  let value: unknown = [];
  for (let i = 1; i < levels; i++) value = [value];
  return value;
}

describe('normalizeTaskBody', () => {
  it('drops JSON null anywhere', () => {
    expect(
      normalizeTaskBody({
        name: null,
        tags: { a: null, b: 'x' },
        executors: [{ image: 'alpine', command: ['true'], env: null, stdin: null }, null],
        resources: { backend_parameters: { q: null } },
      }),
    ).toEqual({
      tags: { b: 'x' },
      executors: [{ image: 'alpine', command: ['true'] }],
      resources: { backend_parameters: {} },
    });
  });

  it("accepts the camelCase names of Funnel's client", () => {
    expect(
      normalizeTaskBody({
        resources: {
          cpuCores: 2,
          ramGb: 1.5,
          diskGb: 3,
          backendParameters: { partitionName: 'x' },
          backendParametersStrict: true,
        },
        executors: [{ image: 'a', command: ['b'], ignoreError: true }],
        outputs: [{ path: '/o/*', url: 'file:///x/', pathPrefix: '/o/' }],
      }),
    ).toEqual({
      resources: {
        cpu_cores: 2,
        ram_gb: 1.5,
        disk_gb: 3,
        backend_parameters: { partitionName: 'x' },
        backend_parameters_strict: true,
      },
      executors: [{ image: 'a', command: ['b'], ignore_error: true }],
      outputs: [{ path: '/o/*', url: 'file:///x/', path_prefix: '/o/', type: 'FILE' }],
    });
  });

  it('keeps the keys of user maps as sent', () => {
    const body = normalizeTaskBody({
      tags: { cpuCores: '1' },
      executors: [{ image: 'a', command: ['b'], env: { ramGb: '1' } }],
    });
    expect(body).toEqual({
      tags: { cpuCores: '1' },
      executors: [{ image: 'a', command: ['b'], env: { ramGb: '1' } }],
    });
  });

  it('defaults a missing input or output type to FILE', () => {
    expect(
      normalizeTaskBody({
        inputs: [{ path: '/a', url: '/b' }],
        outputs: [{ path: '/c', url: '/d', type: 'DIRECTORY' }],
      }),
    ).toEqual({
      inputs: [{ path: '/a', url: '/b', type: 'FILE' }],
      outputs: [{ path: '/c', url: '/d', type: 'DIRECTORY' }],
    });
  });

  it('drops unknown fields at every level and keeps the known ones', () => {
    expect(
      normalizeTaskBody({
        name: 'n',
        unknown: { x: 1 },
        executors: [{ image: 'a', command: ['b'], zzz: 1, env: { A: '1' } }],
        inputs: [{ path: '/i', url: 'file:///i', extra: true }],
        outputs: [{ path: '/o', url: 'file:///o', size: 3 }],
        resources: { cpu_cores: 1, gpus: 2, boot_disk_gb: 3 },
      }),
    ).toEqual({
      name: 'n',
      executors: [{ image: 'a', command: ['b'], env: { A: '1' } }],
      inputs: [{ path: '/i', url: 'file:///i', type: 'FILE' }],
      outputs: [{ path: '/o', url: 'file:///o', type: 'FILE' }],
      resources: { cpu_cores: 1 },
    });
  });

  it('reads only own fields, so names of Object.prototype are never taken from it', () => {
    const body = JSON.parse(
      '{"executors":[{"image":"a","command":["b"]}],"toString":1,"constructor":2,' +
        '"__proto__":{"name":"inherited","tags":{"x":"y"}},"hasOwnProperty":3}',
    ) as Record<string, unknown>;
    const task = normalizeTaskBody(body) as Record<string, unknown>;
    expect(Object.keys(task)).toEqual(['executors']);
    expect(JSON.stringify(task)).toBe('{"executors":[{"image":"a","command":["b"]}]}');
    expect(Object.getPrototypeOf(task)).toBe(Object.prototype);
    expect(task.name).toBeUndefined();
  });

  it('does not take fields from a prototype set on the parsed body', () => {
    const body = Object.create({ name: 'inherited', executors: [] }) as Record<string, unknown>;
    body.description = 'own';
    expect(normalizeTaskBody(body)).toEqual({ description: 'own' });
  });

  it('keeps camelCase aliases out of the stored task, the snake_case spelling winning', () => {
    const task = normalizeTaskBody({
      executors: [{ image: 'a', command: ['b'], ignore_error: false, ignoreError: true }],
      resources: { cpuCores: 2, ramGb: null, ram_gb: 4 },
    });
    expect(task).toEqual({
      executors: [{ image: 'a', command: ['b'], ignore_error: false }],
      resources: { cpu_cores: 2, ram_gb: 4 },
    });
  });

  it.each(['__proto__', 'constructor', 'prototype'])('refuses the key %s in a user map, naming it', (key) => {
    const map = JSON.parse(`{"${key}":"x","ok":"y"}`) as unknown;
    expect(refusal({ tags: map })).toEqual([`tags.${key}: is a reserved name and cannot be used as a key`]);
    expect(refusal({ executors: [{ image: 'a', command: ['b'], env: map }] })).toEqual([
      `executors[0].env.${key}: is a reserved name and cannot be used as a key`,
    ]);
    expect(refusal({ resources: { backend_parameters: map } })).toEqual([
      `resources.backend_parameters.${key}: is a reserved name and cannot be used as a key`,
    ]);
  });

  it('builds user maps as plain objects holding only the keys sent', () => {
    const task = normalizeTaskBody({ tags: { toString: 'a', valueOf: 'b' } }) as { tags: object };
    expect(Object.getPrototypeOf(task.tags)).toBe(Object.prototype);
    expect(Object.entries(task.tags)).toEqual([
      ['toString', 'a'],
      ['valueOf', 'b'],
    ]);
  });

  it('refuses a number JSON made infinite', () => {
    const body = JSON.parse('{"executors":[],"resources":{"ram_gb":1e999,"disk_gb":-1e999}}') as unknown;
    expect(refusal(body)).toEqual([
      'resources.ram_gb: must be a finite number',
      'resources.disk_gb: must be a finite number',
    ]);
  });

  it(`refuses a body nested deeper than ${MAX_BODY_DEPTH} levels, even in a field it would drop`, () => {
    expect(refusal({ executors: [], x: nestedArrays(MAX_BODY_DEPTH) })).toEqual([
      `body: nested deeper than ${MAX_BODY_DEPTH} levels`,
    ]);
    expect(refusal({ executors: [], x: nestedArrays(MAX_BODY_DEPTH - 1) })).toEqual([]);
  });

  it('measures nesting without recursion, so 100,000 levels are no stack overflow', () => {
    const deep = JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`) as unknown;
    expect(nestingExceeds(deep, MAX_BODY_DEPTH)).toBe(true);
    expect(refusal({ tags: deep })).toEqual([`body: nested deeper than ${MAX_BODY_DEPTH} levels`]);
  });

  it('counts objects and arrays alike when measuring nesting', () => {
    expect(nestingExceeds({ a: [{ b: [] }] }, 4)).toBe(false);
    expect(nestingExceeds({ a: [{ b: [] }] }, 3)).toBe(true);
    expect(nestingExceeds('text', 0)).toBe(false);
  });

  it('measures nesting in JSON text the same way, before parsing', () => {
    const text = (t: string): Buffer => Buffer.from(t, 'utf8');
    expect(jsonTextNestingExceeds(text('{"a":[{"b":[]}]}'), 4)).toBe(false);
    expect(jsonTextNestingExceeds(text('{"a":[{"b":[]}]}'), 3)).toBe(true);
    expect(jsonTextNestingExceeds(text(`${'['.repeat(65)}${']'.repeat(65)}`), MAX_BODY_DEPTH)).toBe(true);
    expect(jsonTextNestingExceeds(text(`${'['.repeat(64)}${']'.repeat(64)}`), MAX_BODY_DEPTH)).toBe(false);
  });

  it('does not count brackets inside strings, escaped quotes included', () => {
    const inString = JSON.stringify({ a: `"[[[[{{{{ \\" é ${'['.repeat(100)}` });
    expect(jsonTextNestingExceeds(Buffer.from(inString, 'utf8'), 1)).toBe(false);
    // The JSON string `"\\"` holds one backslash, so the quote after it ends the string.
    expect(jsonTextNestingExceeds(Buffer.from('{"a":"\\\\","b":[[]]}', 'utf8'), 2)).toBe(true);
  });

  it('passes a field of the wrong type on unchanged, for the schema check to name', () => {
    expect(
      normalizeTaskBody({
        executors: 'x',
        resources: [1],
        tags: 'y',
        inputs: [3, { path: '/a', url: '/b' }],
      }),
    ).toEqual({
      executors: 'x',
      resources: [1],
      tags: 'y',
      inputs: [3, { path: '/a', url: '/b', type: 'FILE' }],
    });
  });

  it('knows exactly the writable fields of each request object in the spec', () => {
    const spec = parseYaml(readFileSync(join(projectRoot(), 'spec', 'tes.openapi.yaml'), 'utf8')) as {
      components: {
        schemas: Record<string, { properties: Record<string, { readOnly?: boolean; $ref?: string }> }>;
      };
    };
    const schemas = spec.components.schemas;
    const isReadOnly = (p: { readOnly?: boolean; $ref?: string }): boolean =>
      p.readOnly === true ||
      (p.$ref !== undefined &&
        (schemas[p.$ref.split('/').pop()!] as { readOnly?: boolean } | undefined)?.readOnly === true);
    for (const [name, fields] of Object.entries(REQUEST_FIELDS)) {
      const writable = Object.entries(schemas[name]!.properties)
        .filter(([, p]) => !isReadOnly(p))
        .map(([field]) => field);
      expect({ name, fields: [...fields].sort() }).toEqual({ name, fields: writable.sort() });
    }
  });

  it('drops read-only fields a client echoes', () => {
    expect(
      normalizeTaskBody({
        id: 'x',
        state: 'COMPLETE',
        logs: [],
        creation_time: 'now',
        creationTime: 'now',
        name: 'n',
      }),
    ).toEqual({
      name: 'n',
    });
  });
});

describe('checkTaskRules', () => {
  const valid = { executors: [{ image: 'alpine', command: ['true'] }] };

  it('accepts a plain task', () => {
    expect(checkTaskRules(valid, RULES)).toEqual({ problems: [], ignoredBackendParameters: [] });
  });

  it('reports every problem at once with its field path', () => {
    const { problems } = checkTaskRules(
      {
        executors: [{ image: '', command: [], workdir: 'rel', env: { '1BAD': 'x' } }],
        inputs: [{ path: 'in', url: 'file:///x', content: 'y' }, { path: '/b' }],
        outputs: [{ path: '/o', url: '' }],
        volumes: ['/v/../etc'],
        resources: { cpu_cores: 0, ram_gb: -1 },
      },
      RULES,
    );
    expect(problems.map((p) => `${p.path}: ${p.message}`)).toEqual([
      'executors[0].image: must not be empty',
      'executors[0].command: must not be empty',
      'executors[0].workdir: must be an absolute path',
      'executors[0].env.1BAD: must be a variable name of letters, digits and _, not starting with a digit',
      'inputs[0].path: must be an absolute path',
      'inputs[0]: must set either url or content, not both',
      'inputs[1]: must set url or content',
      'outputs[0].url: must not be empty',
      "volumes[0]: must not contain '..'",
      'resources.cpu_cores: must be greater than 0',
      'resources.ram_gb: must be greater than 0',
    ]);
  });

  it('requires at least one executor', () => {
    expect(checkTaskRules({ executors: [] }, RULES).problems).toEqual([
      { path: 'executors', message: 'must list at least one executor' },
    ]);
  });

  it('limits content to the configured size, at least 128 KiB', () => {
    const at = 'x'.repeat(128 * 1024);
    expect(checkTaskRules({ ...valid, inputs: [{ path: '/a', content: at }] }, RULES).problems).toEqual([]);
    expect(
      checkTaskRules({ ...valid, inputs: [{ path: '/a', content: `${at}x` }] }, RULES).problems[0]?.path,
    ).toBe('inputs[0].content');
  });

  it('refuses unsupported backend_parameters when strict, naming them', () => {
    const body = {
      ...valid,
      resources: {
        backend_parameters: { partition: 'a', gpu_type: 'x', zone: 'y' },
        backend_parameters_strict: true,
      },
    };
    expect(checkTaskRules(body, RULES).problems).toEqual([
      {
        path: 'resources.backend_parameters',
        message: 'unsupported keys gpu_type, zone (supported: partition, account)',
      },
    ]);
  });

  it('ignores unsupported backend_parameters when not strict and says which', () => {
    const body = { ...valid, resources: { backend_parameters: { gpu_type: 'x' } } };
    expect(checkTaskRules(body, RULES)).toEqual({ problems: [], ignoredBackendParameters: ['gpu_type'] });
  });
});

import { ValidationError, type FieldProblem } from '../errors.js';

/**
 * Tolerant input: what real clients send is made into what the spec says, before validation.
 * - the task is rebuilt from the spec's own fields only, object type by object type: unknown fields
 *   are ignored (as the spec says), and so are the read-only ones a client echoes back (id, state,
 *   logs, creation_time); only own properties are read, never inherited ones;
 * - JSON `null` is dropped wherever it stands for a field or a list item (Pulsar, Cromwell send it
 *   for absent optional fields);
 * - camelCase field names from Funnel's Go client are read as their snake_case names (never inside
 *   user maps: tags, env and backend_parameters keep their keys as sent);
 * - a missing input/output `type` becomes FILE;
 * - a fractional `cpu_cores` is rounded up (clients send 0.5 or 1.5; Slurm counts whole CPUs).
 *
 * A field of the wrong type is passed on as it is, for the schema check to name it. Three things are
 * refused here, because nothing later could handle them safely: nesting deeper than MAX_BODY_DEPTH
 * (the body is measured without recursion, before any recursive walk), numbers JSON.parse made
 * infinite (`1e999`, which would be stored as null), and user-map keys that are special in
 * JavaScript objects (`__proto__` would replace the map's prototype on assignment).
 */

/** A real task nests five levels (task, executors, executor, env, value); this is far beyond. */
export const MAX_BODY_DEPTH = 64;

/** User-map keys refused with a 400: each one means something to a JavaScript object. */
const RESERVED_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** What a field holds: a plain value (or a list of them), a user map, one object, or a list of objects. */
type Field = 'value' | 'map' | { readonly object: Shape } | { readonly list: Shape };

interface Shape {
  /** Snake_case field names, as the spec spells them; each is also read under its camelCase name. */
  readonly fields: Readonly<Record<string, Field>>;
}

const INPUT: Shape = {
  fields: {
    name: 'value',
    description: 'value',
    url: 'value',
    path: 'value',
    type: 'value',
    content: 'value',
    streamable: 'value',
  },
};

const OUTPUT: Shape = {
  fields: {
    name: 'value',
    description: 'value',
    url: 'value',
    path: 'value',
    path_prefix: 'value',
    type: 'value',
  },
};

const EXECUTOR: Shape = {
  fields: {
    image: 'value',
    command: 'value',
    workdir: 'value',
    stdin: 'value',
    stdout: 'value',
    stderr: 'value',
    env: 'map',
    ignore_error: 'value',
  },
};

const RESOURCES: Shape = {
  fields: {
    cpu_cores: 'value',
    preemptible: 'value',
    ram_gb: 'value',
    disk_gb: 'value',
    zones: 'value',
    backend_parameters: 'map',
    backend_parameters_strict: 'value',
  },
};

const TASK: Shape = {
  fields: {
    name: 'value',
    description: 'value',
    inputs: { list: INPUT },
    outputs: { list: OUTPUT },
    resources: { object: RESOURCES },
    executors: { list: EXECUTOR },
    volumes: 'value',
    tags: 'map',
  },
};

/** The writable fields of each request object type, by its schema name in spec/tes.openapi.yaml. */
export const REQUEST_FIELDS: Readonly<Record<string, readonly string[]>> = {
  tesTask: Object.keys(TASK.fields),
  tesExecutor: Object.keys(EXECUTOR.fields),
  tesInput: Object.keys(INPUT.fields),
  tesOutput: Object.keys(OUTPUT.fields),
  tesResources: Object.keys(RESOURCES.fields),
};

/**
 * The body of a CreateTask request as the spec describes it. Throws a ValidationError for what no
 * later check can handle (see the module comment); everything else is left for the schema and
 * checkTaskRules to judge.
 */
export function normalizeTaskBody(body: unknown): unknown {
  if (nestingExceeds(body, MAX_BODY_DEPTH)) {
    throw new ValidationError([{ path: 'body', message: `nested deeper than ${MAX_BODY_DEPTH} levels` }]);
  }
  if (!isRecord(body)) return body;
  const problems: FieldProblem[] = [];
  const task = buildObject(body, TASK, '', problems);
  if (problems.length > 0) throw new ValidationError(problems);
  const resources = task.resources;
  if (isRecord(resources) && typeof resources.cpu_cores === 'number' && resources.cpu_cores > 0) {
    resources.cpu_cores = Math.ceil(resources.cpu_cores);
  }
  for (const listName of ['inputs', 'outputs']) {
    const list = task[listName];
    if (!Array.isArray(list)) continue;
    for (const item of list) {
      if (isRecord(item) && item.type === undefined) item.type = 'FILE';
    }
  }
  return task;
}

/** True when arrays and objects nest more than `limit` deep. Iterative: the depth is the attacker's. */
export function nestingExceeds(value: unknown, limit: number): boolean {
  const stack: Array<{ value: object; depth: number }> = [];
  if (typeof value === 'object' && value !== null) stack.push({ value, depth: 1 });
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    if (top.depth > limit) return true;
    const children: unknown[] = Array.isArray(top.value) ? top.value : Object.values(top.value);
    for (const child of children) {
      if (typeof child === 'object' && child !== null) stack.push({ value: child, depth: top.depth + 1 });
    }
  }
  return false;
}

/**
 * The same measure on JSON text, before it is parsed: JSON.parse takes seconds over megabytes of
 * `[[[[`, and no task needs that. Brackets inside strings do not count; multi-byte UTF-8 never
 * holds an ASCII byte, so the raw bytes can be scanned as they are.
 */
export function jsonTextNestingExceeds(text: Uint8Array, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      // After a backslash the next byte is escaped, even a quote.
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

function buildObject(
  source: Record<string, unknown>,
  shape: Shape,
  at: string,
  problems: FieldProblem[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(shape.fields)) {
    const value = readField(source, name);
    if (value === undefined) continue;
    out[name] = buildField(value, field, `${at}${name}`, problems);
  }
  return out;
}

/** The spec's spelling wins over the camelCase one when a client sends both; null counts as absent. */
function readField(source: Record<string, unknown>, name: string): unknown {
  if (Object.hasOwn(source, name) && source[name] !== null) return source[name];
  const camel = toCamelCase(name);
  if (camel !== name && Object.hasOwn(source, camel) && source[camel] !== null) return source[camel];
  return undefined;
}

function buildField(value: unknown, field: Field, path: string, problems: FieldProblem[]): unknown {
  if (field === 'value') {
    const items = Array.isArray(value) ? value.filter((v) => v !== null) : value;
    if (typeof value === 'number' && !Number.isFinite(value)) {
      problems.push({ path, message: 'must be a finite number' });
    }
    return items;
  }
  if (field === 'map') return isRecord(value) ? buildMap(value, path, problems) : value;
  if ('object' in field)
    return isRecord(value) ? buildObject(value, field.object, `${path}.`, problems) : value;
  if (!Array.isArray(value)) return value;
  return value
    .filter((item) => item !== null)
    .map((item: unknown, i) =>
      isRecord(item) ? buildObject(item, field.list, `${path}[${i}].`, problems) : item,
    );
}

/** A user map: its own keys as sent (nulls dropped), into a fresh object; values are the schema's to check. */
function buildMap(
  source: Record<string, unknown>,
  path: string,
  problems: FieldProblem[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(source)) {
    const value = source[key];
    if (value === null) continue;
    if (RESERVED_KEYS.has(key)) {
      problems.push({ path: `${path}.${key}`, message: 'is a reserved name and cannot be used as a key' });
      continue;
    }
    out[key] = value;
  }
  return out;
}

function toCamelCase(name: string): string {
  return name.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

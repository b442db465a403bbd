import { readFileSync } from 'node:fs';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { parse as parseYaml } from 'yaml';
import type { RawRequest } from './raw-http.js';

/**
 * Requests for the HTTP fuzzer, generated from spec/tes.openapi.yaml: valid tasks built from the
 * request schemas, then mutated (wrong types, extreme numbers, deep nesting, unknown and prototype
 * keys, NUL bytes, long strings, truncated JSON), sent to odd paths with odd methods, headers,
 * encodings and query strings. Everything comes from a seeded generator: request `i` of seed `s`
 * is the same on every run, so a failure names both and can be replayed alone.
 */

// ---------------------------------------------------------------------------------------------
// The random source

/** mulberry32: small, fast and good enough to pick test cases; not for anything secret. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** The generator of request `index` of run `seed`. */
  static forRequest(seed: number, index: number): Rng {
    return new Rng(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35));
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  word(min = 1, max = 10): string {
    const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789_-';
    let out = '';
    const length = min + this.int(max - min + 1);
    for (let i = 0; i < length; i++) out += alphabet[this.int(alphabet.length)];
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Valid tasks from the spec's schemas

interface Schema {
  type?: string;
  enum?: unknown[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: boolean | Schema;
  readOnly?: boolean;
  $ref?: string;
  minimum?: number;
  maximum?: number;
  format?: string;
}

export interface Spec {
  components: { schemas: Record<string, Schema> };
  paths: Record<string, Record<string, unknown>>;
}

export function loadSpec(path: string): Spec {
  return parseYaml(readFileSync(path, 'utf8')) as Spec;
}

/**
 * Values the schema alone cannot make acceptable: the gateway's own rules want absolute paths,
 * variable names, images of allowed schemes, a url or a content on each input. Keyed by the field
 * name; everything else is generated from its schema.
 */
const IMAGES = ['alpine:3.20', 'docker://ubuntu:22.04', 'quay.io/biocontainers/samtools:1.19', 'busybox'];
const BACKEND_KEYS = ['partition', 'account', 'qos', 'time_limit', 'constraint'];

function absolutePath(rng: Rng): string {
  const depth = 1 + rng.int(3);
  let path = '';
  for (let i = 0; i < depth; i++) path += `/${rng.word(1, 8)}`;
  return path;
}

export class TaskGenerator {
  constructor(private readonly spec: Spec) {}

  /** A CreateTask body the gateway accepts. */
  task(rng: Rng): Record<string, unknown> {
    const task = this.object(rng, 'tesTask') as Record<string, unknown>;
    // The rules of the gateway beyond the schema: one executor or more; an input has url or
    // content (not both); an output's path_prefix is a prefix of its path.
    if (!Array.isArray(task.executors) || task.executors.length === 0) {
      task.executors = [this.object(rng, 'tesExecutor')];
    }
    for (const input of (task.inputs as Array<Record<string, unknown>> | undefined) ?? []) {
      if (rng.chance(0.3)) {
        delete input.url;
        input.content = rng.word(0, 40);
        input.type = 'FILE';
      } else {
        delete input.content;
        input.url = `file:///shared/${rng.word()}`;
      }
    }
    for (const output of (task.outputs as Array<Record<string, unknown>> | undefined) ?? []) {
      if (output.path_prefix !== undefined) output.path_prefix = String(output.path).slice(0, 1);
    }
    const resources = task.resources as Record<string, unknown> | undefined;
    if (resources) {
      delete resources.zones;
      if (resources.backend_parameters_strict === true) delete resources.backend_parameters;
    }
    return task;
  }

  private object(rng: Rng, name: string): unknown {
    return this.value(rng, { $ref: `#/components/schemas/${name}` }, name, 0);
  }

  private resolve(schema: Schema): Schema {
    if (!schema.$ref) return schema;
    const name = schema.$ref.split('/').pop()!;
    const target = this.spec.components.schemas[name];
    if (!target) throw new Error(`the spec has no schema ${name}`);
    return target;
  }

  private value(rng: Rng, raw: Schema, field: string, depth: number): unknown {
    const schema = this.resolve(raw);
    const hinted = hint(rng, field);
    if (hinted !== undefined) return hinted;
    if (schema.enum) return rng.pick(schema.enum.filter((v) => v !== ''));
    switch (schema.type ?? '') {
      case 'object': {
        const out: Record<string, unknown> = {};
        for (const [key, sub] of Object.entries(schema.properties ?? {})) {
          if (this.resolve(sub).readOnly || sub.readOnly) continue;
          const required = schema.required?.includes(key) ?? false;
          if (required || rng.chance(0.5)) out[key] = this.value(rng, sub, key, depth + 1);
        }
        if (typeof schema.additionalProperties === 'object' && !schema.properties) {
          const count = rng.int(4);
          for (let i = 0; i < count; i++) {
            const key = mapKey(rng, field);
            out[key] =
              key === 'time_limit' && field === 'backend_parameters'
                ? `${1 + rng.int(48)}:00:00`
                : this.value(rng, schema.additionalProperties, `${field}[]`, depth + 1);
          }
        }
        return out;
      }
      case 'array': {
        const count = (depth <= 1 ? 1 : 0) + rng.int(3);
        return Array.from({ length: count }, () =>
          this.value(rng, schema.items ?? {}, `${field}[]`, depth + 1),
        );
      }
      case 'string':
        return rng.word(0, 12);
      case 'integer':
        return 1 + rng.int(Math.min(schema.maximum ?? 64, 64));
      case 'number':
        return Math.round((0.1 + rng.next() * 16) * 100) / 100;
      case 'boolean':
        return rng.chance(0.5);
      default:
        return rng.word();
    }
  }
}

function hint(rng: Rng, field: string): unknown {
  switch (field) {
    case 'image':
      return rng.pick(IMAGES);
    case 'path':
    case 'workdir':
    case 'stdin':
    case 'stdout':
    case 'stderr':
    case 'volumes[]':
      return absolutePath(rng);
    case 'url':
      return `file:///shared/${rng.word()}`;
    case 'command':
      return ['sh', '-c', `echo ${rng.word()}`];
    case 'backend_parameters_strict':
      return false;
    default:
      return undefined;
  }
}

function mapKey(rng: Rng, field: string): string {
  if (field === 'env') return `V_${rng.word(1, 6).replace(/-/g, '_').toUpperCase()}`;
  if (field === 'backend_parameters') return rng.pick(BACKEND_KEYS);
  return rng.word(1, 16);
}

// ---------------------------------------------------------------------------------------------
// Mutations

/**
 * Text JSON.stringify cannot write (`1e999`, `NaN`, nesting deeper than its own recursion allows)
 * goes into the task as a marker string, replaced by the text after stringifying.
 */
class RawTexts {
  private readonly texts: string[] = [];

  marker(text: string): string {
    this.texts.push(text);
    return `\u0001raw:${this.texts.length - 1}`;
  }

  substitute(json: string): string {
    return json.replace(/"\\u0001raw:(\d+)"/g, (_m, i: string) => this.texts[Number(i)]!);
  }
}

const EXTREME_NUMBERS = [
  '1e999',
  '-1e999',
  '1e308',
  '-0',
  '0',
  '-1',
  '0.5',
  '2147483648',
  '-2147483649',
  '9007199254740993',
  '1e-400',
  'NaN',
  'Infinity',
  '-Infinity',
];

const PROTOTYPE_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'valueOf', 'hasOwnProperty'];

type Json = unknown;

/** Every container (object or array) in a value, with nothing deeper than a few levels. */
function containers(
  value: Json,
  out: Array<Record<string, unknown> | unknown[]> = [],
  depth = 0,
): typeof out {
  if (depth > 6 || typeof value !== 'object' || value === null) return out;
  out.push(value as Record<string, unknown> | unknown[]);
  for (const child of Array.isArray(value) ? value : Object.values(value)) containers(child, out, depth + 1);
  return out;
}

function setAt(container: Record<string, unknown> | unknown[], key: string, value: unknown): void {
  // defineProperty, so that `__proto__` becomes an own key that JSON.stringify writes out.
  Object.defineProperty(container, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Puts `value` somewhere in `task`: under a new key, or instead of an existing member. */
function plant(rng: Rng, task: Json, value: unknown, key?: string): void {
  const target = rng.pick(containers(task));
  if (Array.isArray(target)) {
    if (target.length > 0 && rng.chance(0.5)) target[rng.int(target.length)] = value;
    else target.push(value);
    return;
  }
  const keys = Object.keys(target);
  setAt(target, key ?? (keys.length > 0 && rng.chance(0.6) ? rng.pick(keys) : rng.word()), value);
}

function nestedText(levels: number, asObjects: boolean): string {
  return asObjects
    ? `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`
    : `${'['.repeat(levels)}1${']'.repeat(levels)}`;
}

type Mutation = (rng: Rng, task: Json, raw: RawTexts) => void;

const MUTATIONS: readonly Mutation[] = [
  // A wrong type anywhere.
  (rng, task) => plant(rng, task, rng.pick([0, -3, 'x', true, false, null, [], {}, ['x'], { a: 1 }])),
  // An extreme number (written raw: JSON.stringify cannot write 1e999 or NaN).
  (rng, task, raw) => plant(rng, task, raw.marker(rng.pick(EXTREME_NUMBERS))),
  (rng, task, raw) => {
    const resources = {
      cpu_cores: raw.marker(rng.pick(EXTREME_NUMBERS)),
      ram_gb: raw.marker(rng.pick(EXTREME_NUMBERS)),
    };
    setAt(task as Record<string, unknown>, rng.pick(['resources', 'resources', 'Resources']), resources);
  },
  // Deep nesting, around the limit or far beyond it.
  (rng, task, raw) =>
    plant(
      rng,
      task,
      raw.marker(nestedText(rng.pick([60, 63, 64, 65, 70, 1000, 10_000, 100_000]), rng.chance(0.5))),
    ),
  // Unknown and prototype keys, at the top or anywhere, and in user maps.
  (rng, task) => plant(rng, task, rng.pick([1, 'x', { name: 'p' }, null]), rng.pick(PROTOTYPE_KEYS)),
  (rng, task) =>
    setAt(task as Record<string, unknown>, rng.pick(PROTOTYPE_KEYS), { executors: [], name: 'x' }),
  (rng, task) =>
    plant(rng, task, rng.word(), rng.pick(['zzz', 'extra', 'cpuCores', 'ignoreError', 'Name', 'id'])),
  (rng, task) => {
    const map: Record<string, unknown> = {};
    setAt(map, rng.pick(PROTOTYPE_KEYS), rng.pick(['x', { a: 'b' }, 1]));
    const t = task as Record<string, unknown>;
    // An earlier mutation may have put anything in place of the executors.
    const first: unknown = Array.isArray(t.executors) ? t.executors[0] : undefined;
    const where = rng.int(3);
    if (where === 0) t.tags = map;
    else if (where === 1 && typeof first === 'object' && first !== null && !Array.isArray(first)) {
      (first as Record<string, unknown>).env = map;
    } else t.resources = { backend_parameters: map };
  },
  // NUL and other control bytes, and non-BMP text, inside strings.
  (rng, task) =>
    plant(
      rng,
      task,
      rng.pick(['a\u0000b', '\u0000', '/x\u0000/y', '\u0007\u001b[2J', '\ud83d\ude00', '\ud800']),
    ),
  // Very long strings and keys.
  (rng, task) => plant(rng, task, 'x'.repeat(rng.pick([10_000, 200_000, 1_000_000]))),
  (rng, task) => plant(rng, task, 'v', 'k'.repeat(rng.pick([1000, 100_000]))),
  // Many items.
  (rng, task) =>
    plant(
      rng,
      task,
      Array.from({ length: rng.pick([1000, 20_000]) }, (_, i) => `/v/${i}`),
    ),
];

/** A valid task with one to three mutations, as the JSON text to send. */
export function mutatedTaskText(rng: Rng, generator: TaskGenerator): string {
  const task = generator.task(rng);
  const raw = new RawTexts();
  const count = 1 + rng.int(3);
  for (let i = 0; i < count; i++) rng.pick(MUTATIONS)(rng, task, raw);
  return raw.substitute(JSON.stringify(task));
}

// ---------------------------------------------------------------------------------------------
// Whole requests

const BASES = ['/ga4gh/tes/v1', '/v1'];

const ODD_PATHS = [
  '/tasks/#:cancel',
  '/tasks#',
  '/tasks/?:cancel',
  '/tasks/%23:cancel',
  '/tasks/x%3Acancel',
  '/tasks/x%3acancel',
  '/tasks/',
  '//tasks',
  '/tasks;x',
  '/tasks/..%2Ftasks',
  '/tasks/../tasks',
  '/tasks%2F',
  '/tasks/:cancel',
  '/tasks/x:cancel/',
  '/tasks/x:cancel:cancel',
  '/TASKS',
  '/Tasks/x:CANCEL',
  '/tasks/%00',
  '/tasks/%zz',
  '/tasks/%',
  '/tasks/\\x:cancel',
  '/tasks\\',
  '/tasks/service-info',
  '/tasks/service-info:cancel',
  '/service-info/',
  '/service-info;a=b',
  '/tasks/%F0%9F%98%80',
  '/tasks/\u00e9',
  '/tasks/\u00a0:cancel',
  '/tasks\u00a0',
  '/tasks/x?view=FULL#frag',
  '/nope',
  '',
];

const METHODS = ['GET', 'GET', 'POST', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE'];
const ODD_METHODS = ['get', 'FOO', 'CONNECT', 'PROPFIND', 'M-SEARCH', 'G ET'];

const CONTENT_TYPES = [
  'application/json',
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset="UTF-8"',
  'application/json; charset=utf-16',
  'application/json; charset=latin1',
  'application/json; charset=bogus',
  'application/vnd.api+json',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=xyz',
  'application/json, text/plain',
  '',
];

const QUERY_PARTS = [
  () => 'view=FULL',
  () => 'view=BASIC',
  () => 'view=',
  () => 'view=full',
  () => 'view=FULL&view=BASIC',
  (rng: Rng) =>
    `page_size=${rng.pick(['1', '2047', '2048', '0', '-1', '2.5', '1e999', 'Infinity', 'NaN', '1e3', '0x10', '%205', '', '99999999999999999999', '007'])}`,
  () => 'page_size=1&page_size=2',
  (rng: Rng) => `page_token=${rng.pick(['', 'x', 'AAAA', '%00', '01m8p2hgx46tw2pkasx2c75rxm'])}`,
  (rng: Rng) => `state=${rng.pick(['QUEUED', 'COMPLETE', 'bogus', '', 'queued'])}`,
  (rng: Rng) => `name_prefix=${rng.pick(['', 'a', 'wf.task+(1)', '%00', 'x'.repeat(5000)])}`,
  (rng: Rng) => `tag_key=${rng.word()}&tag_value=${rng.word(0, 4)}`,
  () => 'tag_value=x',
  () => 'tag_key[]=a&tag_key[]=b',
  () => 'tag_key[a]=b',
  () => 'apikey=secret&project=p',
  () => '__proto__[x]=1',
  () => '__proto__=x',
  () => 'constructor=x&toString=y',
  () => 'hasOwnProperty=1',
  () => 'a=%zz',
  () => '&&==&',
  () => 'x'.repeat(20_000),
];

function query(rng: Rng): string {
  if (rng.chance(0.5)) return '';
  const count = 1 + rng.int(3);
  return `?${Array.from({ length: count }, () => rng.pick(QUERY_PARTS)(rng)).join('&')}`;
}

export interface FuzzCase {
  /** One line saying what was sent, for failure messages. */
  description: string;
  request: RawRequest;
}

/**
 * Request `index` of run `seed`. `taskIds` are existing tasks (so that reads and cancels also hit
 * real records); they must be the same on every run for the case to be reproducible.
 */
export function fuzzCase(
  seed: number,
  index: number,
  generator: TaskGenerator,
  taskIds: readonly string[],
): FuzzCase {
  const rng = Rng.forRequest(seed, index);
  const base = rng.pick(BASES);
  const id = taskIds.length > 0 && rng.chance(0.7) ? rng.pick(taskIds) : rng.word(1, 30);
  const kind = rng.int(10);
  let method: string;
  let path: string;
  if (kind <= 3) {
    method = 'POST';
    path = `${base}/tasks`;
  } else if (kind === 4) {
    method = 'POST';
    path = `${base}/tasks/${id}:cancel`;
  } else if (kind === 5) {
    method = 'GET';
    path = `${base}/tasks/${id}`;
  } else if (kind === 6) {
    method = 'GET';
    path = rng.pick([`${base}/tasks`, `${base}/service-info`, `${base}/tasks/service-info`]);
  } else if (kind === 7) {
    method = rng.pick(METHODS);
    path = `${base}${rng.pick(ODD_PATHS)}`;
  } else if (kind === 8) {
    method = rng.pick([...METHODS, ...ODD_METHODS]);
    path = rng.pick([
      `${base}/tasks`,
      `${base}/tasks/${id}`,
      `${base}/tasks/${id}:cancel`,
      `${base}/service-info`,
    ]);
  } else {
    method = rng.pick(['GET', 'POST']);
    path = rng.pick([
      '*',
      'http://example.org/ga4gh/tes/v1/tasks',
      '/',
      `${base}/${'a'.repeat(rng.pick([9000, 17_000, 100_000]))}`,
    ]);
  }
  const target = `${path}${query(rng)}`;

  const headers: Array<[string, string]> = [];
  let body: Buffer | undefined;
  if (method === 'POST' || method === 'PUT' || method === 'PATCH' || rng.chance(0.1)) {
    const text = bodyText(rng, generator, path);
    body = Buffer.from(text, 'utf8');
    const contentType = rng.chance(0.8) ? 'application/json' : rng.pick(CONTENT_TYPES);
    if (contentType !== '') headers.push(['Content-Type', contentType]);
    body = encodeBody(rng, body, headers);
  }
  if (rng.chance(0.1)) headers.push(...oddHeaders(rng));
  const summary = body
    ? ` (${body.length} body bytes: ${JSON.stringify(body.subarray(0, 120).toString('latin1'))})`
    : '';
  return {
    description: `seed ${seed}, request #${index}: ${method} ${target.slice(0, 200)}${target.length > 200 ? '…' : ''} ${JSON.stringify(headers.map(([k, v]) => `${k}: ${v.slice(0, 60)}`))}${summary}`,
    request: { method, target, headers, ...(body ? { body } : {}) },
  };
}

function bodyText(rng: Rng, generator: TaskGenerator, path: string): string {
  const roll = rng.int(10);
  if (path.endsWith(':cancel') && roll < 5) return rng.pick(['{}', 'null', '', '[]', '"x"', '{"a":']);
  if (roll <= 2) return JSON.stringify(generator.task(rng));
  if (roll <= 7) return mutatedTaskText(rng, generator);
  if (roll === 8) {
    // Truncated JSON.
    const text = JSON.stringify(generator.task(rng));
    return text.slice(0, rng.int(text.length));
  }
  return rng.pick([
    '',
    'null',
    '0',
    '"task"',
    '[]',
    '{',
    '}',
    '{"executors":[{"image":"a","command":["b"]}]}garbage',
    '\ufeff{}',
    'nul\u0000l',
  ]);
}

/** Content-Encoding as declared, with the body encoded that way or (to lie) not. */
function encodeBody(rng: Rng, body: Buffer, headers: Array<[string, string]>): Buffer {
  if (rng.chance(0.85)) return body;
  const encoding = rng.pick([
    'gzip',
    'deflate',
    'br',
    'identity',
    'GZIP',
    'zstd',
    'compress',
    'gzip, br',
    'x-gzip',
  ]);
  headers.push(['Content-Encoding', encoding]);
  if (rng.chance(0.4)) return body;
  switch (encoding.toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return gzipSync(body);
    case 'deflate':
      return deflateSync(body);
    case 'br':
      return brotliCompressSync(body);
    default:
      return body;
  }
}

function oddHeaders(rng: Rng): Array<[string, string]> {
  return rng.pick<Array<[string, string]>>([
    [['X-Big', 'a'.repeat(20_000)]],
    [['X-Request-Id', 'x'.repeat(500)]],
    [['X-Request-Id', '../../etc/passwd']],
    [['Expect', '100-continue']],
    [['Accept', 'text/html']],
    [['Accept-Encoding', 'br, gzip']],
    [['Host', '']],
    [['Content-Length', 'abc']],
    [['Transfer-Encoding', 'chunked']],
    [
      ['Connection', 'keep-alive, Upgrade'],
      ['Upgrade', 'websocket'],
    ],
    [['X-Forwarded-For', '127.0.0.1']],
    Array.from({ length: 300 }, (_, i): [string, string] => [`X-H${i}`, 'v']),
  ]);
}

import { posix } from 'node:path';
import type { FieldProblem } from '../errors.js';
import { checkImage, type ImagePolicy } from './image-rules.js';
import { checkSlurmParameter } from './backend-parameters.js';
import { isRecord } from './normalize.js';
import { OWNER_TAG } from './types.js';

/**
 * The rules the OpenAPI schema cannot express. It runs on the normalized body and is defensive about
 * shapes, because it also runs when the schema check already failed: the client then gets every
 * problem in one answer. Its work is linear in the size of the body: each string is measured once,
 * a list over its limit is reported once instead of item by item, and the walk over the body keeps
 * its own stack (a deeply nested body cannot exhaust the call stack).
 */
export interface TaskRules {
  maxContentBytes: number;
  /** backend_parameters keys this gateway understands. */
  supportedBackendParameters: readonly string[];
  /** Configuration `limits`: the shape of one task. */
  limits: TaskLimits;
  /** Which images tasks may use. */
  images: ImagePolicy;
  /** resources.zones[0] becomes the Slurm partition when no partition is asked for. */
  zonesArePartitions: boolean;
}

export interface TaskLimits {
  maxExecutors: number;
  maxInputs: number;
  maxOutputs: number;
  maxVolumes: number;
  maxTags: number;
  maxEnvPerExecutor: number;
  maxCommandArgs: number;
  maxBackendParameters: number;
  maxZones: number;
  maxStringBytes: number;
}

export interface TaskCheck {
  problems: FieldProblem[];
  /** Unsupported backend_parameters keys that were ignored (not strict): noted in system logs. */
  ignoredBackendParameters: string[];
}

/** The parts of the configuration (config/schema.ts) the rules come from. */
export interface RulesConfig {
  server: { maxContentBytes: number };
  limits: TaskLimits;
  container: { imageRoots: readonly string[]; allowedImageSchemes: readonly string[] };
  backend: string;
  slurm: { zonePartitions: boolean };
}

/** The rules as configured, for a backend that understands `backendParameters`. */
export function taskRulesFor(config: RulesConfig, backendParameters: readonly string[]): TaskRules {
  return {
    maxContentBytes: config.server.maxContentBytes,
    supportedBackendParameters: backendParameters,
    limits: config.limits,
    images: { imageRoots: config.container.imageRoots, allowedSchemes: config.container.allowedImageSchemes },
    zonesArePartitions: config.backend === 'slurm' && config.slurm.zonePartitions,
  };
}

/** Beyond this many, problems are counted, not listed: the answer to a hostile body stays small. */
const MAX_LISTED_PROBLEMS = 100;

/** The runtime mounts its own /proc, /dev and /sys; a bind at or over them (or at /) is never a task's. */
const RUNTIME_PATHS = ['/proc', '/dev', '/sys'];

type Add = (path: string, message: string) => void;

export function checkTaskRules(body: unknown, rules: TaskRules): TaskCheck {
  const problems: FieldProblem[] = [];
  const ignoredBackendParameters: string[] = [];
  let unlisted = 0;
  const add: Add = (path, message) => {
    if (problems.length < MAX_LISTED_PROBLEMS) problems.push({ path, message });
    else unlisted++;
  };
  const finish = (): TaskCheck => {
    if (unlisted > 0) problems.push({ path: 'body', message: `has ${unlisted} more problems, not listed` });
    return { problems, ignoredBackendParameters };
  };
  if (!isRecord(body)) {
    add('body', 'must be a JSON object describing a task');
    return finish();
  }
  const { limits } = rules;
  // Lists and maps over their limit: reported once, and neither their items nor their strings are
  // looked at one by one.
  const oversized = new Set<unknown>();
  const count = (value: unknown, path: string, max: number, key: keyof TaskLimits, what: string): void => {
    const n = Array.isArray(value) ? value.length : isRecord(value) ? Object.keys(value).length : 0;
    if (n > max) {
      add(path, `has ${n} ${what}; at most ${max} are accepted (limits.${key})`);
      oversized.add(value);
    }
  };
  count(body.executors, 'executors', limits.maxExecutors, 'maxExecutors', 'executors');
  count(body.inputs, 'inputs', limits.maxInputs, 'maxInputs', 'inputs');
  count(body.outputs, 'outputs', limits.maxOutputs, 'maxOutputs', 'outputs');
  count(body.volumes, 'volumes', limits.maxVolumes, 'maxVolumes', 'volumes');
  count(body.tags, 'tags', limits.maxTags, 'maxTags', 'tags');
  if (isRecord(body.tags) && Object.hasOwn(body.tags, OWNER_TAG)) {
    add(`tags.${OWNER_TAG}`, "is the gateway's own tag, set to the task's owner; choose another key");
  }
  const resources = isRecord(body.resources) ? body.resources : undefined;
  count(
    resources?.backend_parameters,
    'resources.backend_parameters',
    limits.maxBackendParameters,
    'maxBackendParameters',
    'entries',
  );
  count(resources?.zones, 'resources.zones', limits.maxZones, 'maxZones', 'zones');

  const executors = body.executors;
  if (Array.isArray(executors)) {
    if (executors.length === 0) add('executors', 'must list at least one executor');
    if (!oversized.has(executors)) {
      executors.forEach((ex, i) => {
        const at = `executors[${i}]`;
        if (!isRecord(ex)) return;
        count(ex.command, `${at}.command`, limits.maxCommandArgs, 'maxCommandArgs', 'arguments');
        count(ex.env, `${at}.env`, limits.maxEnvPerExecutor, 'maxEnvPerExecutor', 'variables');
        if (typeof ex.image === 'string') {
          if (ex.image.trim() === '') add(`${at}.image`, 'must not be empty');
          else {
            const problem = checkImage(ex.image, rules.images);
            if (problem) add(`${at}.image`, problem);
          }
        }
        if (Array.isArray(ex.command) && ex.command.length === 0) add(`${at}.command`, 'must not be empty');
        for (const field of ['workdir', 'stdin', 'stdout', 'stderr'] as const) {
          checkContainerPath(ex[field], `${at}.${field}`, add);
        }
        if (isRecord(ex.env) && !oversized.has(ex.env)) checkEnvNames(ex.env, `${at}.env`, add);
      });
    }
  }

  const inputs = body.inputs;
  if (Array.isArray(inputs) && !oversized.has(inputs)) {
    inputs.forEach((input, i) => {
      const at = `inputs[${i}]`;
      if (!isRecord(input)) return;
      checkContainerPath(input.path, `${at}.path`, add);
      const hasUrl = typeof input.url === 'string' && input.url !== '';
      const hasContent = typeof input.content === 'string';
      if (hasUrl && hasContent) add(at, 'must set either url or content, not both');
      if (!hasUrl && !hasContent) add(at, 'must set url or content');
      if (hasContent && input.type === 'DIRECTORY')
        add(`${at}.content`, 'cannot be used with type DIRECTORY');
      if (hasContent) {
        const bytes = Buffer.byteLength(input.content as string, 'utf8');
        if (bytes > rules.maxContentBytes) {
          add(
            `${at}.content`,
            `is ${bytes} bytes; at most ${rules.maxContentBytes} are accepted (use a url)`,
          );
        }
      }
    });
  }

  const outputs = body.outputs;
  if (Array.isArray(outputs) && !oversized.has(outputs)) {
    outputs.forEach((output, i) => {
      const at = `outputs[${i}]`;
      if (!isRecord(output)) return;
      checkContainerPath(output.path, `${at}.path`, add);
      if (typeof output.url === 'string' && output.url === '') add(`${at}.url`, 'must not be empty');
      if (typeof output.path_prefix === 'string' && typeof output.path === 'string') {
        if (!output.path.startsWith(output.path_prefix)) add(`${at}.path_prefix`, 'must be a prefix of path');
      }
    });
  }

  if (Array.isArray(body.volumes) && !oversized.has(body.volumes)) {
    body.volumes.forEach((v, i) => checkContainerPath(v, `volumes[${i}]`, add));
  }

  if (resources) {
    if (typeof resources.cpu_cores === 'number' && resources.cpu_cores <= 0) {
      add('resources.cpu_cores', 'must be greater than 0');
    }
    if (typeof resources.ram_gb === 'number' && resources.ram_gb <= 0)
      add('resources.ram_gb', 'must be greater than 0');
    if (typeof resources.disk_gb === 'number' && resources.disk_gb < 0)
      add('resources.disk_gb', 'must not be negative');
    const bp = resources.backend_parameters;
    if (isRecord(bp) && !oversized.has(bp)) {
      const unsupported: string[] = [];
      for (const [key, value] of Object.entries(bp)) {
        if (!rules.supportedBackendParameters.includes(key)) {
          unsupported.push(key);
          continue;
        }
        const problem = typeof value === 'string' ? checkSlurmParameter(key, value) : undefined;
        if (problem) add(`resources.backend_parameters.${key}`, problem);
      }
      if (unsupported.length > 0) {
        if (resources.backend_parameters_strict === true) {
          add(
            'resources.backend_parameters',
            `unsupported key${unsupported.length > 1 ? 's' : ''} ${unsupported.map(keyForPath).join(', ')} ` +
              `(supported: ${rules.supportedBackendParameters.join(', ')})`,
          );
        } else {
          ignoredBackendParameters.push(...unsupported.map(keyForPath));
        }
      }
    }
    const zone: unknown = Array.isArray(resources.zones) ? (resources.zones as unknown[])[0] : undefined;
    const partitionAsked = isRecord(bp) && typeof bp.partition === 'string' && bp.partition !== '';
    if (rules.zonesArePartitions && typeof zone === 'string' && !partitionAsked) {
      const problem = checkSlurmParameter('partition', zone);
      if (problem) add('resources.zones[0]', `names the Slurm partition here, so it ${problem}`);
    }
  }

  checkStrings(body, limits.maxStringBytes, oversized, add);
  return finish();
}

function checkEnvNames(env: Record<string, unknown>, at: string, add: Add): void {
  for (const name of Object.keys(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      add(
        `${at}.${keyForPath(name)}`,
        'must be a variable name of letters, digits and _, not starting with a digit',
      );
    } else if (name === 'HOME') {
      add(`${at}.HOME`, 'cannot be set: the container runtime manages HOME');
    }
  }
}

function checkContainerPath(value: unknown, path: string, add: Add): void {
  if (typeof value !== 'string') return;
  if (!value.startsWith('/')) {
    add(path, 'must be an absolute path');
    return;
  }
  if (value.split('/').includes('..')) {
    add(path, "must not contain '..'");
    return;
  }
  const normal = posix.normalize(value);
  if (normal === '/') {
    add(path, 'must not be / itself: it would hide the whole container');
    return;
  }
  const runtime = RUNTIME_PATHS.find((r) => normal === r || normal.startsWith(`${r}/`));
  if (runtime) add(path, `must not be at or under ${runtime}: the container runtime provides it`);
}

/**
 * Every string of the body, values and map keys alike: no NUL character (C programs, the job script
 * and Slurm would cut the string there and act on a different one), and at most maxStringBytes of
 * UTF-8. An input's content has its own limit (server.maxContentBytes), checked above.
 */
function checkStrings(
  body: Record<string, unknown>,
  maxBytes: number,
  oversized: ReadonlySet<unknown>,
  add: Add,
): void {
  const tooLong = (s: string): number | undefined => {
    // A UTF-16 unit is 1 to 3 bytes of UTF-8: most strings are decided without counting.
    if (s.length * 3 <= maxBytes) return undefined;
    const bytes = Buffer.byteLength(s, 'utf8');
    return bytes > maxBytes ? bytes : undefined;
  };
  const limitNote = `at most ${maxBytes} are accepted (limits.maxStringBytes)`;
  const stack: Frame[] = [{ value: body, parent: undefined, key: undefined }];
  while (stack.length > 0) {
    const frame = stack.pop()!;
    const value = frame.value;
    if (typeof value === 'string') {
      if (value.includes('\0')) add(pathOf(frame), 'must not contain a NUL character');
      if (!isInputContent(frame)) {
        const bytes = tooLong(value);
        if (bytes !== undefined) add(pathOf(frame), `is ${bytes} bytes; ${limitNote}`);
      }
    } else if (Array.isArray(value)) {
      if (oversized.has(value)) continue;
      for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i], parent: frame, key: i });
    } else if (isRecord(value)) {
      if (oversized.has(value)) continue;
      const keys = Object.keys(value);
      for (let i = keys.length - 1; i >= 0; i--) {
        const key = keys[i]!;
        stack.push({ value: value[key], parent: frame, key });
      }
      for (const key of keys) {
        if (key.includes('\0')) add(pathOf(frame), `has a key with a NUL character (${keyForPath(key)})`);
        const bytes = tooLong(key);
        if (bytes !== undefined) add(pathOf(frame), `has a key of ${bytes} bytes; ${limitNote}`);
      }
    }
  }
}

/** A place in the body; the path is spelled out only for a problem. */
interface Frame {
  value: unknown;
  parent: Frame | undefined;
  key: string | number | undefined;
}

function pathOf(frame: Frame): string {
  const parts: Array<string | number> = [];
  for (let f: Frame | undefined = frame; f && f.key !== undefined; f = f.parent) parts.push(f.key);
  let path = '';
  for (const part of parts.reverse()) {
    if (typeof part === 'number') path += `[${part}]`;
    else path += path === '' ? keyForPath(part) : `.${keyForPath(part)}`;
  }
  return path || 'body';
}

function isInputContent(frame: Frame): boolean {
  const item = frame.parent;
  const list = item?.parent;
  return (
    frame.key === 'content' && typeof item?.key === 'number' && list?.key === 'inputs' && !list.parent?.key
  );
}

/** A map key as it appears in a problem's path: as is when short and printable, else abridged. */
function keyForPath(key: string): string {
  if (key.length <= 64 && !/[\x00-\x1f\x7f]/.test(key)) return key;
  if (key.length <= 32) return JSON.stringify(key);
  return `${JSON.stringify(key.slice(0, 32)).slice(0, -1)}…"`;
}

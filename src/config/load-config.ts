import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { ZodIssue } from 'zod';
import { configSchema, type Config } from './schema.js';
import { ConfigError } from '../errors.js';

/** Environment variables that override the most common settings, and where each one lands. */
const ENV_OVERRIDES: ReadonlyArray<{ name: string; path: string[]; kind: 'string' | 'int' | 'list' }> = [
  { name: 'TES_GATEWAY_PORT', path: ['server', 'port'], kind: 'int' },
  { name: 'TES_GATEWAY_HOST', path: ['server', 'host'], kind: 'string' },
  { name: 'TES_GATEWAY_REDIS_URL', path: ['redis', 'url'], kind: 'string' },
  { name: 'TES_GATEWAY_REDIS_PREFIX', path: ['redis', 'prefix'], kind: 'string' },
  // Redis behind Sentinel, instead of TES_GATEWAY_REDIS_URL: SENTINELS is `host:port,host:port`.
  { name: 'TES_GATEWAY_REDIS_SENTINEL_NAME', path: ['redis', 'sentinel', 'name'], kind: 'string' },
  { name: 'TES_GATEWAY_REDIS_SENTINELS', path: ['redis', 'sentinel', 'sentinels'], kind: 'list' },
  { name: 'TES_GATEWAY_REDIS_PASSWORD', path: ['redis', 'sentinel', 'password'], kind: 'string' },
  {
    name: 'TES_GATEWAY_REDIS_SENTINEL_PASSWORD',
    path: ['redis', 'sentinel', 'sentinelPassword'],
    kind: 'string',
  },
  { name: 'TES_GATEWAY_BACKEND', path: ['backend'], kind: 'string' },
  { name: 'TES_GATEWAY_WORK_ROOT', path: ['workRoot'], kind: 'string' },
  { name: 'TES_GATEWAY_LOG_LEVEL', path: ['log', 'level'], kind: 'string' },
  { name: 'TES_GATEWAY_APPTAINER', path: ['container', 'executable'], kind: 'string' },
  { name: 'TES_GATEWAY_CONTAINER_RUNTIME', path: ['container', 'runtime'], kind: 'string' },
  { name: 'TES_GATEWAY_POLL_INTERVAL_MS', path: ['reconciler', 'pollIntervalMs'], kind: 'int' },
  { name: 'TES_GATEWAY_WORKER_HTTP_PORT', path: ['worker', 'http', 'port'], kind: 'int' },
  { name: 'TES_GATEWAY_WORKER_HTTP_HOST', path: ['worker', 'http', 'host'], kind: 'string' },
  { name: 'TES_GATEWAY_S3_ACCESS_KEY_ID', path: ['storage', 's3', 'accessKeyId'], kind: 'string' },
  { name: 'TES_GATEWAY_S3_SECRET_ACCESS_KEY', path: ['storage', 's3', 'secretAccessKey'], kind: 'string' },
];

export interface LoadConfigOptions {
  /** YAML file; `TES_GATEWAY_CONFIG` when not given; none means all defaults. */
  path?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Values laid over the file (tests use this), before the environment. */
  overrides?: Record<string, unknown>;
}

export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const path = options.path ?? env.TES_GATEWAY_CONFIG;
  const problems: string[] = [];
  let raw: Record<string, unknown> = {};
  if (path) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(path, [`cannot read the file: ${(err as Error).message}`]);
    }
    try {
      const parsed: unknown = parseYaml(text);
      if (parsed !== null && parsed !== undefined) {
        if (typeof parsed !== 'object' || Array.isArray(parsed)) {
          throw new ConfigError(path, ['the top level must be a mapping of settings']);
        }
        raw = parsed as Record<string, unknown>;
      }
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(path, [`not valid YAML: ${(err as Error).message}`]);
    }
  }
  if (options.overrides) raw = deepMerge(raw, options.overrides);
  for (const o of ENV_OVERRIDES) {
    const value = env[o.name];
    if (value === undefined || value === '') continue;
    if (o.kind === 'int') {
      if (!/^\d+$/.test(value)) {
        problems.push(`${o.name}: must be a whole number, got ${JSON.stringify(value)}`);
        continue;
      }
      setPath(raw, o.path, Number(value));
    } else if (o.kind === 'list') {
      setPath(
        raw,
        o.path,
        value.split(',').map((item) => item.trim()),
      );
    } else {
      setPath(raw, o.path, value);
    }
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) problems.push(...result.error.issues.map(describeIssue));
  if (problems.length > 0 || !result.success) throw new ConfigError(path ?? '(defaults)', problems);
  return result.data;
}

function describeIssue(issue: ZodIssue): string {
  const where = issue.path.join('.') || '(top level)';
  if (issue.code === 'unrecognized_keys') {
    return `${where}: unknown setting${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  }
  return `${where}: ${issue.message}`;
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const prev = out[key];
    if (isPlainObject(prev) && isPlainObject(value)) out[key] = deepMerge(prev, value);
    else out[key] = value;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

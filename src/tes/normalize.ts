/**
 * Tolerant input: what real clients send is made into what the spec says, before validation.
 * - JSON `null` anywhere is dropped (Pulsar, Cromwell send it for absent optional fields);
 * - camelCase field names from Funnel's Go client become snake_case (never inside user maps:
 *   tags, env and backend_parameters keep their keys as sent);
 * - a missing input/output `type` becomes FILE;
 * - a fractional `cpu_cores` is rounded up (clients send 0.5 or 1.5; Slurm counts whole CPUs);
 * - read-only fields a client echoes back (id, state, logs, creation_time) are dropped.
 */

const CAMEL_TO_SNAKE: Readonly<Record<string, string>> = {
  creationTime: 'creation_time',
  cpuCores: 'cpu_cores',
  ramGb: 'ram_gb',
  diskGb: 'disk_gb',
  bootDiskGb: 'boot_disk_gb',
  backendParameters: 'backend_parameters',
  backendParametersStrict: 'backend_parameters_strict',
  ignoreError: 'ignore_error',
  pathPrefix: 'path_prefix',
};

/** Fields whose values are maps chosen by the user: their keys are data, not field names. */
const USER_MAPS = new Set(['tags', 'env', 'backend_parameters']);

const READ_ONLY_TOP_LEVEL = ['id', 'state', 'logs', 'creation_time'];

export function normalizeTaskBody(body: unknown): unknown {
  const cleaned = renameFields(dropNulls(body));
  if (!isRecord(cleaned)) return cleaned;
  for (const key of READ_ONLY_TOP_LEVEL) delete cleaned[key];
  const resources = cleaned.resources;
  if (isRecord(resources) && typeof resources.cpu_cores === 'number' && resources.cpu_cores > 0) {
    resources.cpu_cores = Math.ceil(resources.cpu_cores);
  }
  for (const listName of ['inputs', 'outputs']) {
    const list = cleaned[listName];
    if (!Array.isArray(list)) continue;
    for (const item of list) {
      if (isRecord(item) && item.type === undefined) item.type = 'FILE';
    }
  }
  return cleaned;
}

function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.filter((v) => v !== null).map(dropNulls);
  if (isRecord(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (v !== null) out[k] = dropNulls(v);
    }
    return out;
  }
  return value;
}

function renameFields(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(renameFields);
  if (!isRecord(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const name = CAMEL_TO_SNAKE[key] ?? key;
    // The spelling the spec uses wins when a client sends both.
    if (name !== key && Object.prototype.hasOwnProperty.call(value, name)) continue;
    out[name] = USER_MAPS.has(name) ? v : renameFields(v);
  }
  return out;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

import type { FieldProblem } from '../errors.js';
import { isRecord } from './normalize.js';

/**
 * The rules the OpenAPI schema cannot express. It runs on the normalized body and is defensive about
 * shapes, because it also runs when the schema check already failed: the client then gets every
 * problem in one answer.
 */
export interface TaskRules {
  maxContentBytes: number;
  /** backend_parameters keys this gateway understands. */
  supportedBackendParameters: readonly string[];
}

export interface TaskCheck {
  problems: FieldProblem[];
  /** Unsupported backend_parameters keys that were ignored (not strict): noted in system logs. */
  ignoredBackendParameters: string[];
}

export function checkTaskRules(body: unknown, rules: TaskRules): TaskCheck {
  const problems: FieldProblem[] = [];
  const ignoredBackendParameters: string[] = [];
  const add = (path: string, message: string): void => {
    problems.push({ path, message });
  };
  if (!isRecord(body)) {
    add('body', 'must be a JSON object describing a task');
    return { problems, ignoredBackendParameters };
  }

  const executors = body.executors;
  if (Array.isArray(executors)) {
    if (executors.length === 0) add('executors', 'must list at least one executor');
    executors.forEach((ex, i) => {
      const at = `executors[${i}]`;
      if (!isRecord(ex)) return;
      if (typeof ex.image === 'string' && ex.image.trim() === '') add(`${at}.image`, 'must not be empty');
      if (Array.isArray(ex.command) && ex.command.length === 0) add(`${at}.command`, 'must not be empty');
      for (const field of ['workdir', 'stdin', 'stdout', 'stderr'] as const) {
        checkContainerPath(ex[field], `${at}.${field}`, add);
      }
      if (isRecord(ex.env)) {
        for (const name of Object.keys(ex.env)) {
          if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
            add(
              `${at}.env.${name}`,
              'must be a variable name of letters, digits and _, not starting with a digit',
            );
          } else if (name === 'HOME') {
            add(`${at}.env.HOME`, 'cannot be set: the container runtime manages HOME');
          }
        }
      }
    });
  }

  const inputs = body.inputs;
  if (Array.isArray(inputs)) {
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
  if (Array.isArray(outputs)) {
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

  if (Array.isArray(body.volumes)) {
    body.volumes.forEach((v, i) => checkContainerPath(v, `volumes[${i}]`, add));
  }

  const resources = body.resources;
  if (isRecord(resources)) {
    if (typeof resources.cpu_cores === 'number' && resources.cpu_cores <= 0) {
      add('resources.cpu_cores', 'must be greater than 0');
    }
    if (typeof resources.ram_gb === 'number' && resources.ram_gb <= 0)
      add('resources.ram_gb', 'must be greater than 0');
    if (typeof resources.disk_gb === 'number' && resources.disk_gb < 0)
      add('resources.disk_gb', 'must not be negative');
    if (isRecord(resources.backend_parameters)) {
      const unsupported = Object.keys(resources.backend_parameters).filter(
        (k) => !rules.supportedBackendParameters.includes(k),
      );
      if (unsupported.length > 0) {
        if (resources.backend_parameters_strict === true) {
          add(
            'resources.backend_parameters',
            `unsupported key${unsupported.length > 1 ? 's' : ''} ${unsupported.join(', ')} ` +
              `(supported: ${rules.supportedBackendParameters.join(', ')})`,
          );
        } else {
          ignoredBackendParameters.push(...unsupported);
        }
      }
    }
  }
  return { problems, ignoredBackendParameters };
}

function checkContainerPath(
  value: unknown,
  path: string,
  add: (path: string, message: string) => void,
): void {
  if (typeof value !== 'string') return;
  if (!value.startsWith('/')) add(path, 'must be an absolute path');
  else if (value.includes('\0')) add(path, 'must not contain a NUL character');
  else if (value.split('/').includes('..')) add(path, "must not contain '..'");
}

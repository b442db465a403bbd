import { Ajv, type ValidateFunction } from 'ajv';
import type { Spec } from './request-fuzzer.js';

/**
 * Validators for the spec's component schemas, with ajv (the library express-openapi-validator is
 * built on). `closed: true` also closes the request object types the spec leaves open (tesTask,
 * tesExecutor, tesInput, tesOutput, tesResources): what the gateway stores must hold only their
 * known fields.
 */
export function schemaValidator(
  spec: Spec,
  name: string,
  options: { closed?: boolean } = {},
): ValidateFunction {
  const schemas = structuredClone(spec.components.schemas) as Record<string, Record<string, unknown>>;
  if (options.closed) {
    for (const open of ['tesTask', 'tesExecutor', 'tesInput', 'tesOutput', 'tesResources']) {
      schemas[open]!.additionalProperties = false;
    }
  }
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addFormat('int32', {
    type: 'number',
    validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31,
  });
  ajv.addFormat('int64', { type: 'string', validate: /^-?[0-9]+$/ });
  ajv.addFormat('double', { type: 'number', validate: (n: number) => Number.isFinite(n) });
  ajv.addFormat('uri', true);
  ajv.addFormat('date-time', true);
  ajv.addSchema({ components: { schemas } }, 'spec');
  return ajv.compile({ $ref: `spec#/components/schemas/${name}` });
}

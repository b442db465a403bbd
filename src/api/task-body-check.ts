import { readFileSync } from 'node:fs';
import ajvDraft04 from 'ajv-draft-04';
import ajvFormats from 'ajv-formats';
import { parse as parseYaml } from 'yaml';

/**
 * The spec's check of a CreateTask body (components.schemas.tesTask), compiled once, for the fast
 * path of POST /tasks (api/fast-creates.ts). It is built as express-openapi-validator builds its own
 * request checks for this OpenAPI 3.0 spec: the same JSON Schema draft (04, through ajv-draft-04),
 * the same options (theirs for requests: not strict about unknown keywords, strict numbers and
 * tuples, no union types, no type coercion, defaults filled in, nothing removed), the same numeric
 * formats, and ajv-formats' fast mode for the others. A body it accepts is one the app's validator
 * accepts; the tests hold the two to that over the request fuzzer's bodies. What it refuses goes to
 * the app, whose validator answers for it.
 */
export type TaskBodyCheck = (body: unknown) => boolean;

const FLOAT_MAX = (2 - 2 ** -23) * 2 ** 127;
const FLOAT_MIN_POSITIVE = 2 ** -126;
const within = (n: number, bits: number): boolean => n >= -(2 ** (bits - 1)) && n <= 2 ** (bits - 1) - 1;

/** OpenAPI's numeric formats, with express-openapi-validator's meaning of each. */
export const NUMERIC_FORMATS = {
  int32: { type: 'number', validate: (n: number) => Number.isInteger(n) && within(n, 32) },
  int64: { type: 'number', validate: (n: number) => Number.isInteger(n) && within(n, 64) },
  float: {
    type: 'number',
    validate: (n: number) => n === 0 || (Math.abs(n) <= FLOAT_MAX && Math.abs(n) >= FLOAT_MIN_POSITIVE),
  },
  double: { type: 'number', validate: (n: number) => typeof n === 'number' },
} as const;

export function compileTaskBodyCheck(specFile: string): TaskBodyCheck {
  const spec = parseYaml(readFileSync(specFile, 'utf8')) as { components: Record<string, unknown> };
  // Both are CommonJS modules whose export is also their `default`, which is what types and runtime agree on.
  const ajv = new ajvDraft04.default({
    strict: false,
    strictNumbers: true,
    strictTuples: true,
    allowUnionTypes: false,
    coerceTypes: false,
    useDefaults: true,
    removeAdditional: false,
    allErrors: false,
  });
  ajvFormats.default(ajv, { mode: 'fast' });
  for (const [name, format] of Object.entries(NUMERIC_FORMATS)) ajv.addFormat(name, format);
  // As the validator does for requests: a read-only field is refused wherever it is sent (the app
  // drops the ones clients echo back before either check sees the body).
  ajv.addKeyword({ keyword: 'readOnly', schemaType: 'boolean', validate: (readOnly: boolean) => !readOnly });
  ajv.addSchema({ components: spec.components }, 'spec');
  const validate = ajv.compile({ $ref: 'spec#/components/schemas/tesTask' });
  return (body) => validate(body);
}

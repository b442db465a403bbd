/** The Slurm backend_parameters this gateway understands, and what each value may hold. */

export const SLURM_BACKEND_PARAMETERS = [
  'partition',
  'account',
  'qos',
  'time_limit',
  'constraint',
  'gpus',
  'gres',
  'nodelist',
  'exclude',
  'reservation',
] as const;

export type SlurmBackendParameter = (typeof SLURM_BACKEND_PARAMETERS)[number];

/**
 * What each backend parameter's value may hold (see `man sbatch`). Every value is one argv element, so
 * no shell reads it, but sbatch itself does: it takes a comma in --partition as a list of partitions
 * (the job could then start in one whose limits the gateway never checked), and a node list holding
 * a `/` as the name of a file to read on the host that submits. Whitespace and control characters
 * mean nothing in any option. The other keys (constraint, gpus, gres, reservation) are lists or
 * expressions by design, commas included.
 */
const ONE_NAME = /^[^,]*$/;
const PARAMETER_RULES: Readonly<Partial<Record<SlurmBackendParameter, { valid: RegExp; message: string }>>> =
  {
    partition: {
      valid: ONE_NAME,
      message:
        "must be one partition name: with a comma Slurm may pick a partition whose limits this gateway's checks never saw",
    },
    account: { valid: ONE_NAME, message: 'must be one account name (no commas)' },
    qos: { valid: ONE_NAME, message: 'must be one QOS name (no commas)' },
    time_limit: {
      valid: /^(?:\d+(?::\d+){0,2}|\d+-\d+(?::\d+){0,2}|unlimited|infinite)$/i,
      message:
        'must be a Slurm time: minutes, minutes:seconds, hours:minutes:seconds, days-hours, ' +
        'days-hours:minutes or days-hours:minutes:seconds',
    },
    nodelist: {
      valid: /^[^/]*$/,
      message: 'must be a list of node names: with a / sbatch reads it as a file on the gateway host',
    },
    exclude: {
      valid: /^[^/]*$/,
      message: 'must be a list of node names: with a / sbatch reads it as a file on the gateway host',
    },
  };

/** Why a backend parameter's value cannot go to sbatch, or undefined (also for keys it does not know). */
export function checkSlurmParameter(key: string, value: string): string | undefined {
  if (!(SLURM_BACKEND_PARAMETERS as readonly string[]).includes(key)) return undefined;
  if (/[\s\x00-\x1f\x7f]/.test(value)) return 'must not contain white space or control characters';
  const rule = PARAMETER_RULES[key as SlurmBackendParameter];
  return rule && !rule.valid.test(value) ? rule.message : undefined;
}

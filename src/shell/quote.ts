/**
 * Quoting for bash: the only place in the gateway where a value becomes shell text. Everything a
 * client controls (commands, env values, paths, image names) passes through `quote` before it is
 * written into a job script, so no value can run as code.
 */

const SAFE = /^[A-Za-z0-9_@%+=:./-]+$/;

/** One bash word that expands to exactly `value`, byte for byte (newlines, quotes and all). */
export function quote(value: string): string {
  if (value === '') return "''";
  if (SAFE.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Several words, each quoted, joined by spaces. */
export function quoteAll(values: readonly string[]): string {
  return values.map(quote).join(' ');
}

/**
 * One field of a CSV record as Apptainer's `--mount` parses it: a field holding a comma, a quote or
 * a line break is wrapped in double quotes with inner quotes doubled.
 */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

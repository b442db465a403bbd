/** An input or output cannot be moved where it must go; retrying will not help. */
export class StagingError extends Error {
  constructor(
    /** `inputs[2]` or `outputs[0]`. */
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'StagingError';
  }
}

import { PermanentError } from '../errors.js';

/** An input or output cannot be moved where it must go; retrying will not help. */
export class StagingError extends PermanentError {
  constructor(
    /** `inputs[2]` or `outputs[0]`. */
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'StagingError';
  }
}

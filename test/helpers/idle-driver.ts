import type { ComputeDriver } from '../../src/compute/driver.js';

/** A launcher with no cluster behind it: it knows no jobs and is never asked to run one. */
export function idleDriver(kind: ComputeDriver['kind']): ComputeDriver {
  return {
    kind,
    supportedBackendParameters: [],
    findJob: async () => undefined,
    submit: async () => ({ jobId: 'never' }),
    poll: async () => ({ jobs: new Map(), errors: [] }),
    usage: async () => new Map(),
    known: async () => new Set(),
    cancel: async () => undefined,
    close: async () => undefined,
  };
}

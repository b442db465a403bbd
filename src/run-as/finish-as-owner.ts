import { mkdir, rm } from 'node:fs/promises';
import { posix } from 'node:path';
import type { AllowedRoots } from '../staging/allowed-roots.js';
import type { DeliveryResult, OutputDelivery } from '../staging/deliver-outputs.js';
import { schemeOf } from '../staging/stage-inputs.js';
import { LEDGER_PART } from '../tes/task-directory.js';
import type { TesOutput } from '../tes/types.js';
import { receiveFinish, type FinishRequest } from './frames.js';
import type { UserHelper } from './user-helper.js';

/**
 * What finalize reads of a task run as its owner. The owner's task directory is theirs alone: the
 * helper's `finish` runs the user side (user-side.ts) as the owner, which sends back the executors'
 * result files and log tails, delivers `file://` outputs with the owner's rights, and sends the files
 * of remote outputs; the gateway puts them in its ledger (`mirror/`, laid out as the task directory)
 * and uploads remote outputs from there with its own credentials.
 */
export interface OwnerResults {
  /** Where the result files are, laid out as in the task directory. */
  dir: string;
  /** Whole sizes of the executors' stdout and stderr on the owner's side, by path in the task directory. */
  fullSizes: ReadonlyMap<string, number>;
}

export interface FinishAsOwner {
  helper: UserHelper;
  user: string;
  taskDir: string;
  ledgerDir: string;
  tailBytes: number;
}

/** Reads the results only (nothing is delivered). */
export async function resultsAsOwner(o: FinishAsOwner): Promise<OwnerResults> {
  const { dir, received } = await finish(o, { tailBytes: o.tailBytes, deliver: [], export: [], roots: [] });
  return { dir, fullSizes: received.fullSizes };
}

/**
 * Delivers the outputs: `file://` ones as the owner, remote ones from the mirror with `outputs`'s
 * uploaders. Results come back too, read after the delivery.
 */
export async function deliverAsOwner(
  o: FinishAsOwner,
  outputs: readonly TesOutput[],
  roots: AllowedRoots,
  remote: OutputDelivery,
): Promise<OwnerResults & { delivery: DeliveryResult }> {
  const numbered = outputs.map((output, index) => ({ ...output, index }));
  const local = numbered.filter((out) => schemeOf(out.url) === 'file');
  const elsewhere = numbered.filter((out) => schemeOf(out.url) !== 'file');
  const { dir, received } = await finish(o, {
    tailBytes: o.tailBytes,
    deliver: local,
    export: elsewhere,
    roots: roots.roots.map((r) => ({ path: r.path, writable: r.writable })),
  });
  const { failedExports, ...delivery } = received.delivery;
  const failed = new Set(failedExports);
  const sendable = elsewhere.filter((out) => !failed.has(out.index));
  if (sendable.length > 0) {
    const sent = await remote.deliver(sendable, dir, roots);
    delivery.files = [...delivery.files, ...sent.files];
    delivery.errors = [...delivery.errors, ...sent.errors];
    delivery.notes = [...delivery.notes, ...sent.notes];
  }
  return { dir, fullSizes: received.fullSizes, delivery };
}

async function finish(o: FinishAsOwner, request: FinishRequest) {
  const dir = posix.join(o.ledgerDir, LEDGER_PART.mirror);
  await rm(dir, { recursive: true, force: true });
  await mkdir(o.ledgerDir, { recursive: true, mode: 0o700 });
  const received = await o.helper.finish(o.user, o.taskDir, request, (stdout) =>
    receiveFinish(stdout as AsyncIterable<Uint8Array>, dir, { tailBytes: o.tailBytes }),
  );
  return { dir, received };
}

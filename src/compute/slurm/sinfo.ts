import type { Logger } from '../../logger.js';

/**
 * How much temporary disk (`TmpDisk`, in MB) the nodes of each partition advertise, read with
 * `sinfo`: the query, its parser and a small cache, side by side. The figures decide whether a task's
 * `resources.disk_gb` can become `sbatch --tmp` (see sbatch-args.ts): Slurm refuses a job whose
 * `--tmp` no node of its partition can satisfy, and many sites leave TmpDisk at 0.
 */

/** `%P` is the partition (the default one marked `*`), `%d` the nodes' TmpDisk in MB. */
export const SINFO_TMP_DISK_ARGS: readonly string[] = ['--all', '--noheader', '--format=%P %d'];

export interface PartitionTmpDisk {
  /** The least TmpDisk a node of the partition advertises (MB). */
  minMB: number;
  /** The most TmpDisk a node of the partition advertises (MB): what decides whether --tmp can be asked. */
  maxMB: number;
}

export interface PartitionDisks {
  partitions: ReadonlyMap<string, PartitionTmpDisk>;
  /** Slurm's default partition, where a job that names none goes. */
  defaultPartition?: string;
}

export interface SinfoParse {
  disks: PartitionDisks;
  /** Lines that could not be read; each fails only itself. */
  errors: string[];
}

/**
 * One line per partition and group of like nodes (`debug* 0`, `big 1000`, `mixed 500+`); a partition
 * with unlike nodes has several lines. A `+` marks a group whose nodes differ, the figure being its
 * smallest: it is taken as is, which can only under-state what the partition offers.
 */
export function parseSinfoTmpDisk(text: string): SinfoParse {
  const partitions = new Map<string, PartitionTmpDisk>();
  const errors: string[] = [];
  let defaultPartition: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^(\S+?)(\*?)\s+(\d+)\+?$/.exec(line.trim());
    if (!m) {
      errors.push(`expected "<partition> <TmpDisk MB>", got: ${line}`);
      continue;
    }
    const [, name, star, mb] = m as unknown as [string, string, string, string];
    if (star) defaultPartition = name;
    const value = Number(mb);
    const known = partitions.get(name);
    partitions.set(
      name,
      known
        ? { minMB: Math.min(known.minMB, value), maxMB: Math.max(known.maxMB, value) }
        : { minMB: value, maxMB: value },
    );
  }
  const disks: PartitionDisks = defaultPartition ? { partitions, defaultPartition } : { partitions };
  return { disks, errors };
}

export interface PartitionDiskCacheOptions {
  /** Runs `sinfo` with SINFO_TMP_DISK_ARGS and returns its output. */
  read: () => Promise<string>;
  /** How long figures are used before sinfo is asked again. */
  refreshMs: number;
  logger: Pick<Logger, 'warn'>;
  now?: () => number;
}

/** After a failed sinfo, how long to wait before asking again (at most refreshMs). */
const RETRY_AFTER_FAILURE_MS = 30_000;

/**
 * The partitions' TmpDisk, read at first need and again once `refreshMs` has passed, by one sinfo at a
 * time however many submissions ask. A failed sinfo is logged and keeps the figures already known
 * (none, before the first success); it is tried again after 30 s, not at every submission.
 */
export class PartitionDiskCache {
  private value: PartitionDisks | undefined;
  private nextReadAt = 0;
  private reading: Promise<void> | undefined;
  /** sinfo calls made, for tests. */
  reads = 0;

  constructor(private readonly o: PartitionDiskCacheOptions) {}

  async current(): Promise<PartitionDisks | undefined> {
    if (this.now() >= this.nextReadAt) {
      this.reading ??= this.read().finally(() => {
        this.reading = undefined;
      });
      await this.reading;
    }
    return this.value;
  }

  private async read(): Promise<void> {
    this.reads++;
    try {
      const { disks, errors } = parseSinfoTmpDisk(await this.o.read());
      for (const e of errors) this.o.logger.warn({ line: e }, 'unreadable sinfo line skipped');
      this.value = disks;
      this.nextReadAt = this.now() + this.o.refreshMs;
    } catch (err) {
      this.nextReadAt = this.now() + Math.min(this.o.refreshMs, RETRY_AFTER_FAILURE_MS);
      this.o.logger.warn(
        { err },
        this.value
          ? "sinfo failed; the partitions' TmpDisk figures read before stay in use"
          : "sinfo failed; no partition's TmpDisk is known yet",
      );
    }
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }
}

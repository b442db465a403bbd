import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** cgroup v1's cpu controller, where the project's cluster runs (scripts/slurm-up.sh). */
const CPU_ROOT = '/sys/fs/cgroup/cpu';
const GROUP = join(CPU_ROOT, 'tes-bench-compute');
/** A quarter of the weight of any other process (1024). */
const SHARES = 256;

export interface ComputeShare {
  /** What the table says about the jobs' share of the host. */
  note: string;
  restore(): void;
}

/**
 * On a site, jobs run on compute nodes and the gateway, slurmctld and slurmdbd on hosts of their own.
 * Here all of them share two cores, and jobs starting and ending by the dozen take the host: the
 * gateway then waits for a core, not for its own work. While a section times the gateway with jobs
 * running, slurmd, and every job it starts from then on, is given a quarter of the CPU weight of
 * the other processes (a cpu cgroup). Jobs still get every core that nothing else wants. Where the
 * controller or slurmd is missing, the jobs keep an equal weight, and the note says so.
 */
export function lowerComputeShare(): ComputeShare {
  const equal = (why: string): ComputeShare => ({ note: `jobs at equal CPU weight (${why})`, restore() {} });
  if (!existsSync(join(CPU_ROOT, 'cpu.shares'))) return equal('no cgroup v1 cpu controller');
  let pids: string[];
  try {
    pids = execFileSync('pgrep', ['-x', 'slurmd'], { encoding: 'utf8' }).trim().split('\n');
  } catch {
    return equal('slurmd not found');
  }
  mkdirSync(GROUP, { recursive: true });
  writeFileSync(join(GROUP, 'cpu.shares'), String(SHARES));
  for (const pid of pids) writeFileSync(join(GROUP, 'cgroup.procs'), pid);
  return {
    note: `jobs at 1/${1024 / SHARES} CPU weight`,
    restore() {
      // Jobs may start while their processes are moved back: a few rounds, until the group is empty.
      for (let round = 0; round < 20; round++) {
        let procs: string[];
        try {
          procs = readFileSync(join(GROUP, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
        } catch {
          // The group is gone already (removed outside this process): nothing to move back.
          return;
        }
        for (const pid of procs) {
          try {
            writeFileSync(join(CPU_ROOT, 'cgroup.procs'), pid);
          } catch {
            // The process ended meanwhile.
          }
        }
        try {
          rmdirSync(GROUP);
          return;
        } catch {
          // Not empty yet.
        }
      }
    },
  };
}

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * Where a machine's CPU went over a stretch of time: all cores together (/proc), this process (the
 * gateway, which the bench runs in, as Node counts it), the processes it started and waited for (the
 * burst's client, sbatch, sacct), and the services beside it by name. On a machine where everything shares
 * two cores, it tells whether a figure waited for the gateway's own work or for a core.
 */

/** The services the bench shares the machine with, by process name, as the table lists them. */
const SERVICES: Record<string, readonly string[]> = {
  Redis: ['redis-server'],
  Slurm: ['slurmctld', 'slurmdbd', 'slurmd', 'slurmstepd', 'slurmscriptd', 'mariadbd'],
};

const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

export interface CpuSnapshot {
  at: number;
  /** All cores: busy and total, in seconds. */
  machineBusy: number;
  /** This process, its own threads included (microseconds, as process.cpuUsage() counts). */
  self: NodeJS.CpuUsage;
  /** Its waited-for children (seconds). */
  children: number;
  services: Record<string, number>;
}

export interface CpuCensus {
  wallSeconds: number;
  cores: number;
  /** Cores busy on average over the stretch, all processes. */
  busyCores: number;
  /** CPU seconds. */
  gateway: { user: number; system: number };
  children: number;
  services: Record<string, number>;
  /** Busy time no process above accounts for (other processes, the kernel's own work). */
  rest: number;
}

export function cpuSnapshot(): CpuSnapshot {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number);
  const services: Record<string, number> = {};
  const names = new Map(Object.entries(SERVICES).flatMap(([k, list]) => list.map((n) => [n, k] as const)));
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const comm = readProc(`/proc/${pid}/comm`)?.trim();
    const service = comm === undefined ? undefined : names.get(comm);
    if (service === undefined) continue;
    const t = processTimes(pid);
    services[service] = (services[service] ?? 0) + t.own + t.children;
  }
  return {
    at: performance.now(),
    machineBusy: (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) / TICKS_PER_SECOND,
    self: process.cpuUsage(),
    children: processTimes('self').children,
    services,
  };
}

/** What happened between two snapshots; `client` is CPU the caller knows of among the children. */
export function cpuCensus(before: CpuSnapshot, after: CpuSnapshot): CpuCensus {
  const wallSeconds = (after.at - before.at) / 1000;
  const cores = availableParallelism();
  const busy = after.machineBusy - before.machineBusy;
  const services = Object.fromEntries(
    Object.keys(SERVICES).map((k) => [k, Math.max(0, (after.services[k] ?? 0) - (before.services[k] ?? 0))]),
  );
  const gateway = {
    user: (after.self.user - before.self.user) / 1e6,
    system: (after.self.system - before.self.system) / 1e6,
  };
  const children = after.children - before.children;
  const known = gateway.user + gateway.system + children + Object.values(services).reduce((a, b) => a + b, 0);
  return {
    wallSeconds,
    cores,
    busyCores: busy / wallSeconds,
    gateway,
    children,
    services,
    rest: Math.max(0, busy - known),
  };
}

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    // The process ended between the listing and the read.
    return undefined;
  }
}

/** utime + stime, and cutime + cstime (children waited for), of a process (seconds). */
function processTimes(pid: string): { own: number; children: number } {
  const text = readProc(`/proc/${pid}/stat`);
  if (text === undefined) return { own: 0, children: 0 };
  // The name, in parentheses, may hold spaces: the fields that follow start after its last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // Fields 14 to 17 of proc(5), counted from the state (field 3) here.
  const [utime, stime, cutime, cstime] = rest.slice(11, 15).map(Number);
  return { own: (utime! + stime!) / TICKS_PER_SECOND, children: (cutime! + cstime!) / TICKS_PER_SECOND };
}

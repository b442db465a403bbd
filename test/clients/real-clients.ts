import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ROOT, startTestGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * The real TES clients (Debian's toil and snakemake with py-tes) live in the shared folder beside the
 * project, never in it: CI copies `shared/` next to its fresh clone. scripts/clients-up.sh installs
 * what they need from Debian.
 */
export const SHARED_CLIENTS = resolve(ROOT, '..', 'shared', 'clients');

/** The folder of a client test's workflow files. */
export const WORKFLOWS = join(ROOT, 'test', 'clients', 'workflows');

/** Debian's own tools first: the runners are written for them, not for whatever else is on PATH. */
const DEBIAN_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The path of one runner of the shared folder; throws, saying what to do, when it is missing. */
export function sharedRunner(name: string): string {
  const path = join(SHARED_CLIENTS, name);
  if (!existsSync(path)) {
    throw new Error(
      `the client tests need ${path}: copy the shared clients folder (shared/clients, with py-tes and ` +
        'the runners) beside the project, then run bash scripts/clients-up.sh',
    );
  }
  return path;
}

export interface ClientRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  ms: number;
}

/**
 * Runs a client to its end without blocking this process: the gateway under test lives in it and must
 * keep answering the client. stdout and stderr are kept together, in order, for failure messages.
 */
export function runClient(command: string, args: string[], env: Record<string, string>): Promise<ClientRun> {
  const started = Date.now();
  return new Promise((done, fail) => {
    const child = spawn(command, args, {
      env: { ...process.env, PATH: DEBIAN_PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', fail);
    child.on('close', (code, signal) => {
      const output = Buffer.concat(chunks).toString('utf8');
      // TES_TEST_CLIENT_LOG=DIR keeps each client's whole output, for looking into a run by hand.
      const logDir = process.env.TES_TEST_CLIENT_LOG;
      if (logDir) writeFileSync(join(logDir, `${basename(command)}.log`), output);
      done({ code, signal, output, ms: Date.now() - started });
    });
  });
}

/** The last lines of a client's output: enough to see why it failed without drowning the report. */
export function tail(text: string, lines = 60): string {
  return text.split('\n').slice(-lines).join('\n');
}

/**
 * A gateway on the real cluster whose executors run with the bwrap-host runtime over this host's
 * filesystem, where Debian's toil and snakemake are installed: the images the clients name (Toil's
 * appliance, snakemake/snakemake) are not reachable here and are ignored. `data` is a fresh folder,
 * listed as a writable allowed root, for the client's workflow and job store.
 */
export async function startClientGateway(name: string): Promise<{ gw: TestGateway; data: string }> {
  const data = mkdtempSync(`/var/tmp/tesgw-${name}-data-`);
  const gw = await startTestGateway(name, {
    backend: 'slurm',
    container: { runtime: 'bwrap-host' },
    slurm: { defaultPartition: 'debug' },
    storage: { allowedRoots: [{ path: data, writable: true }] },
  });
  return { gw, data };
}

/** Every task the gateway holds (each client test has a gateway, so a Redis prefix, of its own). */
export async function listAllTasks(base: string, view = 'BASIC'): Promise<any[]> {
  const tasks: any[] = [];
  let token = '';
  for (;;) {
    const res = await fetch(`${base}/tasks?view=${view}&page_size=100${token ? `&page_token=${token}` : ''}`);
    const page = (await res.json()) as { tasks?: any[]; next_page_token?: string };
    tasks.push(...(page.tasks ?? []));
    if (!page.next_page_token) return tasks;
    token = encodeURIComponent(page.next_page_token);
  }
}

/**
 * Why a client run failed as the gateway saw it: each task that did not complete, with its system logs
 * and the end of its executors' stderr (the client's own output rarely carries them).
 */
export async function explainRun(run: ClientRun, base: string): Promise<string> {
  const tasks = await listAllTasks(base, 'FULL');
  const failed = tasks
    .filter((t) => t.state !== 'COMPLETE')
    .map((t) => {
      const log = t.logs?.[0] ?? {};
      const stderr = (log.logs ?? []).map((l: any) => tail(l.stderr ?? '', 15)).join('\n');
      return `task ${t.id} (${t.name}) ${t.state}:\n  ${(log.system_logs ?? []).join('\n  ')}\n${stderr}`;
    });
  return (
    `client exited ${run.code ?? run.signal}:\n${tail(run.output)}\n` +
    `gateway: ${tasks.length} tasks, ${failed.length} not COMPLETE\n${failed.join('\n')}`
  );
}

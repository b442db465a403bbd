import { execFileSync, execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openRedis } from '../src/store/redis-connection.js';
import { loadConfig } from '../src/config/load-config.js';
import { startGateway } from '../src/gateway.js';
import { createLogger } from '../src/logger.js';
import { SlurmDriver } from '../src/compute/slurm/slurm-driver.js';
import { dropPrefix } from '../src/store/drop-prefix.js';
import { EXECUTOR_FILE, TASK_FILE, executorFile, taskDirOf, taskFile } from '../src/tes/task-directory.js';
import { waitForJobs } from './wait-for-jobs.js';
import { cancelGatewayJobs } from './slurm-cleanup.js';
import { lowerComputeShare } from './compute-share.js';
import { fmt, percentile, type Row } from './table.js';
import { clientAloneSeconds, runBurstClient } from './burst-client.js';
import { cpuCensus, cpuSnapshot } from './cpu-census.js';
import { startCpuProfile, type SelfTime } from './cpu-profile.js';

const run = promisify(execFile);
const TASKS = Number(process.env.BENCH_SLURM_TASKS ?? 200);
/** Where to write a CPU profile of the gateway over the burst, create to last submitted; none unset. */
const PROFILE = process.env.BENCH_SLURM_PROFILE;
const ROOT = process.cwd();
const TERMINAL = new Set(['COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR', 'CANCELED', 'PREEMPTED']);

/**
 * Execution on the real single-node Slurm: 200 one-executor tasks through the gateway against the
 * same 200 jobs submitted with plain sbatch in a loop; submission latency and throughput, time from a
 * job's end to the task's terminal state, and Slurm calls per task. The jobs run with a lower CPU
 * weight than the gateway (compute-share.ts), as on a site where they run on other hosts.
 */
export async function benchSlurm(rows: Row[]): Promise<void> {
  try {
    execFileSync('sinfo', ['-h'], { stdio: 'pipe', timeout: 10_000 });
  } catch {
    rows.push({ section: 'slurm', metric: 'skipped', value: 'no cluster (bash scripts/slurm-up.sh)' });
    return;
  }
  const images = join(ROOT, '.tmp', 'images');
  execFileSync('bash', [join(ROOT, 'test/apptainer/build-images.sh'), images], { stdio: 'pipe' });
  const image = join(images, 'busybox.sif');

  // The plain loop: what a person with a shell script would do, with the same container per job.
  const runtime = join(ROOT, 'test/apptainer/apptainer');
  const plainDir = mkdtempSync('/var/tmp/tesgw-bench-plain-');
  const script = join(plainDir, 'job.sh');
  writeFileSync(script, `#!/bin/bash\n${runtime} exec --containall --cleanenv ${image} true\n`);
  const loopStart = performance.now();
  const loopIds: string[] = [];
  for (let i = 0; i < TASKS; i++) {
    const { stdout } = await run('sbatch', [
      '--parsable',
      '--job-name=bench-plain',
      '--hold',
      '--export=NONE',
      `--chdir=${plainDir}`,
      '--output=/dev/null',
      script,
    ]);
    loopIds.push(stdout.trim());
  }
  const loopSeconds = (performance.now() - loopStart) / 1000;
  await run('scancel', ['--name=bench-plain']);
  await waitForQueueEmpty();

  const prefix = `tesgw-bench-slurm:${Date.now()}:`;
  const workRoot = mkdtempSync('/var/tmp/tesgw-bench-');
  const config = loadConfig({
    env: {},
    overrides: {
      server: { port: 0, host: '127.0.0.1' },
      redis: { prefix },
      workRoot,
      backend: 'slurm',
      log: { level: 'silent' },
      container: {
        runtime: 'apptainer',
        executable: join(ROOT, 'test/apptainer/apptainer'),
        imageRoots: [images],
      },
      // Held, so that submission is measured alone: on a cluster the jobs run on other machines.
      slurm: { extraArgs: ['--hold'] },
      // The bench runs as root on a disposable machine, like CI.
      security: { allowRoot: true },
    },
  });
  const gateway = await startGateway(config, { api: true, worker: true }, createLogger('silent'));
  const base = `http://127.0.0.1:${gateway.port}/ga4gh/tes/v1`;
  const redis = openRedis(config.redis);
  const share = lowerComputeShare();
  try {
    const body = JSON.stringify({ executors: [{ image, command: ['true'] }] });
    const clientAlone = await clientAloneSeconds(body, TASKS);
    // The client is a process of its own, as it would be.
    // The profiler costs the gateway about a tenth of its time: its figures are not comparable.
    const stopProfile = PROFILE ? await startCpuProfile() : undefined;
    const machineBefore = cpuSnapshot();
    const t0 = Date.now();
    const client = await runBurstClient(`${base}/tasks`, body, TASKS);
    const ids = client.ids;
    // Submission alone: every task has its job.
    let records = await waitForJobs(gateway.store, ids);
    const machine = cpuCensus(machineBefore, cpuSnapshot());
    const hottest: SelfTime[] = (await stopProfile?.(PROFILE!)) ?? [];
    const jobIds = [...records.values()].map((r) => r.run!.jobId!);
    // Then the jobs run, and a client watches them end.
    await run('scontrol', ['release', jobIds.join(',')]);
    // Record when each task is first seen terminal, from the API, as a client would.
    const seen = new Map<string, number>();
    // The cluster runs 16 jobs at a time, a few per second on this host: a bigger burst takes longer.
    const deadline = Date.now() + Math.max(300_000, TASKS * 600);
    const failed = new Map<string, string>();
    while (seen.size < ids.length && Date.now() < deadline) {
      const res = await fetch(`${base}/tasks?page_size=2047`);
      const now = Date.now();
      for (const t of ((await res.json()) as { tasks: Array<{ id: string; state: string }> }).tasks) {
        if (seen.has(t.id) || !TERMINAL.has(t.state)) continue;
        seen.set(t.id, now);
        if (t.state !== 'COMPLETE') failed.set(t.id, t.state);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (failed.size > 0) {
      const [id, state] = [...failed][0]!;
      const task = (await (await fetch(`${base}/tasks/${id}?view=FULL`)).json()) as {
        logs?: Array<{ system_logs?: string[] }>;
      };
      throw new Error(
        `${failed.size} tasks did not complete, e.g. ${id} ${state}: ${task.logs?.[0]?.system_logs?.join('; ')}`,
      );
    }
    if (seen.size < ids.length) throw new Error(`${ids.length - seen.size} tasks did not complete`);

    records = await gateway.store.getMany(ids);
    const submitted: number[] = [];
    const createToSubmit: number[] = [];
    const endToTerminal: number[] = [];
    // The same span in three steps: the job script's last steps after its executor (to its EXIT
    // trap's marker), the gateway's noticing and recording the end (the task's `ended`, Redis's
    // clock), and the client's next look.
    const steps = { script: [] as number[], gateway: [] as number[], client: [] as number[] };
    const endedAt = new Map(
      await Promise.all(
        ids.map(async (id) => [id, Number(await redis.hget(gateway.store.keys.task(id), 'ended'))] as const),
      ),
    );
    // The client is a fresh process that opens a connection per task: its start is in the burst's figure.
    let firstStored = Infinity;
    for (const id of ids) {
      const r = records.get(id)!;
      const sub = Date.parse(r.run!.submittedAt!);
      submitted.push(sub);
      const created = Date.parse(r.creationTime);
      firstStored = Math.min(firstStored, created);
      createToSubmit.push(sub - created);
      const taskDir = taskDirOf(workRoot, id);
      const end = Date.parse(readFileSync(executorFile(taskDir, 0, EXECUTOR_FILE.end), 'utf8').trim());
      endToTerminal.push(seen.get(id)! - end);
      const scriptEnd = statSync(taskFile(taskDir, TASK_FILE.jobEnd)).mtimeMs;
      const recorded = endedAt.get(id)!;
      steps.script.push(scriptEnd - end);
      steps.gateway.push(recorded - scriptEnd);
      steps.client.push(seen.get(id)! - recorded);
    }
    createToSubmit.sort((a, b) => a - b);
    const gatewaySeconds = (Math.max(...submitted) - t0) / 1000;
    const ratio = loopSeconds / gatewaySeconds;
    rows.push({
      section: 'slurm',
      metric: `${TASKS} jobs, plain sbatch loop (same container job): submission time (s)`,
      value: fmt(loopSeconds, 2),
    });
    rows.push({
      section: 'slurm',
      metric: `${TASKS} tasks through the gateway: create to last submitted (s)`,
      value: fmt(gatewaySeconds, 2),
      ...goal(gatewaySeconds < 1, '< 1 at 1,000 tasks'),
    });
    rows.push({
      section: 'slurm',
      metric: 'of which the client starting and connecting, before the first task was stored (s)',
      value: fmt((firstStored - t0) / 1000, 2),
    });
    rows.push({
      section: 'slurm',
      metric: `the same client's ${TASKS} requests to a server that answers at once, no work behind it (s)`,
      value: fmt(clientAlone, 2),
    });
    rows.push({
      section: 'slurm',
      metric: "the gateway's CPU per task over the burst, its threads' included: user + system (ms)",
      value: `${fmt((machine.gateway.user * 1000) / TASKS, 2)} + ${fmt((machine.gateway.system * 1000) / TASKS, 2)}`,
    });
    // Everything here shares the machine's cores: a burst that keeps them all busy waits for a core.
    const { services } = machine;
    const others = Math.max(0, machine.children - client.cpuSeconds);
    rows.push({
      section: 'slurm',
      metric: `the machine over the burst, to all tasks seen submitted (${fmt(machine.wallSeconds, 2)} s): cores busy`,
      value: `${fmt(machine.busyCores, 2)} of ${machine.cores}`,
    });
    rows.push({
      section: 'slurm',
      metric:
        'of which, CPU (s): gateway / Redis / client / Slurm daemons and MariaDB / sbatch and other commands / the rest',
      value: [
        machine.gateway.user + machine.gateway.system,
        services.Redis!,
        client.cpuSeconds,
        services.Slurm!,
        others,
        machine.rest,
      ]
        .map((x) => fmt(x, 2))
        .join(' / '),
    });
    rows.push({
      section: 'slurm',
      metric: 'gateway submission throughput / plain loop',
      value: fmt(ratio, 2),
      goal: '>= 0.9',
      verdict: ratio >= 0.9 ? 'met' : 'missed',
    });
    rows.push({
      section: 'slurm',
      metric: 'create to job submitted, per task: p50 / p99 (ms)',
      value: `${fmt(percentile(createToSubmit, 50))} / ${fmt(percentile(createToSubmit, 99))}`,
      ...goal(percentile(createToSubmit, 99) < 1000, 'p99 < 1,000 at 1,000 tasks'),
    });
    const interval = config.reconciler.pollIntervalMs;
    /** p50 / p99 / max of `xs`, which it sorts. */
    const spread = (xs: number[]): string => {
      xs.sort((a, b) => a - b);
      return `${fmt(percentile(xs, 50))} / ${fmt(percentile(xs, 99))} / ${fmt(xs[xs.length - 1]!)}`;
    };
    const maxLag = Math.max(...endToTerminal);
    rows.push({
      section: 'slurm',
      metric: `job end to terminal state seen by a client: p50 / p99 / max (ms), poll ${interval} ms, ${share.note}`,
      value: spread(endToTerminal),
      goal: `<= ${interval + 1000}`,
      verdict: maxLag <= interval + 1000 ? 'met' : 'missed',
    });
    rows.push({
      section: 'slurm',
      metric: "of which, p50 / p99 / max (ms): executor's end to the job script's end",
      value: spread(steps.script),
    });
    rows.push({
      section: 'slurm',
      metric: "of which: the job script's end to the gateway recording the task's end",
      value: spread(steps.gateway),
    });
    rows.push({
      section: 'slurm',
      metric: "of which: the gateway's record to the client seeing it (list every 50 ms)",
      value: spread(steps.client),
    });
    for (const { where, ms } of hottest) {
      rows.push({ section: 'slurm', metric: `profiled burst, self time (ms): ${where}`, value: fmt(ms) });
    }
    const driver = gateway.driver as SlurmDriver;
    const cycles = gateway.reconciler!.stats.cycles;
    rows.push({
      section: 'slurm',
      metric: 'sbatch calls per task (bursts go as job arrays)',
      value: fmt(driver.cli.calls.sbatch / TASKS, 2),
      goal: '<= 1',
    });
    rows.push({
      section: 'slurm',
      metric: 'sacct calls per task (states + usage + lookups)',
      value: `${fmt(driver.cli.calls.sacct / TASKS, 3)} (${driver.sacctCalls.states} + ${driver.sacctCalls.usage} + ${driver.sacctCalls.lookups})`,
    });
    const perCycle = driver.sacctCalls.states / Math.max(1, cycles);
    rows.push({
      section: 'slurm',
      metric: `sacct state queries per reconciler cycle (${cycles} cycles)`,
      value: fmt(perCycle, 2),
      goal: '<= 1',
      verdict: perCycle <= 1 ? 'met' : 'missed',
    });
  } finally {
    share.restore();
    // A run that failed half way leaves no job of its tasks queued on the cluster.
    await cancelGatewayJobs(redis, gateway.store.keys);
    await run('scancel', ['--name=bench-plain']).catch(() => undefined);
    await gateway.close();
    await dropPrefix(redis, prefix);
    redis.disconnect();
  }
}

/** The burst goals hold for 1,000 tasks: a verdict is given at that size or above. */
function goal(met: boolean, text: string): Pick<Row, 'goal' | 'verdict'> {
  return { goal: text, verdict: TASKS >= 1000 ? (met ? 'met' : 'missed') : '' };
}

async function waitForQueueEmpty(): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const { stdout } = await run('squeue', ['-h', '--name=bench-plain', '-o', '%i']);
    if (stdout.trim() === '') return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

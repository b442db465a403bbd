import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { isTerminal } from '../../src/tes/state.js';
import {
  changesSince,
  filesContaining,
  linksUnder,
  newMarker,
  plantCanary,
  snapshot,
  type Snapshot,
} from '../helpers/canary.js';
import {
  createTask,
  FAKE_APPTAINER,
  getTask,
  startTestGateway,
  testImages,
  waitFor,
  type TestGateway,
} from '../helpers/gateway.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import {
  BOMB_FILE,
  BOMB_PATTERN,
  CREATE_REFUSALS,
  excessOf,
  RUN_ATTACKS,
  wildcardBomb,
  type AttackContext,
  type Backend,
  type Outcome,
  type RunAttack,
} from './attacks.js';

/**
 * Runs every attack of attacks.ts through the HTTP API on one backend. The tasks are all created in
 * beforeAll, so they run side by side and the suite takes about as long as its slowest task; each
 * test then waits for its own task and lists every problem it finds, one readable line each.
 *
 * The wildcard bomb runs on a second gateway in a process of its own: a matcher that backtracks
 * blocks its event loop, and in this process that would freeze jest's clock with it.
 */
export interface SuiteOptions {
  backend: Backend;
  /** Settings for this backend, given to both gateways. */
  overrides: Record<string, unknown>;
  /** Fails the suite when the backend is missing (never skips). */
  require?: () => void;
}

/** A task that ran must end within this; the slowest attack needs a few seconds. */
const RUN_TIMEOUT_MS = 90_000;
/**
 * A GET of another task must be answered within this while the bomb runs and is finalised. It tells
 * a gateway that goes on serving from one whose event loop the pattern holds: a backtracking matcher
 * tries on the order of n^14 ways, minutes of work. It is not a latency goal (the bench measures
 * latency): on a loaded 2-core host a GET of a serving gateway has taken up to 3 s while tasks start.
 */
const GET_BUDGET_MS = 5_000;
/** A GET with no answer after this is given up on: the gateway is frozen. */
const GET_GIVE_UP_MS = 10_000;
/** The image every executor runs: busybox, through the stand-in's registry (an allowed scheme). */
const IMAGE = 'alpine';

interface Launched {
  id: string;
  ctx: AttackContext;
  canaryBefore: Snapshot;
  watched: Array<{ path: string; before: Snapshot }>;
}

interface TimedGet {
  ms: number;
  answered: boolean;
  atMs: number;
  bombState: string;
  bombJobEnded: boolean;
}

interface BombRun {
  id?: string;
  bystander?: string;
  gets: TimedGet[];
  final?: any;
  error?: string;
}

export function runHostileSuite(options: SuiteOptions): void {
  const { backend } = options;
  let gw: TestGateway;
  let bombGw: GatewayProcess | undefined;
  let http: Server;
  let marker: string;
  let data: string;
  let victim: string | undefined;
  let bomb: Promise<BombRun>;
  const launched = new Map<string, Launched>();
  const launchErrors = new Map<string, string>();
  const created: string[] = [];
  const previousRegistry = process.env.FAKE_APPTAINER_REGISTRY;

  beforeAll(async () => {
    options.require?.();
    const images = testImages();
    process.env.FAKE_APPTAINER_REGISTRY = images.registry;
    marker = newMarker();
    // Canaries, destinations, work roots and the image cache are four separate trees in /var/tmp.
    const canaries = mkdtempSync(`/var/tmp/tesgw-canary-${backend}-`);
    data = mkdtempSync(`/var/tmp/tesgw-hostile-data-${backend}-`);
    http = createServer((_req, res) => res.end(`${marker}-served-over-loopback\n`));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const loopbackUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}/x`;

    const overrides = {
      ...options.overrides,
      container: { runtime: 'apptainer', executable: FAKE_APPTAINER },
      storage: { allowedRoots: [data] },
    };
    const started = await Promise.all([
      startTestGateway(`hostile-${backend}`, overrides),
      startGatewayProcess(`hostile-bomb-${backend}`, overrides, { FAKE_APPTAINER_REGISTRY: images.registry }),
    ]);
    gw = started[0];
    bombGw = started[1];

    victim = await createTask(gw.base, {
      name: 'victim of the job.sh attack',
      executors: [{ image: IMAGE, command: ['sleep', '120'] }],
    });
    created.push(victim);
    const victimJobScript = join(gw.workRoot, victim, 'job.sh');
    // Its job.sh is whole once the job runs; the attack that targets it starts only then.
    const victimRunning = waitFor(gw.base, victim, ['RUNNING'], 60_000);

    bomb = runBomb(bombGw, { image: IMAGE, dest: join(data, 'bomb') });

    await Promise.all(
      RUN_ATTACKS.map(async (attack) => {
        try {
          const canary = plantCanary(canaries, attack.key, marker);
          const dest = join(data, attack.key);
          mkdirSync(dest, { recursive: true });
          const ctx: AttackContext = { image: IMAGE, canary, dest, loopbackUrl, victimJobScript };
          const watched = [];
          const watch = attack.watch?.(ctx) ?? [];
          if (watch.length > 0) await victimRunning;
          for (const path of watch) watched.push({ path, before: snapshot(path) });
          const canaryBefore = snapshot(canary.dir);
          const id = await createTask(gw.base, { name: attack.key, ...attack.task(ctx) });
          created.push(id);
          launched.set(attack.key, { id, ctx, canaryBefore, watched });
        } catch (err) {
          launchErrors.set(attack.key, (err as Error).message.slice(0, 600));
        }
      }),
    );
  });

  afterAll(async () => {
    await Promise.all(
      created.map((id) => fetch(`${gw.base}/tasks/${id}:cancel`, { method: 'POST' }).catch(() => undefined)),
    );
    if (victim) await waitFor(gw.base, victim, undefined, 30_000).catch(() => undefined);
    await bombGw?.close();
    await gw?.close();
    http?.close();
    if (previousRegistry === undefined) delete process.env.FAKE_APPTAINER_REGISTRY;
    else process.env.FAKE_APPTAINER_REGISTRY = previousRegistry;
  });

  describe(`hostile tasks on the ${backend} backend`, () => {
    describe('at run time', () => {
      it.each(RUN_ATTACKS.map((a) => [testName(a), a] as const))('%s', async (_name, attack) => {
        expect(await problemsOf(attack)).toEqual([]);
      });
    });

    describe(`the wildcard bomb (output ${BOMB_PATTERN.slice(0, 12)}… against a ${BOMB_FILE.length}-character path)`, () => {
      it(`keeps the API answering: a GET of another task answers within ${GET_BUDGET_MS} ms while it is finalised`, async () => {
        const run = await bomb;
        const problems: string[] = run.error ? [run.error] : [];
        if (run.gets.length === 0) problems.push('no GET was made');
        if (run.final && executorsRun(run.final) < 1) {
          problems.push(`the bomb was not tried: its executor never ran (${run.final.state})`);
        }
        for (const g of run.gets.filter((x) => !x.answered || x.ms >= GET_BUDGET_MS).slice(0, 5)) {
          problems.push(
            `GET /tasks/${run.bystander} ${g.answered ? `took ${g.ms} ms` : `had no answer after ${g.ms} ms`} ` +
              `at +${(g.atMs / 1000).toFixed(1)} s (bomb task ${g.bombState}` +
              `${g.bombJobEnded ? ', its job ended: being finalised' : ''})`,
          );
        }
        expect(problems).toEqual([]);
      });

      it('ends the bomb task in a terminal state', async () => {
        const run = await bomb;
        const problems: string[] = run.error ? [run.error] : [];
        if (!run.final) problems.push(`task ${run.id} was not seen in a terminal state`);
        else if (executorsRun(run.final) < 1) {
          problems.push(
            `the bomb was not tried: its executor never ran` +
              `; system_logs: ${JSON.stringify(systemLogsOf(run.final)).slice(0, 400)}`,
          );
        }
        expect(problems).toEqual([]);
      });
    });

    describe('at create', () => {
      const refusals = CREATE_REFUSALS.filter((r) => !r.backends || r.backends.includes(backend));
      it.each(refusals.map((r) => [`refuses ${r.title} with a 400 naming ${r.field}`, r] as const))(
        '%s',
        async (_name, refusal) => {
          const body = refusal.task(IMAGE, excessOf(gw.gateway.config));
          expect(await refusalProblems(body, refusal.field)).toEqual([]);
        },
      );
    });
  });

  function testName(attack: RunAttack): string {
    return `${attack.title}: ${expectationOf(attack.outcome)}${attack.inspect ? ', with its task directory 0700 and job.sh private to its user' : ''}`;
  }

  /** Every way the attack got through, one line each; empty when it failed safely. */
  async function problemsOf(attack: RunAttack): Promise<string[]> {
    const launch = launched.get(attack.key);
    if (!launch) return [`the task could not be created: ${launchErrors.get(attack.key) ?? 'unknown error'}`];
    const problems: string[] = [];
    let task: any;
    try {
      task = await waitFor(gw.base, launch.id, undefined, RUN_TIMEOUT_MS);
    } catch {
      task = await getTask(gw.base, launch.id);
      problems.push(`task ${launch.id} is still ${task.state} after ${RUN_TIMEOUT_MS / 1000} s`);
    }
    problems.push(...outcomeProblems(attack.outcome, task));
    const ran = executorsRun(task);
    if (ran < (attack.mustRun ?? 1)) {
      problems.push(
        `the attack was not tried: ${ran} of the ${attack.mustRun ?? 1} executors it needs ran` +
          `; system_logs: ${JSON.stringify(systemLogsOf(task)).slice(0, 400)}`,
      );
    }
    problems.push(...changesSince(launch.ctx.canary.dir, launch.canaryBefore).map((p) => `canary: ${p}`));
    for (const w of launch.watched) problems.push(...changesSince(w.path, w.before));
    problems.push(...leaks(task, launch.ctx.dest, join(gw.workRoot, launch.id)));
    problems.push(...(attack.inspect?.(join(gw.workRoot, launch.id)) ?? []));
    return problems;
  }

  function leaks(task: any, dest: string, workDir: string): string[] {
    const problems: string[] = [];
    const view = JSON.stringify(task);
    const at = view.indexOf(marker);
    if (at >= 0)
      problems.push(`the FULL view holds a secret: …${view.slice(Math.max(0, at - 80), at + 60)}…`);
    for (const file of filesContaining(dest, marker)) {
      problems.push(`a delivered output holds a secret: ${file}`);
    }
    for (const link of linksUnder(dest)) problems.push(`a delivered output is a link: ${link}`);
    for (const file of filesContaining(workDir, marker)) {
      problems.push(`a file in the task directory holds a secret: ${file}`);
    }
    return problems;
  }

  async function refusalProblems(body: Record<string, unknown>, field: string): Promise<string[]> {
    const res = await fetch(`${gw.base}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      return [`answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`];
    }
    if (res.status === 200 && typeof json.id === 'string') {
      // Accepted: stop it before it runs anything.
      await fetch(`${gw.base}/tasks/${json.id}:cancel`, { method: 'POST' });
      return [`answered 200 and stored task ${json.id} (cancelled now); expected a 400 naming ${field}`];
    }
    if (res.status !== 400) return [`answered ${res.status}: ${text.slice(0, 300)}`];
    const errors: Array<{ path?: string; message?: string }> = Array.isArray(json.errors) ? json.errors : [];
    const names = (p: string | undefined): boolean =>
      p !== undefined && (p === field || p.startsWith(`${field}.`) || p.startsWith(`${field}[`));
    if (!errors.some((e) => names(e.path))) {
      return [`answered 400 but no errors[] entry names ${field}: ${JSON.stringify(json).slice(0, 400)}`];
    }
    return [];
  }
}

function expectationOf(outcome: Outcome): string {
  const safe = 'the canary unchanged, in place and unread';
  switch (outcome.kind) {
    case 'refused':
      return `ends SYSTEM_ERROR naming ${outcome.names}, ${safe}`;
    case 'terminal':
      return `ends in a terminal state, ${safe}`;
    case 'state':
      return `ends ${outcome.state}`;
  }
}

function systemLogsOf(task: any): string[] {
  return task.logs?.flatMap((l: any) => l.system_logs ?? []) ?? [];
}

/** Executors of the task's last attempt that ran to an exit code. */
function executorsRun(task: any): number {
  const attempt = task.logs?.[task.logs.length - 1];
  return (attempt?.logs ?? []).filter((l: any) => typeof l.exit_code === 'number').length;
}

function outcomeProblems(outcome: Outcome, task: any): string[] {
  const logs = systemLogsOf(task);
  const said = logs.length > 0 ? `; system_logs: ${JSON.stringify(logs).slice(0, 600)}` : '; no system_logs';
  switch (outcome.kind) {
    case 'refused': {
      const problems: string[] = [];
      if (task.state !== 'SYSTEM_ERROR') problems.push(`ended ${task.state}, not SYSTEM_ERROR${said}`);
      else if (!logs.some((l) => l.includes(outcome.names))) {
        problems.push(`no system_log names ${outcome.names}${said}`);
      }
      return problems;
    }
    case 'terminal':
      return isTerminal(task.state) ? [] : [`is ${task.state}, not in a terminal state`];
    case 'state':
      return task.state === outcome.state ? [] : [`ended ${task.state}, not ${outcome.state}${said}`];
  }
}

/**
 * Creates a bystander task and, once it has run, the bomb; then GETs the bystander every 50 ms until
 * the bomb ends, timing each answer; a GET with no answer at all means the gateway froze, and the
 * watch stops. The bystander runs first so that the gateway process (run from the TypeScript
 * sources) has been through a whole task before the watch: the first task's one-time costs, up to
 * 3 s on a 2-core host, are the loader's, not the bomb's.
 */
async function runBomb(
  gateway: GatewayProcess,
  ctx: Pick<AttackContext, 'image' | 'dest'>,
): Promise<BombRun> {
  const run: BombRun = { gets: [] };
  const started = Date.now();
  try {
    mkdirSync(ctx.dest, { recursive: true });
    run.bystander = await createTask(gateway.base, {
      name: 'bystander',
      executors: [{ image: ctx.image, command: ['true'] }],
    });
    await waitFor(gateway.base, run.bystander, undefined, RUN_TIMEOUT_MS);
    run.id = await createTask(gateway.base, wildcardBomb(ctx));
    const jobEnd = join(gateway.workRoot, run.id, 'job-end');
    const deadline = started + RUN_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const bombJobEnded = existsSync(jobEnd);
      const state = await timedGet(`${gateway.base}/tasks/${run.id}?view=FULL`);
      const other = await timedGet(`${gateway.base}/tasks/${run.bystander}?view=FULL`);
      run.gets.push({
        ms: other.ms,
        answered: other.body !== undefined,
        atMs: Date.now() - started,
        bombState: state.body?.state ?? 'unknown (no answer)',
        bombJobEnded,
      });
      if (state.body === undefined || other.body === undefined) {
        const exit = gateway.exitStatus();
        run.error = exit
          ? `the gateway process ended (${exit}); its stderr: ${gateway.stderr().slice(-1000)}`
          : `the gateway stopped answering: no answer in ${GET_GIVE_UP_MS} ms, its event loop is blocked`;
        break;
      }
      if (isTerminal(state.body.state)) {
        run.final = state.body;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    run.error = `the bomb could not be run: ${(err as Error).message}`;
  } finally {
    // A frozen process spins a core until it is killed; the rest of the suite needs it.
    if (!run.final) await gateway.close();
  }
  return run;
}

async function timedGet(url: string): Promise<{ ms: number; body?: any }> {
  const t0 = performance.now();
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(GET_GIVE_UP_MS) });
    const body = await res.json();
    return { ms: Math.round(performance.now() - t0), body };
  } catch {
    return { ms: Math.round(performance.now() - t0) };
  }
}

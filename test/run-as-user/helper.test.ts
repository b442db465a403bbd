import { jest } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { newTaskId } from '../../src/tes/task-id.js';
import { ROOT, requireSlurm } from '../helpers/gateway.js';
import { RUN_AS, runAsUserSetup, unixUser } from '../helpers/run-as-user.js';

/**
 * The run-as-user helper (libexec/tes-gateway-helper), installed root-owned by
 * scripts/run-as-user-setup.sh, run the way the gateway runs it: as the service account tesgw through
 * `sudo -n -u <user>`, and directly as a user where sudo itself would refuse first. Every refusal is
 * checked for its message, its exit code (77) and that nothing happened; the happy path runs real jobs
 * on the single-node Slurm as the users, and the audit records are read from the syslog stand-in.
 */
jest.setTimeout(120_000);

const REFUSED = 77;
const SYSLOG_LOG = '/var/log/tes-gateway-test/syslog.log';
const SYSTEM_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
const alice = 'tes-alice';
const bob = 'tes-bob';
const carol = 'tes-carol';
const low = 'tes-low';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(argv: string[], options: { input?: Buffer | string; env?: Record<string, string> } = {}): Run {
  const r = spawnSync(argv[0]!, argv.slice(1), {
    input: options.input ?? '',
    env: { PATH: SYSTEM_PATH, LANG: 'C.UTF-8', ...options.env },
    timeout: 60_000,
    cwd: '/',
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** argv that runs `argv` as Unix user `name` with its own groups (no sudo, no login). */
function as(name: string, argv: string[]): string[] {
  const { uid, gid } = unixUser(name);
  return ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--init-groups', ...argv];
}

/** The gateway's way: tesgw runs `sudo -n -u <user> <helper> ...`. */
function viaSudo(user: string, args: string[], input?: Buffer | string): Run {
  return run(as(RUN_AS.serviceUser, ['sudo', '-n', '-u', user, '--', RUN_AS.helper, ...args]), { input });
}

/** The helper run by `user` directly, with the environment given (e.g. a forged SUDO_USER). */
function directly(
  user: string,
  args: string[],
  options: { env?: Record<string, string>; helper?: string; input?: Buffer } = {},
): Run {
  return run(as(user, [options.helper ?? RUN_AS.helper, ...args]), {
    env: options.env ?? {},
    input: options.input,
  });
}

const taskDir = (id: string): string => join(RUN_AS.workRoot, id);
const made: string[] = [];
const submitted: string[] = [];

/** A fresh task id and its directory (removed after the tests). */
function newTask(): { id: string; dir: string } {
  const id = newTaskId();
  const dir = taskDir(id);
  made.push(dir);
  return { id, dir };
}

/** The sbatch arguments the gateway writes for a task directory, with `extra` before the script. */
function sbatchArgs(id: string, dir: string, extra: string[] = [], script = join(dir, 'job.sh')): string[] {
  return [
    '--parsable',
    `--job-name=tes_${id}`,
    '--comment=tes-task',
    '--export=ALL',
    `--chdir=${dir}`,
    `--output=${dir}/slurm.out`,
    `--error=${dir}/slurm.err`,
    '--nodes=1',
    '--ntasks=1',
    '--cpus-per-task=1',
    '--mem=64M',
    '--partition=debug',
    `--account=${RUN_AS.account}`,
    ...extra,
    script,
  ];
}

/**
 * A tar archive of the files of each task, as the gateway sends prepare one: a folder per task named
 * by its id, with its own entry (mode 0755 here, which the task directory must not take).
 */
function archive(tasks: Record<string, Record<string, string>>): Buffer {
  const src = mkdtempSync(join(tmpdir(), 'helper-tar-'));
  try {
    for (const [id, files] of Object.entries(tasks)) {
      mkdirSync(join(src, id), { mode: 0o755 });
      chmodSync(join(src, id), 0o755);
      for (const [name, content] of Object.entries(files))
        writeFileSync(join(src, id, name), content, { mode: 0o644 });
    }
    return execFileSync('tar', ['-C', src, '-c', '-f', '-', ...Object.keys(tasks)]);
  } finally {
    rmSync(src, { recursive: true, force: true });
  }
}

function taskFiles(id: string, dir: string, job: string, args = sbatchArgs(id, dir)): Record<string, string> {
  return { 'job.sh': job, 'sbatch-args': args.map((a) => `${a}\0`).join('') };
}

function taskArchive(id: string, dir: string, job: string, args = sbatchArgs(id, dir)): Buffer {
  return archive({ [id]: taskFiles(id, dir, job, args) });
}

const WHOAMI_JOB = '#!/bin/bash\nid -un > whoami\n';

/** Prepares a task directory as `user` through sudo, and checks that it worked. */
function prepare(user: string, job = WHOAMI_JOB, args?: (id: string, dir: string) => string[]) {
  const task = newTask();
  const r = viaSudo(
    user,
    ['prepare', task.dir],
    taskArchive(task.id, task.dir, job, args?.(task.id, task.dir)),
  );
  expect(r).toMatchObject({ status: 0, stderr: '' });
  return task;
}

/** Jobs of the task's name known to the controller (squeue keeps ended jobs for MinJobAge). */
function jobsNamed(name: string): string[] {
  return run(['squeue', '-h', '-t', 'all', `--name=${name}`, '-o', '%i'])
    .stdout.split('\n')
    .filter(Boolean);
}

/** `sacct -a` as the service account: JobID, User, State of the job (and its array elements). */
function sacct(jobId: string): { jobId: string; user: string; state: string }[] {
  const r = run(
    as(RUN_AS.serviceUser, ['sacct', '-a', '-n', '-X', '-P', '--format=JobID,User,State', '-j', jobId]),
  );
  expect(r.status).toBe(0);
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, user, state] = line.split('|');
      return { jobId: id!, user: user!, state: state! };
    });
}

const ENDED = /^(COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL|PREEMPTED|BOOT_FAIL|DEADLINE)/;

/** Polls sacct until `count` rows of the job have ended (at most 60 s); gives the rows. */
async function waitEnded(
  jobId: string,
  count = 1,
): Promise<{ jobId: string; user: string; state: string }[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const rows = sacct(jobId).filter((r) => /^\d+(_\d+)?$/.test(r.jobId));
    if (rows.length === count && rows.every((r) => ENDED.test(r.state))) return rows;
    if (Date.now() > deadline)
      throw new Error(`job ${jobId} has not ended within 60 s: ${JSON.stringify(rows)}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

/**
 * Waits (at most 10 s) for a record containing `text` in the syslog stand-in's file: logger hands the
 * record over before the helper exits, the stand-in writes it a moment later.
 */
async function syslogRecord(text: string): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const record = readFileSync(SYSLOG_LOG, 'utf8')
      .split('\n')
      .find((line) => line.includes(text));
    if (record !== undefined) return record;
    if (Date.now() > deadline)
      throw new Error(`no syslog record with ${JSON.stringify(text)} in ${SYSLOG_LOG}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Asserts a refusal: exit 77, the message, and that the task directory was not made. */
function expectRefused(r: Run, message: string | RegExp, dir?: string): void {
  expect(r.status).toBe(REFUSED);
  expect(r.stderr).toMatch(/^tes-gateway-helper: refused: /);
  if (typeof message === 'string') expect(r.stderr).toContain(message);
  else expect(r.stderr).toMatch(message);
  if (dir) expect(existsSync(dir)).toBe(false);
}

beforeAll(() => {
  requireSlurm();
  runAsUserSetup();
});

afterAll(() => {
  if (submitted.length > 0) spawnSync('scancel', submitted, { timeout: 30_000 });
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

describe('who may use the helper', () => {
  it('refuses root, run directly, and sudo refuses to run it as root', () => {
    const { id, dir } = newTask();
    expectRefused(
      run([RUN_AS.helper, 'prepare', dir], { input: taskArchive(id, dir, WHOAMI_JOB) }),
      'never runs as root (uid 0)',
      dir,
    );
    const r = viaSudo('root', ['prepare', dir], taskArchive(id, dir, WHOAMI_JOB));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^sudo: /m);
    expect(existsSync(dir)).toBe(false);
  });

  it('refuses a user below min_uid even when sudo lets the service account through', async () => {
    const { id, dir } = newTask();
    const r = viaSudo(low, ['prepare', dir], taskArchive(id, dir, WHOAMI_JOB));
    expectRefused(r, `user ${low} has uid 900, below min_uid 1000`, dir);
    await syslogRecord(
      `user=${low} uid=900 verb=prepare task=${id} result=refused reason=user ${low} has uid 900`,
    );
  });

  it('refuses a user outside the group: sudo first, and the helper itself when run directly', () => {
    const { id, dir } = newTask();
    const bySudo = viaSudo(carol, ['prepare', dir], taskArchive(id, dir, WHOAMI_JOB));
    expect(bySudo.status).toBe(1);
    expect(bySudo.stderr).toMatch(/^sudo: /m);
    // Even with SUDO_USER forged, the group is checked first.
    const r = directly(carol, ['prepare', dir], { env: { SUDO_USER: RUN_AS.serviceUser } });
    expectRefused(r, `user ${carol} is not a member of group ${RUN_AS.group}`, dir);
  });

  it('refuses a caller that is not the service account (a user running it without sudo)', () => {
    const { dir } = newTask();
    expectRefused(
      directly(alice, ['prepare', dir]),
      `the caller is not the service account ${RUN_AS.serviceUser}`,
      dir,
    );
    expectRefused(directly(alice, ['prepare', dir], { env: { SUDO_USER: bob } }), 'SUDO_USER=tes-bob', dir);
  });
});

describe('which task directories', () => {
  it('refuses a directory outside the work root', () => {
    const id = newTaskId();
    const outside = mkdtempSync(join(tmpdir(), 'helper-outside-'));
    try {
      chmodSync(outside, 0o1777);
      const dir = join(outside, id);
      expectRefused(
        viaSudo(alice, ['prepare', dir], taskArchive(id, dir, WHOAMI_JOB)),
        'is not directly under the work root',
        dir,
      );
      expectRefused(viaSudo(alice, ['prepare', `relative/${id}`]), 'is not an absolute path');
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('refuses a path with ..', () => {
    const { id, dir } = prepare(alice);
    const other = newTask();
    const sneaky = `${dir}/../${other.id}`;
    expectRefused(
      viaSudo(alice, ['prepare', sneaky], taskArchive(id, dir, WHOAMI_JOB)),
      'is not directly under the work root',
      other.dir,
    );
    expectRefused(
      viaSudo(alice, ['remove', `${RUN_AS.workRoot}/../work/${id}`]),
      'is not directly under the work root',
    );
    expect(existsSync(dir)).toBe(true);
  });

  it('refuses a task directory that is a symlink, and writes nothing through it', () => {
    const { id, dir } = newTask();
    const target = mkdtempSync(join(tmpdir(), 'helper-target-'));
    made.push(target);
    const { uid, gid } = unixUser(alice);
    chownSync(target, uid, gid);
    symlinkSync(target, dir);
    expectRefused(viaSudo(alice, ['prepare', dir], taskArchive(id, dir, WHOAMI_JOB)), `${dir} is a symlink`);
    expectRefused(viaSudo(alice, ['remove', dir]), `${dir} is a symlink`);
    expect(readdirSync(target)).toEqual([]);
    expect(lstatSync(dir).isSymbolicLink()).toBe(true);
  });

  it("refuses another user's task directory", () => {
    const { id, dir } = prepare(bob);
    const before = readdirSync(dir).sort();
    expectRefused(
      viaSudo(alice, ['prepare', dir], taskArchive(id, dir, 'echo mine\n')),
      `belongs to ${bob}, not to ${alice}`,
    );
    expectRefused(viaSudo(alice, ['submit', dir]), `belongs to ${bob}, not to ${alice}`);
    expectRefused(viaSudo(alice, ['remove', dir]), `belongs to ${bob}, not to ${alice}`);
    expect(readdirSync(dir).sort()).toEqual(before);
    expect(jobsNamed(`tes_${id}`)).toEqual([]);
  });

  it('refuses a directory not named by a task id', () => {
    for (const name of ['not-a-task-id', newTaskId().toUpperCase(), `${newTaskId()}x`, 'i'.repeat(26)]) {
      const dir = join(RUN_AS.workRoot, name);
      expectRefused(
        viaSudo(alice, ['prepare', dir], archive({ [name]: { 'job.sh': 'x' } })),
        'is not named by a task id',
        dir,
      );
    }
  });
});

describe('which sbatch options', () => {
  const cases: [string, (id: string, dir: string) => string[], string][] = [
    [
      '--uid=0',
      (id, dir) => sbatchArgs(id, dir, ['--uid=0']),
      "sbatch option --uid is not on the helper's allowlist",
    ],
    [
      '--wrap=id',
      (id, dir) => sbatchArgs(id, dir, ['--wrap=id']),
      "sbatch option --wrap is not on the helper's allowlist",
    ],
    [
      '--export=APPTAINER_BIND=/',
      (id, dir) => sbatchArgs(id, dir, ['--export=APPTAINER_BIND=/']),
      '--export=APPTAINER_BIND=/ is allowed only as --export=ALL|NONE',
    ],
    [
      '--chdir=/tmp',
      (id, dir) => sbatchArgs(id, dir, ['--chdir=/tmp']),
      '--chdir=/tmp points outside the task directory',
    ],
    [
      '--output=/etc/x',
      (id, dir) => sbatchArgs(id, dir, ['--output=/etc/x']),
      '--output=/etc/x points elsewhere than the task directory',
    ],
    ['another script', (id, dir) => sbatchArgs(id, dir, [], join(dir, 'other.sh')), 'other.sh, but only'],
    ['--get-user-env', (id, dir) => sbatchArgs(id, dir, ['--get-user-env']), '--get-user-env is not on'],
    ['a bare word', (id, dir) => sbatchArgs(id, dir, ['-D/tmp']), '-D/tmp is not a --option'],
  ];
  it.each(cases)('refuses %s, naming it, and submits nothing', (_name, args, message) => {
    const { id, dir } = prepare(alice, WHOAMI_JOB, args);
    const r = viaSudo(alice, ['submit', dir]);
    expectRefused(r, message);
    expect(r.stderr).toContain('nothing was submitted');
    expect(r.stdout).toBe('');
    expect(jobsNamed(`tes_${id}`)).toEqual([]);
  });

  it('refuses a --job-name that names another task', () => {
    const other = newTaskId();
    const { id, dir } = prepare(alice, WHOAMI_JOB, (i, d) =>
      sbatchArgs(i, d).map((a) => (a.startsWith('--job-name=') ? `--job-name=tes_${other}` : a)),
    );
    expectRefused(viaSudo(alice, ['submit', dir]), `--job-name=tes_${other} names another task`);
    expect(jobsNamed(`tes_${id}`)).toEqual([]);
    expect(jobsNamed(`tes_${other}`)).toEqual([]);
  });
});

describe('the verbs, as the user', () => {
  it('prepares a private directory of the user, submits as the user, logs it, removes it', async () => {
    const { uid } = unixUser(alice);
    const { id, dir } = prepare(alice);
    const st = statSync(dir);
    expect(st.uid).toBe(uid);
    expect(st.mode & 0o7777).toBe(0o700);
    expect(statSync(join(dir, 'job.sh')).uid).toBe(uid);
    // Prepared again (a retry), a directory that lost its mode is made private again.
    chmodSync(dir, 0o755);
    expect(viaSudo(alice, ['prepare', dir], taskArchive(id, dir, WHOAMI_JOB))).toMatchObject({
      status: 0,
      stderr: '',
    });
    expect(statSync(dir).mode & 0o7777).toBe(0o700);

    const r = viaSudo(alice, ['submit', dir]);
    expect(r).toMatchObject({ status: 0, stderr: '' });
    const jobId = r.stdout.trim();
    expect(jobId).toMatch(/^\d+$/);
    submitted.push(jobId);
    const [row] = await waitEnded(jobId);
    expect(row).toEqual({ jobId, user: alice, state: 'COMPLETED' });
    expect(readFileSync(join(dir, 'whoami'), 'utf8')).toBe(`${alice}\n`);
    expect(statSync(join(dir, 'whoami')).uid).toBe(uid);
    expect(statSync(join(dir, 'slurm.out')).uid).toBe(uid);

    await syslogRecord(
      `tes-gateway-helper: user=${alice} uid=${uid} verb=submit task=${id} job=${jobId} result=ok`,
    );

    expect(viaSudo(alice, ['remove', dir])).toMatchObject({ status: 0, stderr: '' });
    expect(existsSync(dir)).toBe(false);
    await syslogRecord(`user=${alice} uid=${uid} verb=remove task=${id} result=ok`);
  });

  it('prepares two task directories from one archive, then submits them as one array as the user', async () => {
    const { uid } = unixUser(bob);
    const [a, b, stray] = [newTask(), newTask(), newTask()];
    // One archive for the burst; a folder of a task not named is not unpacked.
    const tasks = archive({
      [a.id]: taskFiles(a.id, a.dir, WHOAMI_JOB),
      [b.id]: taskFiles(b.id, b.dir, WHOAMI_JOB),
      [stray.id]: taskFiles(stray.id, stray.dir, WHOAMI_JOB),
    });
    expect(viaSudo(bob, ['prepare', a.dir, b.dir], tasks)).toMatchObject({ status: 0, stderr: '' });
    for (const { dir } of [a, b]) {
      expect(statSync(dir)).toMatchObject({ uid, mode: 0o40700 });
      expect(statSync(join(dir, 'job.sh')).uid).toBe(uid);
    }
    expect(existsSync(stray.dir)).toBe(false);
    await syslogRecord(`user=${bob} uid=${uid} verb=prepare task=${b.id} result=ok`);
    const batch = randomBytes(6).toString('hex');
    const r = viaSudo(bob, ['submit-array', batch, a.dir, b.dir]);
    expect(r).toMatchObject({ status: 0, stderr: '' });
    const arrayId = r.stdout.trim();
    expect(arrayId).toMatch(/^\d+$/);
    submitted.push(arrayId);
    const rows = await waitEnded(arrayId, 2);
    expect(rows.map((row) => [row.jobId, row.user, row.state]).sort()).toEqual([
      [`${arrayId}_0`, bob, 'COMPLETED'],
      [`${arrayId}_1`, bob, 'COMPLETED'],
    ]);
    for (const { dir } of [a, b]) {
      expect(readFileSync(join(dir, 'whoami'), 'utf8')).toBe(`${bob}\n`);
      expect(statSync(join(dir, 'whoami')).uid).toBe(uid);
    }
    await syslogRecord(`user=${bob} uid=${uid} verb=submit-array task=${a.id} job=${arrayId}_0 result=ok`);
    await syslogRecord(`user=${bob} uid=${uid} verb=submit-array task=${b.id} job=${arrayId}_1 result=ok`);
  });

  it('prepares and submits in one call (--prepare), logging both', async () => {
    const { uid } = unixUser(alice);
    const { id, dir } = newTask();
    const r = viaSudo(alice, ['submit', '--prepare', dir], taskArchive(id, dir, WHOAMI_JOB));
    expect(r).toMatchObject({ status: 0, stderr: '' });
    const jobId = r.stdout.trim();
    submitted.push(jobId);
    expect(statSync(dir)).toMatchObject({ uid, mode: 0o40700 });
    expect(await waitEnded(jobId)).toEqual([{ jobId, user: alice, state: 'COMPLETED' }]);
    expect(readFileSync(join(dir, 'whoami'), 'utf8')).toBe(`${alice}\n`);
    await syslogRecord(`user=${alice} uid=${uid} verb=prepare task=${id} result=ok`);
    await syslogRecord(`user=${alice} uid=${uid} verb=submit task=${id} job=${jobId} result=ok`);

    const [a, b] = [newTask(), newTask()];
    const batch = randomBytes(6).toString('hex');
    const tasks = archive({
      [a.id]: taskFiles(a.id, a.dir, WHOAMI_JOB),
      [b.id]: taskFiles(b.id, b.dir, WHOAMI_JOB),
    });
    const arr = viaSudo(alice, ['submit-array', '--prepare', batch, a.dir, b.dir], tasks);
    expect(arr).toMatchObject({ status: 0, stderr: '' });
    const arrayId = arr.stdout.trim();
    submitted.push(arrayId);
    expect((await waitEnded(arrayId, 2)).map((row) => row.state)).toEqual(['COMPLETED', 'COMPLETED']);
    for (const { dir: d } of [a, b]) expect(readFileSync(join(d, 'whoami'), 'utf8')).toBe(`${alice}\n`);
  });

  it("checks a later array task's own options, whose shared ones must equal the first's", () => {
    const [a, b] = [newTask(), newTask()];
    const batch = randomBytes(6).toString('hex');
    const tasks = archive({
      [a.id]: taskFiles(a.id, a.dir, WHOAMI_JOB),
      [b.id]: taskFiles(
        b.id,
        b.dir,
        WHOAMI_JOB,
        sbatchArgs(b.id, b.dir).map((x) => (x.startsWith('--output=') ? '--output=/etc/x' : x)),
      ),
    });
    expectRefused(
      viaSudo(bob, ['submit-array', '--prepare', batch, a.dir, b.dir], tasks),
      '--output=/etc/x points elsewhere than the task directory',
    );
    expect(jobsNamed(`tes_array_${batch}`)).toEqual([]);
  });

  it('refuses an array whose tasks ask for different resources', () => {
    const a = prepare(bob);
    const b = prepare(bob, WHOAMI_JOB, (id, dir) =>
      sbatchArgs(id, dir).map((x) => (x === '--mem=64M' ? '--mem=128M' : x)),
    );
    const batch = randomBytes(6).toString('hex');
    expectRefused(
      viaSudo(bob, ['submit-array', batch, a.dir, b.dir]),
      `task ${b.id} asks for other resources than task ${a.id}`,
    );
    expect(jobsNamed(`tes_array_${batch}`)).toEqual([]);
    expect(existsSync(join(a.dir, `array-${batch}.sh`))).toBe(false);
  });

  it("cancels the user's job, and refuses a job that is not the task's", async () => {
    const { dir } = prepare(alice, '#!/bin/bash\nsleep 300\n');
    const r = viaSudo(alice, ['submit', dir]);
    expect(r.status).toBe(0);
    const jobId = r.stdout.trim();
    submitted.push(jobId);
    const other = prepare(alice);
    expectRefused(viaSudo(alice, ['cancel', other.dir, jobId]), `job ${jobId} is`);
    expectRefused(viaSudo(alice, ['cancel', dir, '12;id']), 'is not a Slurm job id');
    const cancel = viaSudo(alice, ['cancel', dir, jobId]);
    expect(cancel).toMatchObject({ status: 0, stderr: '' });
    const [row] = await waitEnded(jobId);
    expect(row!.user).toBe(alice);
    expect(row!.state).toMatch(/^CANCELLED/);
  });

  it("passes a tool's failure through: its exit code and its stderr", () => {
    const { dir } = prepare(alice, WHOAMI_JOB, (id, d) =>
      sbatchArgs(id, d, ['--partition=no-such-partition']),
    );
    const r = viaSudo(alice, ['submit', dir]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^sbatch: error: .*[Pp]artition/m);
    expect(r.stderr).toContain('sbatch failed (exit 1)');
  });
});

describe('trust in the helper, its configuration and syslog', () => {
  // A private installation, run directly by tes-alice with SUDO_USER set as sudo would set it: the
  // sudoers rule names only the test helper.
  let base: string;
  let helper: string;
  let conf: string;
  const env = { SUDO_USER: RUN_AS.serviceUser };
  const prepareWithCopy = (dir: string): Run =>
    directly(alice, ['prepare', dir], { env, helper, input: taskArchive(basename(dir), dir, WHOAMI_JOB) });

  beforeEach(() => {
    const tag = randomBytes(4).toString('hex');
    base = `/usr/local/libexec/tes-gateway-test/trust-${tag}`;
    helper = join(base, 'tes-gateway-helper');
    conf = `/etc/tes-gateway-test/trust-${tag}/helper.conf`;
    mkdirSync(join(conf, '..'), { mode: 0o755 });
    writeFileSync(conf, readFileSync(RUN_AS.conf), { mode: 0o644 });
    execFileSync('bash', [join(ROOT, 'scripts', 'install-helper.sh'), helper, conf]);
  });
  afterEach(() => {
    rmSync(base, { recursive: true, force: true });
    rmSync(join(conf, '..'), { recursive: true, force: true });
  });

  it('works as installed (the private copy is sound)', () => {
    const { dir } = newTask();
    expect(prepareWithCopy(dir)).toMatchObject({ status: 0, stderr: '' });
    expect(statSync(dir).uid).toBe(unixUser(alice).uid);
  });

  it('runs finish as the user in the task directory, with a clean environment and stdin passed through', () => {
    const task = newTask();
    expect(prepareWithCopy(task.dir)).toMatchObject({ status: 0, stderr: '' });
    // A stand-in for dist/run-as/user-side.js: reports what it was given.
    const program = join(conf, '..', 'user-side.js');
    writeFileSync(
      program,
      `let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const request = JSON.parse(input);
  process.stdout.write(JSON.stringify({ uid: process.getuid(), cwd: process.cwd(), argv: process.argv.slice(2),
    env: Object.keys(process.env).sort(), request }));
  process.exitCode = request.exit ?? 0;
});
`,
      { mode: 0o644 },
    );
    writeFileSync(conf, readFileSync(conf, 'utf8').replace(/^program=.*$/m, `program=${program}`));
    const finish = (request: object): Run =>
      directly(alice, ['finish', task.dir], {
        env: { ...env, SECRET: 'gateway-only' },
        helper,
        input: Buffer.from(JSON.stringify(request)),
      });
    const r = finish({ tailBytes: 10 });
    expect(r).toMatchObject({ status: 0, stderr: '' });
    expect(JSON.parse(r.stdout)).toEqual({
      uid: unixUser(alice).uid,
      cwd: task.dir,
      argv: ['finish', task.dir],
      env: ['HOME', 'LANG', 'PATH'],
      request: { tailBytes: 10 },
    });
    const failed = finish({ exit: 3 });
    expect(failed.status).toBe(3);
    expect(failed.stderr).toContain('the user-side program failed (exit 3)');
  });

  it('refuses a configuration that is not root-owned, or writable by others', () => {
    const { dir } = newTask();
    const { uid, gid } = unixUser(alice);
    chownSync(conf, uid, gid);
    expectRefused(prepareWithCopy(dir), `${conf} is owned by uid ${uid}, not root`, dir);
    chownSync(conf, 0, 0);
    chmodSync(conf, 0o666);
    expectRefused(prepareWithCopy(dir), `${conf} is writable by its group or by others`, dir);
    chmodSync(conf, 0o644);
    chmodSync(join(conf, '..'), 0o775);
    expectRefused(prepareWithCopy(dir), 'is writable by its group or by others (mode 775)', dir);
  });

  it('refuses when the helper itself is not root-owned or is writable by others', () => {
    const { dir } = newTask();
    const { uid: tesgw } = unixUser(RUN_AS.serviceUser);
    chownSync(helper, tesgw, tesgw);
    expectRefused(prepareWithCopy(dir), `${helper} is owned by uid ${tesgw}, not root`, dir);
    chownSync(helper, 0, 0);
    chmodSync(helper, 0o757);
    expectRefused(prepareWithCopy(dir), `${helper} is writable by its group or by others`, dir);
  });

  it('refuses to act when syslog does not answer (fail closed)', () => {
    const { dir } = newTask();
    const text = readFileSync(conf, 'utf8').replace(
      /^syslog_socket=.*$/m,
      'syslog_socket=/run/tes-gateway-test/nobody.sock',
    );
    writeFileSync(conf, text);
    const r = prepareWithCopy(dir);
    expectRefused(r, 'syslog at /run/tes-gateway-test/nobody.sock does not accept records', dir);
  });

  it('refuses an unknown configuration key, and an allow_option that would widen the allowlist', () => {
    const { dir } = newTask();
    writeFileSync(conf, `${readFileSync(RUN_AS.conf, 'utf8')}colour=blue\n`);
    expectRefused(prepareWithCopy(dir), 'has an unknown key colour', dir);
    writeFileSync(conf, `${readFileSync(RUN_AS.conf, 'utf8')}allow_option=--uid\n`);
    expectRefused(prepareWithCopy(dir), 'allow_option=--uid is not possible', dir);
  });
});

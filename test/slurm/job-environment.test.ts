import { jest } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { SlurmCli } from '../../src/compute/slurm/slurm-cli.js';
import { jobEnvironmentArg } from '../../src/compute/slurm/sbatch-args.js';
import { requireSlurm } from '../helpers/gateway.js';

/**
 * What a job's environment holds, on the real cluster: only the small clean environment sbatch ran
 * in, never a variable of the gateway's own process, and no login shell on the node (which slurmd
 * starts for `--export=NONE`, and marks with SLURM_GET_USER_ENV).
 */
jest.setTimeout(120_000);

const PLANTED = {
  TES_GATEWAY_TEST_SECRET: 'must-not-reach-the-job',
  APPTAINER_BIND: '/',
  SBATCH_PARTITION: 'no-such-partition',
};

let dir: string;
const saved: Record<string, string | undefined> = {};

beforeAll(() => {
  requireSlurm();
  dir = mkdtempSync(join(tmpdir(), 'tes-job-env-'));
  for (const [name, value] of Object.entries(PLANTED)) {
    saved[name] = process.env[name];
    process.env[name] = value;
  }
});

afterAll(() => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  rmSync(dir, { recursive: true, force: true });
});

async function jobEnvironment(loginEnvironment: boolean): Promise<Map<string, string>> {
  const name = loginEnvironment ? 'login' : 'clean';
  const script = join(dir, `${name}.sh`);
  const out = join(dir, `${name}.env`);
  writeFileSync(script, `#!/bin/bash\nenv -0 > ${out}.tmp && mv ${out}.tmp ${out}\n`, { mode: 0o700 });
  const cli = new SlurmCli({ timeoutMs: 30_000, maxConcurrentCalls: 1 });
  const jobId = (
    await cli.run(
      'sbatch',
      [
        '--parsable',
        `--job-name=tes_job_env_${name}`,
        jobEnvironmentArg(loginEnvironment),
        `--chdir=${dir}`,
        `--output=${dir}/${name}.out`,
        script,
      ],
      'test job',
    )
  ).trim();
  expect(jobId).toMatch(/^\d+$/);
  const deadline = Date.now() + 90_000;
  while (!existsSync(out)) {
    if (Date.now() > deadline) throw new Error(`job ${jobId} wrote no environment to ${out} in 90 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const vars = new Map<string, string>();
  for (const entry of readFileSync(out, 'utf8').split('\0').filter(Boolean)) {
    const eq = entry.indexOf('=');
    vars.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return vars;
}

describe('the job environment', () => {
  it('is the clean one sbatch ran in, with no login shell and nothing of the gateway', async () => {
    const env = await jobEnvironment(false);
    for (const name of Object.keys(PLANTED)) expect(env.has(name)).toBe(false);
    expect(env.has('SLURM_GET_USER_ENV')).toBe(false);
    expect(env.get('HOME')).toBe(homedir());
    expect(env.get('USER')).toBe(userInfo().username);
    expect(env.get('LANG')).toBe('C.UTF-8');
    expect(env.get('PATH')).toBe(process.env.PATH);
    const own = [...env.keys()].filter(
      (k) => !/^(SLURMD?_|TMPDIR$|ENVIRONMENT$|HOSTNAME$|PWD$|SHLVL$|_$)/.test(k),
    );
    expect(own.sort()).toEqual(['HOME', 'LANG', 'LOGNAME', 'PATH', 'USER']);
  });

  it('is the login environment of the job user when the site asks for it (--export=NONE)', async () => {
    const env = await jobEnvironment(true);
    for (const name of Object.keys(PLANTED)) expect(env.has(name)).toBe(false);
    expect(env.get('SLURM_GET_USER_ENV')).toBe('1');
    expect(env.get('HOME')).toBe(homedir());
  });
});

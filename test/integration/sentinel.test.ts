import { jest } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { openRedis } from '../../src/store/redis-connection.js';
import { isTerminal } from '../../src/tes/state.js';
import { TASK_FILE, WRITABLE_DIR, taskDirOf } from '../../src/tes/task-directory.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { testPrefix } from '../helpers/redis.js';
import { freePort } from '../helpers/free-port.js';
import { until } from '../helpers/until.js';

/**
 * Redis behind Sentinel, with a failover in the middle of a burst of task creations: private
 * redis-server processes (a master and its replica) and three sentinels on free ports, a whole
 * gateway with the local backend that finds the master through the sentinels, and `SENTINEL FAILOVER`
 * once a third of the tasks are in. Every task the API accepted ends COMPLETE and ran once; clients
 * saw at most 503 during the switch. Every process started here is killed at the end.
 */
// Above the sum of the test's own bounds (creations retried for at most a minute, tasks awaited for
// another), so that a slow phase fails with its own message rather than jest's timeout.
jest.setTimeout(180_000);

const MASTER_NAME = 'mymaster';
const TASKS = 100;
const IN_FLIGHT = 8;

const children: ChildProcess[] = [];
// Should the test process end before afterAll, the servers end with it.
process.once('exit', () => children.forEach((c) => c.kill('SIGKILL')));
let dir: string;
let gw: TestGateway | undefined;
let masterPort: number;
let replicaPort: number;
let sentinelPorts: number[];
/** The redis-server processes by port, and the arguments they all share. */
const servers = new Map<number, ChildProcess>();
/** The sentinel processes by port. */
const sentinels = new Map<number, ChildProcess>();
let common: string[] = [];

function start(program: string, args: string[], label: string): ChildProcess {
  const child = spawn(program, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.on('error', (err) => {
    throw new Error(`${label} did not start (${program}): ${err.message}`);
  });
  child.on('exit', (code, signal) => {
    if (code !== null && code !== 0) process.stderr.write(`${label} exited ${code}: ${stderr}\n`);
    void signal;
  });
  children.push(child);
  return child;
}

function client(port: number): Redis {
  return new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, lazyConnect: false });
}

/** The port the sentinels name as the master, once they all agree. */
async function agreedMaster(): Promise<number | undefined> {
  const ports = new Set<string>();
  for (const port of sentinelPorts) {
    const s = client(port);
    try {
      const addr = (await s.call('SENTINEL', 'get-master-addr-by-name', MASTER_NAME)) as string[] | null;
      ports.add(addr?.[1] ?? 'none');
    } finally {
      s.disconnect();
    }
  }
  return ports.size === 1 && !ports.has('none') ? Number([...ports][0]) : undefined;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tesgw-sentinel-'));
  const ports = await Promise.all([1, 2, 3, 4, 5].map(() => freePort()));
  [masterPort, replicaPort] = [ports[0]!, ports[1]!];
  sentinelPorts = ports.slice(2);
  common = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  servers.set(masterPort, start('redis-server', ['--port', String(masterPort), ...common], 'master'));
  servers.set(
    replicaPort,
    start(
      'redis-server',
      ['--port', String(replicaPort), ...common, '--replicaof', '127.0.0.1', String(masterPort)],
      'replica',
    ),
  );
  for (const port of sentinelPorts) {
    // Sentinel rewrites its configuration file, so each has one of its own.
    const conf = join(dir, `sentinel-${port}.conf`);
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${masterPort} 2`,
        // A master slower than this to answer a ping is down: on a loaded 2-core host 1 s was met by a
        // healthy master, and the sentinels failed over a second time in the middle of the test.
        `sentinel down-after-milliseconds ${MASTER_NAME} 3000`,
        `sentinel failover-timeout ${MASTER_NAME} 10000`,
        '',
      ].join('\n'),
    );
    sentinels.set(port, start('redis-sentinel', [conf], `sentinel ${port}`));
  }
  // Ready when the replica is in sync and every sentinel knows the replica and the other sentinels.
  await until('the replica syncing', 15_000, async () => {
    const r = client(replicaPort);
    try {
      return (await r.info('replication')).includes('master_link_status:up') ? true : undefined;
    } finally {
      r.disconnect();
    }
  });
  await until('the sentinels meeting', 20_000, async () => {
    for (const port of sentinelPorts) {
      const s = client(port);
      try {
        const [master] = (await s.call('SENTINEL', 'masters')) as string[][];
        const field = (name: string): string | undefined => master?.[master.indexOf(name) + 1];
        if (field('num-slaves') !== '1' || field('num-other-sentinels') !== '2') return undefined;
      } finally {
        s.disconnect();
      }
    }
    return true;
  });
  gw = await startTestGateway(
    'sentinel',
    {
      backend: 'local',
      container: { runtime: 'bwrap-host' },
      local: { maxConcurrentTasks: 8 },
      redis: {
        prefix: testPrefix('sentinel'),
        sentinel: {
          name: MASTER_NAME,
          sentinels: sentinelPorts.map((port) => ({ host: '127.0.0.1', port })),
        },
      },
    },
    { workRoot: mkdtempSync(join(dir, 'work-')) },
  );
});

afterAll(async () => {
  try {
    // Bounded, so that a gateway that cannot close still lets the servers below be killed.
    await Promise.race([gw?.gateway.close(), new Promise((r) => setTimeout(r, 15_000).unref())]);
  } finally {
    for (const child of children) child.kill('SIGCONT');
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(
      children.map((c) =>
        c.exitCode !== null || c.signalCode !== null
          ? Promise.resolve()
          : new Promise((resolve) => c.once('exit', resolve)),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  }
});

interface Attempt {
  status: number;
  id?: string;
}

/** How long a client keeps trying a creation answered 503, as a patient workflow engine would. */
const RETRY_FOR_MS = 60_000;

/** Creates one task, again after each 503 as a client would, for up to RETRY_FOR_MS. */
async function createWithRetry(base: string, n: number, statuses: number[]): Promise<Attempt> {
  const deadline = Date.now() + RETRY_FOR_MS;
  const body = JSON.stringify({
    name: `burst ${n}`,
    // Each run of the job leaves a line in the task's own /tmp: two lines mean it ran twice.
    executors: [{ image: 'alpine', command: ['sh', '-c', 'echo run >> /tmp/runs'] }],
  });
  for (;;) {
    const res = await fetch(`${base}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    statuses.push(res.status);
    const json = (await res.json()) as { id?: string };
    if (res.status !== 503) return { status: res.status, ...(json.id !== undefined && { id: json.id }) };
    if (Date.now() > deadline) {
      throw new Error(`creation ${n} still answered 503 after ${RETRY_FOR_MS} ms: ${JSON.stringify(json)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function stateOf(base: string, id: string): Promise<string | undefined> {
  const res = await fetch(`${base}/tasks/${id}?view=MINIMAL`);
  if (res.status === 503) return undefined;
  return ((await res.json()) as { state?: string }).state ?? `HTTP ${res.status}`;
}

async function listIds(base: string): Promise<string[]> {
  const ids: string[] = [];
  let token = '';
  do {
    const res = await fetch(`${base}/tasks?view=MINIMAL&page_size=256${token ? `&page_token=${token}` : ''}`);
    const page = (await res.json()) as { tasks: Array<{ id: string }>; next_page_token?: string };
    ids.push(...page.tasks.map((t) => t.id));
    token = page.next_page_token ?? '';
  } while (token);
  return ids;
}

/**
 * A burst of TASKS creations, IN_FLIGHT at a time, across a change of master: a third before
 * `switchMaster` starts, a third while it runs, and a third once it is done and the sentinels name
 * `newMaster`. Every accepted task must end COMPLETE, run once, and be listed.
 */
async function burstAcross(switchMaster: () => Promise<void>, newMaster: number): Promise<void> {
  const { base, workRoot } = gw!;
  const before = new Set(await listIds(base));
  const statuses: number[] = [];
  const attempts: Attempt[] = [];
  let next = 0;
  let failedOver: Promise<void> | undefined;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < TASKS) {
        const n = next++;
        // A third before the switch, a third during it, and a third once the sentinels name the new
        // master (while it has no replica yet).
        if (n === Math.floor(TASKS / 3)) failedOver = switchMaster();
        if (n >= Math.floor((2 * TASKS) / 3)) await failedOver;
        attempts.push(await createWithRetry(base, n, statuses));
      }
    }),
  );
  await failedOver;
  expect(await agreedMaster()).toBe(newMaster);

  // Every answer was 200, or 503 while the master changed (some were: the burst met the switch);
  // never a 500.
  expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([]);
  expect(statuses).toContain(503);
  const ids = attempts.map((a) => a.id);
  expect(ids.every((id) => id !== undefined)).toBe(true);

  const states = new Map<string, string | undefined>();
  await until('every accepted task ending', 60_000, async () => {
    for (const id of ids as string[]) {
      const state = states.get(id);
      if (state === undefined || !isTerminal(state as never)) states.set(id, await stateOf(base, id));
    }
    return [...states.values()].every((s) => s !== undefined && isTerminal(s as never)) ? true : undefined;
  }).catch((err: unknown) => {
    const open = [...states].filter(([, s]) => s === undefined || !isTerminal(s as never));
    throw new Error(`${String(err)}; not ended: ${JSON.stringify(open.slice(0, 10))}`);
  });
  const notComplete = [...states].filter(([, s]) => s !== 'COMPLETE');
  expect(notComplete).toEqual([]);

  // One launch each: the launcher's record, and one line from the one run of the executor.
  const runs = (ids as string[]).map((id) => {
    const taskDir = taskDirOf(workRoot, id);
    const file = join(taskDir, WRITABLE_DIR.tmp, 'runs');
    return {
      id,
      submitted: existsSync(join(taskDir, TASK_FILE.localJob)),
      runs: existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0,
    };
  });
  expect(runs.filter((r) => !r.submitted || r.runs !== 1)).toEqual([]);

  // Every accepted task is listed. A creation cut off by the switch is sent again to the new master
  // by ioredis and then refused (503) for want of a replica: such a task exists without the client
  // knowing its id, at most one per 503.
  const listed = new Set(await listIds(base));
  expect((ids as string[]).filter((id) => !listed.has(id))).toEqual([]);
  const fresh = [...listed].filter((id) => !before.has(id));
  expect(fresh.length - ids.length).toBeLessThanOrEqual(statuses.filter((s) => s === 503).length);
}

/** Waits until every sentinel names `port` as the master. */
async function masterIs(port: number): Promise<void> {
  await until('the sentinels agreeing on the new master', 30_000, async () =>
    (await agreedMaster()) === port ? true : undefined,
  );
}

describe('Redis behind Sentinel', () => {
  it('loses no task and runs none twice across a failover during a burst', async () => {
    await burstAcross(async () => {
      const s = client(sentinelPorts[0]!);
      try {
        await s.call('SENTINEL', 'FAILOVER', MASTER_NAME);
      } finally {
        s.disconnect();
      }
      await masterIs(replicaPort);
    }, replicaPort);
  });

  it('loses no task and runs none twice when the master is killed (-9) during a burst', async () => {
    // After the first test the master is on replicaPort, with the first master as its replica.
    await burstAcross(async () => {
      const killed = servers.get(replicaPort)!;
      killed.kill('SIGKILL');
      await new Promise((resolve) =>
        killed.exitCode !== null || killed.signalCode !== null
          ? resolve(undefined)
          : killed.once('exit', resolve),
      );
      await masterIs(masterPort);
      // The operator brings the dead server back; it joins as the new master's replica, and creations
      // are confirmed again once it is in sync.
      servers.set(
        replicaPort,
        start(
          'redis-server',
          ['--port', String(replicaPort), ...common, '--replicaof', '127.0.0.1', String(masterPort)],
          'restarted',
        ),
      );
    }, masterPort);
  });
});

describe('a connection through Sentinel', () => {
  /**
   * The race that ioredis 5 loses: a connection is reconnecting and waits for a sentinel's answer
   * when another sentinel announces `+switch-master`. The connection's failover detector closes the
   * connector, the answer then finds it closed, and ioredis ends the connection for good ("Connection
   * is closed." for every command after). Made to happen on demand: the sentinel the connection asks
   * first is stopped (SIGSTOP) before its connection is cut, so the reconnect waits on it while a
   * second sentinel fails over, and it answers once the switch is announced.
   */
  it('connects again when a failover cuts short its reconnect, and so does its duplicate', async () => {
    const [asked, announcer] = [sentinelPorts[0]!, sentinelPorts[1]!];
    const oldMaster = await until('the sentinels agreeing on a master', 30_000, agreedMaster);
    const newMaster = oldMaster === masterPort ? replicaPort : masterPort;
    // The other server is a replica in sync that the announcing sentinel would promote.
    await until('a replica the sentinel can promote', 30_000, async () => {
      const s = client(announcer);
      try {
        const replicas = (await s.call('SENTINEL', 'REPLICAS', MASTER_NAME)) as string[][];
        const good = replicas.some((r) => {
          const field = (name: string): string | undefined => r[r.indexOf(name) + 1];
          return (
            field('port') === String(newMaster) &&
            field('flags') === 'slave' &&
            field('master-link-status') === 'ok'
          );
        });
        return good ? true : undefined;
      } finally {
        s.disconnect();
      }
    });

    const conn = openRedis({
      sentinel: {
        name: MASTER_NAME,
        sentinels: sentinelPorts.map((port) => ({ host: '127.0.0.1', port })),
        db: 0,
      },
    });
    const copy = conn.duplicate();
    const ended: string[] = [];
    // Each connection's failover detector listens on every sentinel, the announcer included, once its
    // connection says so (an event of ioredis's own, which its tests wait for too).
    let subscribed = 0;
    for (const [label, c] of [
      ['connection', conn],
      ['duplicate', copy],
    ] as const) {
      c.on('error', () => undefined);
      c.on('end', () => ended.push(label));
      c.once('failoverSubscribed', () => subscribed++);
    }
    const stopped = sentinels.get(asked)!;
    try {
      const ids = await Promise.all([conn.client('ID'), copy.client('ID')]);
      await until('the failover detectors subscribing', 10_000, async () =>
        subscribed === 2 ? true : undefined,
      );

      stopped.kill('SIGSTOP');
      const master = client(oldMaster);
      try {
        for (const id of ids) await master.call('CLIENT', 'KILL', 'ID', String(id));
      } finally {
        master.disconnect();
      }
      await until('both connections reconnecting through the stopped sentinel', 10_000, async () =>
        conn.status === 'connecting' && copy.status === 'connecting' ? true : undefined,
      );
      // The announcement itself, heard as the connections' failover detectors hear it.
      const listener = client(announcer);
      let announced = false;
      listener.once('message', () => (announced = true));
      await listener.subscribe('+switch-master');
      const s = client(announcer);
      try {
        await s.call('SENTINEL', 'FAILOVER', MASTER_NAME);
        await until('the switch being announced', 30_000, async () => (announced ? true : undefined));
      } finally {
        s.disconnect();
        listener.disconnect();
      }
      // The detectors' own subscribers read the same message from their sockets within a moment.
      await new Promise((r) => setTimeout(r, 500));
      // The switch has been announced while both reconnects wait; the stopped sentinel answers now.
      stopped.kill('SIGCONT');
      await until('both connections ending', 10_000, async () => (ended.length >= 2 ? true : undefined));

      // Both come back, to the new master, and take writes.
      await until('both connections writing to the new master', 30_000, async () => {
        for (const c of [conn, copy]) {
          if (c.status !== 'ready') return undefined;
          await c.set(`${testPrefix('sentinel-race')}:probe`, 'written');
          if (!(await c.info('server')).includes(`tcp_port:${newMaster}`)) return undefined;
        }
        return true;
      });
      expect([...new Set(ended)].sort()).toEqual(['connection', 'duplicate']);
    } finally {
      stopped.kill('SIGCONT');
      conn.disconnect();
      copy.disconnect();
    }
    await masterIs(newMaster);
  });

  it('stays closed when its owner closes it while it waits for a sentinel', async () => {
    const asked = sentinelPorts[0]!;
    const stopped = sentinels.get(asked)!;
    stopped.kill('SIGSTOP');
    const conn = openRedis({
      sentinel: { name: MASTER_NAME, sentinels: [{ host: '127.0.0.1', port: asked }], db: 0 },
    });
    conn.on('error', () => undefined);
    const statuses: string[] = [];
    try {
      await until('the connection asking the stopped sentinel', 10_000, async () =>
        conn.status === 'connecting' ? true : undefined,
      );
      // ioredis tells of a status on the next tick: the ones before this are told first.
      await new Promise((r) => setImmediate(r));
      for (const status of ['connecting', 'ready', 'end']) conn.on(status, () => statuses.push(status));
      conn.disconnect();
    } finally {
      stopped.kill('SIGCONT');
    }
    // The sentinel answers the cut-short connect, which ends it; nothing connects it again.
    await until('the connection ending', 10_000, async () => (conn.status === 'end' ? true : undefined));
    await new Promise((r) => setTimeout(r, 1500));
    expect(conn.status).toBe('end');
    expect(statuses.filter((s) => s !== 'end')).toEqual([]);
  });
});

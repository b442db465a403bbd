import { randomInt } from 'node:crypto';
import { specPath } from '../../src/app.js';
import { renderTask } from '../../src/tes/views.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { sendRaw, type RawResponse } from '../helpers/raw-http.js';
import { fuzzCase, loadSpec, Rng, TaskGenerator, type FuzzCase } from '../helpers/request-fuzzer.js';
import { schemaValidator } from '../helpers/spec-validator.js';

/**
 * The request fuzzer against a real API process (api role only: nothing runs). Bounded in count and
 * in time. A run is reproducible: FUZZ_SEED=<seed> replays a whole run, FUZZ_ONLY=<n> one request of
 * it; FUZZ_COUNT and FUZZ_TIME_MS change the bounds. A failure names the seed and the request.
 */

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : randomInt(2 ** 31);
const COUNT = Number(process.env.FUZZ_COUNT ?? 3000);
const TIME_MS = Number(process.env.FUZZ_TIME_MS ?? 120_000);
const ONLY = process.env.FUZZ_ONLY === undefined ? undefined : Number(process.env.FUZZ_ONLY);
const PARALLEL = 6;

const spec = loadSpec(specPath());
const generator = new TaskGenerator(spec);
const errorBody = schemaValidator(spec, 'tesErrorResponse');
const fullTask = schemaValidator(spec, 'tesTaskFull');
const closedFullTask = schemaValidator(spec, 'tesTaskFull', { closed: true });

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway(
    'fuzz',
    { storage: { allowedRoots: [{ path: '/shared', writable: true }] } },
    { roles: { api: true, worker: false } },
  );
});
afterAll(async () => {
  await gw.close();
});

/** What is wrong with one answer, or undefined when it is a proper answer. */
function answerProblem(c: FuzzCase, r: RawResponse): string | undefined {
  if (r.error !== undefined || r.status === 0) return `no answer (${r.error ?? 'closed'})`;
  if (r.status >= 500) return `status ${r.status}: ${r.body.slice(0, 300)}`;
  if (c.request.method === 'HEAD') return undefined;
  let body: unknown;
  try {
    body = JSON.parse(r.body);
  } catch {
    return `status ${r.status} with a body that is not JSON: ${JSON.stringify(r.body.slice(0, 200))}`;
  }
  if (r.status >= 400) {
    if (!errorBody(body))
      return `error body off the spec (${JSON.stringify(errorBody.errors)}): ${r.body.slice(0, 300)}`;
    if ((body as { status: number }).status !== r.status)
      return `error body says ${r.body.slice(0, 100)} for ${r.status}`;
  }
  return undefined;
}

/** Every string in a value, map keys included. */
function strings(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) strings(v, out);
  else if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      out.push(k);
      strings(v, out);
    }
  }
  return out;
}

it('answers every generated request with JSON and below 500, and stores only tasks the spec allows', async () => {
  // A few real tasks, so that reads and cancels also meet records.
  const taskIds: string[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await sendRaw(gw.url, {
      method: 'POST',
      target: '/ga4gh/tes/v1/tasks',
      headers: [['Content-Type', 'application/json']],
      body: JSON.stringify(generator.task(Rng.forRequest(SEED, -1 - i))),
    });
    expect(r.status === 200 ? 'created' : `seed ${SEED}: ${r.status} ${r.body}`).toBe('created');
    taskIds.push((JSON.parse(r.body) as { id: string }).id);
  }

  const indexes = ONLY === undefined ? Array.from({ length: COUNT }, (_, i) => i) : [ONLY];
  const deadline = Date.now() + TIME_MS;
  const failures: string[] = [];
  let ran = 0;
  let next = 0;
  const statuses = new Map<number, number>();
  const worker = async (): Promise<void> => {
    while (next < indexes.length && Date.now() < deadline && failures.length < 10) {
      const c = fuzzCase(SEED, indexes[next++]!, generator, taskIds);
      const r = await sendRaw(gw.url, c.request);
      ran++;
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      const problem = answerProblem(c, r);
      if (problem) failures.push(`${c.description}\n  -> ${problem}`);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  const summary = `seed ${SEED} (replay with FUZZ_SEED=${SEED}), ${ran} requests, statuses ${JSON.stringify([...statuses].sort())}`;
  expect({ summary, failures }).toEqual({ summary, failures: [] });
  expect(ran).toBeGreaterThan(0);

  // The gateway still answers, and everything it stored is a task the spec allows.
  expect((await sendRaw(gw.url, { method: 'GET', target: '/ga4gh/tes/v1/service-info' })).status).toBe(200);
  const store = gw.gateway.store;
  const ids = await store.redis.zrange(store.keys.all, 0, -1);
  const records = await store.getMany(ids);
  expect(records.size).toBe(ids.length);
  const offSpec: string[] = [];
  for (const record of records.values()) {
    const task = renderTask(record, 'FULL');
    const shown = JSON.stringify(task).slice(0, 500);
    if (!fullTask(task)) offSpec.push(`${record.id}: ${JSON.stringify(fullTask.errors)} in ${shown}`);
    else if (!closedFullTask(task)) {
      offSpec.push(`${record.id}: unknown field ${JSON.stringify(closedFullTask.errors)} in ${shown}`);
    } else if (strings(record.request).some((s) => s.includes('\0'))) {
      offSpec.push(`${record.id}: holds a NUL character`);
    }
  }
  const first = offSpec.slice(0, 20);
  expect({ summary, stored: ids.length, offSpec: offSpec.length, first }).toEqual({
    summary,
    stored: ids.length,
    offSpec: 0,
    first: [],
  });
}, 300_000);

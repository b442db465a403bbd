import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/**
 * The client of the bench's bursts, a process of its own as a workflow engine is: it creates N tasks
 * at once over a pool of CONNECTIONS keep-alive connections, as engines do (py-tes and Toil through a
 * requests session, Nextflow and Cromwell through their HTTP clients' pools), and prints their ids
 * and its own CPU time as JSON. Node's fetch opened a connection per request instead: against a server that answers at
 * once, 1,000 requests took it about 1.5 s on the bench's machine, a pool of 64 about 0.45 s.
 *
 * `node dist/bench/burst-client.js URL BODY N [TOKEN]`
 */
const CONNECTIONS = 64;

export interface BurstResult {
  ids: string[];
  /** Wall time of the client process, start to exit (ms). */
  ms: number;
  /** The client's own CPU, user + system, its start included (s). */
  cpuSeconds: number;
}

/** What the client prints. */
interface ClientOutput {
  ids: string[];
  cpuSeconds: number;
}

/** Runs the client as a process; the time includes its start, as a user's would. */
export async function runBurstClient(
  url: string,
  body: string,
  n: number,
  token?: string,
): Promise<BurstResult> {
  const started = performance.now();
  const args = [fileURLToPath(import.meta.url), url, body, String(n), ...(token ? [token] : [])];
  const { stdout } = await promisify(execFile)(process.execPath, args, { maxBuffer: 64 * 1024 * 1024 });
  const out = JSON.parse(stdout) as ClientOutput;
  return { ...out, ms: performance.now() - started };
}

/**
 * The client alone: the same burst against a server that reads each request and answers at once,
 * with no work behind it. What of a burst's figure is the client's and the machine's own (s).
 */
export async function clientAloneSeconds(body: string, n: number): Promise<number> {
  let count = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const answer = JSON.stringify({ id: String(count++) });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length }).end(answer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const { ms } = await runBurstClient(`http://127.0.0.1:${port}/ga4gh/tes/v1/tasks`, body, n);
    return ms / 1000;
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

function post(url: string, body: string, agent: Agent, token: string | undefined): Promise<string> {
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...(token ? { authorization: `Bearer ${token}` } : {}),
  };
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) reject(new Error(`POST ${url}: ${res.statusCode} ${text}`));
        else resolve((JSON.parse(text) as { id: string }).id);
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [url, body, n, token] = process.argv.slice(2);
  const agent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  Promise.all(Array.from({ length: Number(n) }, () => post(url!, body!, agent, token))).then(
    (ids) => {
      const cpu = process.cpuUsage();
      const out: ClientOutput = { ids, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      agent.destroy();
    },
    (err: Error) => {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    },
  );
}

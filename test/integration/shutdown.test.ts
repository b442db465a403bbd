import { Agent, request } from 'node:http';
import { startTestGateway } from '../helpers/gateway.js';

/**
 * A gateway told to stop while a client sends on a keep-alive connection, as engines polling their
 * tasks do: each answer from then on closes its connection, so the gateway stops once the requests in
 * flight are answered, not at its shutdown deadline, and no request of the client is cut off there.
 */

/** Far beyond the test's own time limit: a gateway that waits for it fails the test. */
const SHUTDOWN_MS = 120_000;

interface Answer {
  status: number;
  connection: string | undefined;
  /** Whether the request went out on a connection an earlier request had used. */
  reused: boolean;
}

/** A request on `agent`; `pause`, when given, is awaited with half the body sent. */
function send(
  url: string,
  agent: Agent,
  options: { body?: string; pause?: () => Promise<void> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const { body, pause } = options;
    const req = request(
      url,
      {
        agent,
        method: body === undefined ? 'GET' : 'POST',
        headers:
          body === undefined ? {} : { 'content-type': 'application/json', 'content-length': body.length },
      },
      (res) => {
        res.resume();
        res.on('end', () =>
          resolve({ status: res.statusCode!, connection: res.headers.connection, reused: req.reusedSocket }),
        );
      },
    );
    req.on('error', reject);
    if (body === undefined || !pause) {
      req.end(body);
      return;
    }
    const half = Math.floor(body.length / 2);
    req.write(body.slice(0, half));
    void pause().then(() => req.end(body.slice(half)));
  });
}

it('closes a keep-alive connection with the answer it gives once stopping, and stops without waiting for its deadline', async () => {
  const gw = await startTestGateway(
    'shutdown',
    { server: { port: 0, host: '127.0.0.1', shutdownTimeoutMs: SHUTDOWN_MS } },
    { roles: { api: true, worker: false } },
  );
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const info = `${gw.base}/service-info`;
    expect(await send(info, agent)).toEqual({ status: 200, connection: 'keep-alive', reused: false });
    // A create is in flight on that connection (half its body sent) when the shutdown begins.
    let stopped: Promise<void> | undefined;
    const body = JSON.stringify({ executors: [{ image: 'alpine', command: ['true'] }] });
    const created = await send(`${gw.base}/tasks`, agent, {
      body,
      pause: async () => {
        await new Promise((r) => setTimeout(r, 100));
        stopped = gw.close();
        await new Promise((r) => setTimeout(r, 100));
      },
    });
    expect(created).toEqual({ status: 200, connection: 'close', reused: true });
    // The client's next request needs a new connection, which the stopping server no longer takes.
    await expect(send(info, agent)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await stopped;
  } finally {
    agent.destroy();
  }
}, 30_000);

import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { Duplex } from 'node:stream';
import type { Express } from 'express';
import type { Logger } from '../logger.js';
import type { FastPath } from './fast-reads.js';
import { within } from '../retry.js';

/**
 * The HTTP server around the app. Node answers what it cannot parse itself, before Express sees
 * anything: by default with a bare status and no body (431 for a head over `maxHeaderSize`, 400
 * for bytes that are not HTTP/1.1, 408 for a head that is too slow), and it drops a CONNECT request
 * with no answer at all. Here every one of those gets a JSON body with the spec's error shape, like
 * the answers of the app.
 */

/** Request line and headers together; Node's own default, stated so that a flag cannot change it. */
export const MAX_HEAD_BYTES = 16 * 1024;

/**
 * The longest request target (path and query) the app reads; longer ones get 414. Real targets are
 * far shorter (a list query with a few tag filters); 8 KiB is also what common proxies allow.
 */
export const MAX_TARGET_BYTES = 8 * 1024;

/** How long a refused connection may keep sending before it is cut; reading on avoids a reset. */
const DRAIN_MS = 2000;

/**
 * How long an idle connection stays open for the client's next request (Node's own default is 5 s).
 * A server that closes an idle connection as the client sends on it resets that request, and a client
 * cannot tell whether a reset POST created its task. Clients that pause between requests (a workflow
 * engine between stages, a pool of a proxy) keep their connections for much longer than 5 s; the
 * `Keep-Alive: timeout=65` hint tells those that read it when to let go first. Above the 60 s idle
 * timeout of common proxies, so that they, not the gateway, close the connections they hold.
 */
export const KEEP_ALIVE_MS = 65_000;

/**
 * Each server's open connections with the last answer begun on each: a shutdown tells those still
 * being written to close their connections. Kept per connection, not per request, to cost a request
 * one map write.
 */
const connections = new WeakMap<Server, Map<Duplex, ServerResponse | undefined>>();

export function createHttpServer(app: Express, logger: Logger, fast?: FastPath): Server {
  const handle = fast
    ? (req: IncomingMessage, res: ServerResponse) => fast(req, res, () => void app(req, res))
    : app;
  const open = new Map<Duplex, ServerResponse | undefined>();
  const server = createServer({ maxHeaderSize: MAX_HEAD_BYTES }, (req, res) => {
    if (server.listening) open.set(req.socket, res);
    else res.setHeader('Connection', 'close');
    handle(req, res);
  });
  server.on('connection', (socket: Duplex) => {
    open.set(socket, undefined);
    socket.once('close', () => open.delete(socket));
  });
  connections.set(server, open);
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  const answered = new WeakSet<Duplex>();
  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex) => {
    // Node reports further bytes of a refused head again: the first answer stands.
    if (answered.has(socket)) return;
    answered.add(socket);
    // Like Node itself, never write into a response that is already on its way (a pipelined
    // request after it failed): the client would read garbage.
    const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent === true) {
      socket.destroy();
      return;
    }
    const { status, message } = describeClientError(err.code, err.rawPacket);
    logger.info({ status, code: err.code, message }, 'request refused before parsing');
    endWithJson(socket, status, message);
  });
  // A CONNECT request is no request for this API; Node would drop its connection without a word.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    answered.add(socket);
    endWithJson(socket, 405, `method CONNECT is not allowed on ${req.url ?? '/'}`);
  });
  return server;
}

/**
 * Stops the server: it takes no new connection, and each answer from now on closes its connection. A
 * client polling on a keep-alive connection would otherwise go on sending on it until the deadline,
 * and then have a request cut off; told so, it opens a new connection, to another gateway. Idle
 * connections go at once. Past `ms`, connections still open are cut.
 */
export async function closeHttpServer(server: Server, ms: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const res of connections.get(server)?.values() ?? []) {
    if (!res || res.writableFinished) continue;
    if (!res.headersSent) res.setHeader('Connection', 'close');
    // Its head said keep-alive: its connection goes once it is idle, after this answer.
    else res.once('finish', () => setImmediate(() => server.closeIdleConnections()));
  }
  server.closeIdleConnections();
  if (!(await within(closed, ms))) server.closeAllConnections();
  await closed;
}

/** The status and message for a request Node's parser refused; exported for its unit test. */
export function describeClientError(
  code: string | undefined,
  rawPacket: Buffer | undefined,
): { status: number; message: string } {
  switch (code ?? '') {
    case 'HPE_HEADER_OVERFLOW':
      return requestLineOverflows(rawPacket)
        ? { status: 414, message: `the request target is longer than the ${MAX_TARGET_BYTES} bytes accepted` }
        : {
            status: 431,
            message: `the request line and headers are larger than the ${MAX_HEAD_BYTES} bytes accepted`,
          };
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return { status: 413, message: 'the chunk extensions of the request body are too large' };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: 408, message: 'the request did not arrive in time' };
    case 'HPE_PAUSED_H2_UPGRADE':
      return { status: 400, message: 'HTTP/2 is not served here; use HTTP/1.1' };
    default:
      return { status: 400, message: `malformed HTTP request (${code ?? 'unknown parse error'})` };
  }
}

/**
 * Node says only "header overflow", for the request line and the headers alike. The bytes it was
 * parsing tell them apart: a request line that has not ended yet (or that is itself over the limit)
 * means the target is too long. Bytes that arrived in small pieces may end the head in a later piece
 * than the one that overflowed; those are answered 431, still with a JSON body.
 */
function requestLineOverflows(rawPacket: Buffer | undefined): boolean {
  if (!rawPacket) return false;
  const startsRequest = /^[A-Za-z]+ \S/.test(rawPacket.subarray(0, 64).toString('latin1'));
  if (!startsRequest) return false;
  const lineEnd = rawPacket.indexOf('\r\n');
  return lineEnd < 0 || lineEnd >= MAX_HEAD_BYTES;
}

/**
 * Writes a complete response by hand (no request object exists yet) and half-closes. The socket
 * keeps reading what the client still sends for a while: closing with unread bytes would make the
 * kernel send a reset, and the client could lose the answer.
 */
function endWithJson(socket: Duplex, status: number, message: string): void {
  const body = JSON.stringify({ status, message });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Connection: close\r\n\r\n' +
      body,
  );
  socket.on('error', () => undefined);
  socket.resume();
  const cut = setTimeout(() => socket.destroy(), DRAIN_MS);
  cut.unref();
  socket.once('close', () => clearTimeout(cut));
}

import { connect } from 'node:net';

/** What came back on the socket: a parsed answer, or how the connection ended without one. */
export interface RawResponse {
  /** 0 when no status line arrived (the connection was reset or closed first). */
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The socket error when there was one (`ECONNRESET`, `EPIPE`, `timeout`), else undefined. */
  error?: string;
}

export interface RawRequest {
  method: string;
  /** The request target exactly as sent: nothing is encoded or checked on the way out. */
  target: string;
  headers?: Array<[string, string]>;
  body?: Buffer | string;
}

/**
 * Sends one HTTP/1.1 request byte for byte over a fresh connection (`Connection: close`), so
 * targets and headers that fetch and http.request refuse to send reach the server as written.
 */
export function sendRaw(baseUrl: string, req: RawRequest, timeoutMs = 10_000): Promise<RawResponse> {
  const url = new URL(baseUrl);
  const headers: Array<[string, string]> = [
    ['Host', url.host],
    ['Connection', 'close'],
    ...(req.headers ?? []),
  ];
  const body = req.body === undefined ? undefined : frameBody(Buffer.from(req.body), headers);
  const head =
    `${req.method} ${req.target} HTTP/1.1\r\n` + headers.map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    socket.setTimeout(timeoutMs, () => {
      error = 'timeout';
      socket.destroy();
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    socket.on('close', () => resolve(parseResponse(Buffer.concat(chunks), error)));
    socket.write(head);
    // The server may answer and close before reading a body it refuses: that is not a failure.
    if (body !== undefined) socket.write(body, () => undefined);
    // No half-close: Node's server aborts requests still in progress when the client's side ends.
  });
}

/**
 * Adds Content-Length unless the request sets its own framing; a chunked body is framed as
 * chunks, so the server never waits for a chunk that is not coming.
 */
function frameBody(body: Buffer, headers: Array<[string, string]>): Buffer {
  const chunked = headers.some(([k, v]) => /^transfer-encoding$/i.test(k) && /chunked/i.test(v));
  if (chunked) {
    const parts =
      body.length > 0 ? [Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n')] : [];
    return Buffer.concat([...parts, Buffer.from('0\r\n\r\n')]);
  }
  if (!headers.some(([k]) => /^content-length$/i.test(k)))
    headers.push(['Content-Length', String(body.length)]);
  return body;
}

export function parseResponse(whole: Buffer, error?: string): RawResponse {
  // Interim answers (100 Continue) come before the real one.
  let data = whole;
  while (/^HTTP\/1\.[01] 1\d\d /.test(data.subarray(0, 16).toString('latin1')) && data.includes('\r\n\r\n')) {
    data = data.subarray(data.indexOf('\r\n\r\n') + 4);
  }
  const end = data.indexOf('\r\n\r\n');
  const head = data.subarray(0, end < 0 ? data.length : end).toString('latin1');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  if (!m || end < 0)
    return { status: 0, headers: {}, body: data.toString('utf8'), ...(error ? { error } : {}) };
  const headers: Record<string, string> = {};
  for (const line of head.split('\r\n').slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  let body = data.subarray(end + 4);
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(body);
  return { status: Number(m[1]), headers, body: body.toString('utf8'), ...(error ? { error } : {}) };
}

function dechunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const nl = data.indexOf('\r\n', at);
    if (nl < 0) break;
    const size = parseInt(data.subarray(at, nl).toString('latin1'), 16);
    if (!(size > 0)) break;
    parts.push(data.subarray(nl + 2, nl + 2 + size));
    at = nl + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

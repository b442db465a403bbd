import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { createHttpServer, describeClientError, MAX_TARGET_BYTES } from '../../src/api/http-server.js';
import { isPageSize, targetProblem } from '../../src/app.js';
import { createLogger } from '../../src/logger.js';

describe('createHttpServer', () => {
  it('keeps an idle connection for 65 s and tells the client so', async () => {
    const app = express();
    app.post('/tasks', (_req, res) => res.json({ id: 'x' }));
    const server = createHttpServer(app, createLogger('silent'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const head = await new Promise<string>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () =>
          socket.write('POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n'),
        );
        let got = '';
        socket.setEncoding('latin1').on('data', (chunk: string) => {
          got += chunk;
          if (got.includes('\r\n\r\n')) {
            socket.destroy();
            resolve(got.split('\r\n\r\n')[0]!);
          }
        });
        socket.on('error', reject);
      });
      expect(head).toMatch(/^Connection: keep-alive$/im);
      expect(head).toMatch(/^Keep-Alive: timeout=65$/im);
    } finally {
      server.close();
    }
  });
});

describe('describeClientError', () => {
  it('calls an overflow inside the request line a target that is too long', () => {
    const packet = Buffer.from(`GET /${'a'.repeat(70_000)}`);
    expect(describeClientError('HPE_HEADER_OVERFLOW', packet).status).toBe(414);
  });

  it('calls an overflow after the request line ended headers that are too large', () => {
    const packet = Buffer.from(`GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(20_000)}`);
    expect(describeClientError('HPE_HEADER_OVERFLOW', packet)).toEqual({
      status: 431,
      message: 'the request line and headers are larger than the 16384 bytes accepted',
    });
  });

  it('calls an overflow in a later piece of the head 431, not knowing which part it is', () => {
    expect(describeClientError('HPE_HEADER_OVERFLOW', Buffer.from('aaaa')).status).toBe(431);
    expect(describeClientError('HPE_HEADER_OVERFLOW', undefined).status).toBe(431);
  });

  it('names the limit of the request target in a 414', () => {
    expect(describeClientError('HPE_HEADER_OVERFLOW', Buffer.from('GET /aaa')).message).toBe(
      `the request target is longer than the ${MAX_TARGET_BYTES} bytes accepted`,
    );
  });

  it.each([
    ['ERR_HTTP_REQUEST_TIMEOUT', 408],
    ['HPE_CHUNK_EXTENSIONS_OVERFLOW', 413],
    ['HPE_INVALID_METHOD', 400],
    ['HPE_PAUSED_H2_UPGRADE', 400],
    [undefined, 400],
  ])('answers %s with %i', (code, status) => {
    expect(describeClientError(code, undefined).status).toBe(status);
  });
});

describe('targetProblem', () => {
  it('accepts a plain path with or without a query', () => {
    expect(targetProblem('/v1/tasks?view=FULL', '/v1/tasks')).toBeUndefined();
    expect(targetProblem('/v1/tasks/a%3Ab', '/v1/tasks/a%3Ab')).toBeUndefined();
  });

  it('refuses a fragment, another form of target and a path the router reads differently', () => {
    expect(targetProblem('/v1/tasks/#:cancel', '/v1/tasks/')).toMatch(/^must not contain '#'/);
    expect(targetProblem('*', '*')).toBe('must be a path starting with /');
    expect(targetProblem('http://h/v1/tasks', '/v1/tasks')).toBe('must be a path starting with /');
    expect(targetProblem('/v1\\tasks', '/v1/tasks')).toMatch(/^must be a plain path/);
  });

  it(`calls a target over ${MAX_TARGET_BYTES} bytes too long`, () => {
    const target = `/v1/tasks?name_prefix=${'a'.repeat(MAX_TARGET_BYTES)}`;
    expect(targetProblem(target, '/v1/tasks')).toBe('too long');
  });
});

describe('isPageSize', () => {
  it.each(['1', '256', '2047', '0100'])('accepts %s', (value) => {
    expect(isPageSize(value)).toBe(true);
  });

  it.each(['0', '2048', '-1', '2.5', '1e3', '0x10', ' 5', 'Infinity', '', '1234567', ['1', '2'], 5])(
    'refuses %p',
    (value) => {
      expect(isPageSize(value)).toBe(false);
    },
  );
});

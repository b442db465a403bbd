import cluster from 'node:cluster';
import { createServer } from 'node:http';
import { Redis } from 'ioredis';
import { Keys } from '../src/store/keys.js';

/**
 * The ceiling for GET /tasks/{id}: a bare Node `http` server with ioredis that reads the same Redis
 * hash fields as the gateway's MINIMAL view (one HMGET) and answers the same JSON, with no framework,
 * validation, authentication or logging. `node dist/bench/bare-server.js PORT PREFIX PROCESSES REDIS_URL`; the
 * processes share the port as the gateway's `server.processes` do.
 */
const [port, prefix, processes, redisUrl] = process.argv.slice(2);
const TASK_PATH = /^\/ga4gh\/tes\/v1\/tasks\/([A-Za-z0-9_-]+)$/;

if (cluster.isPrimary && Number(processes) > 1) {
  for (let i = 0; i < Number(processes); i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.kill('SIGTERM');
    process.exit(0);
  });
} else {
  const keys = new Keys(prefix!);
  const redis = new Redis(redisUrl!);
  createServer((req, res) => {
    const match = req.method === 'GET' ? TASK_PATH.exec(req.url ?? '') : null;
    if (!match) {
      res.writeHead(req.url === '/ready' ? 200 : 404).end();
      return;
    }
    const id = match[1]!;
    redis.hmget(keys.task(id), 'state', 'owner').then(
      ([state]) => {
        const body = state ? JSON.stringify({ id, state }) : '{"msg":"not found","status_code":404}';
        res.writeHead(state ? 200 : 404, { 'content-type': 'application/json; charset=utf-8' }).end(body);
      },
      () => res.writeHead(503).end(),
    );
  }).listen(Number(port), '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
}

/**
 * The ceiling: a bare node:http server that answers POST /token with a fixed small JSON body, after reading the
 * request body (so the request is consumed as a real token endpoint would). No parsing, no crypto, no storage.
 *
 * Env: PORT (default 0 = any free port), HOST (default 127.0.0.1). Prints one JSON line with "msg":"listening"
 * and "url" once it accepts connections; SIGTERM/SIGINT close it.
 */
import { createServer } from 'node:http';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 0);

const body = Buffer.from(
  JSON.stringify({ access_token: 'x'.repeat(32), token_type: 'Bearer', expires_in: 600, scope: 'orders:read' }),
);
const notFound = Buffer.from('{"error":"not_found"}');

const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/token') {
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': body.length,
        'cache-control': 'no-store',
      });
      res.end(body);
    } else {
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': notFound.length });
      res.end(notFound);
    }
  });
});
server.keepAliveTimeout = 60_000;

server.listen(port, host, () => {
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('unexpected server address');
  process.stdout.write(`${JSON.stringify({ msg: 'listening', url: `http://${host}:${addr.port}` })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}

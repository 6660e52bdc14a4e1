/**
 * The upstream API for the gateway benchmark: a bare node:http server that answers every request with a fixed
 * small JSON body after reading the request. Env: PORT (default 0), HOST (default 127.0.0.1). Prints one JSON line
 * with "msg":"listening" and "url"; SIGTERM/SIGINT close it.
 */
import { createServer } from 'node:http';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 0);

const body = Buffer.from(JSON.stringify({ id: 7, status: 'shipped', items: [{ sku: 'A-1', qty: 2 }] }));

const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
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

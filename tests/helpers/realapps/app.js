// An app for the real-clients matrix on Node's own servers: `node app.js h1|h2c PORT`.
// Routes (shared by every app of the matrix): GET /small -> "ok"; POST|PUT /upload -> "<sha256> <length>"
// of the body received; GET /download?n=N -> N pattern bytes (byte i is i % 251); /status/N -> status N
// (no body); /trailers -> a chunked body with a trailer; anything else -> 404.
'use strict';
const crypto = require('crypto');
const http = require('http');
const http2 = require('http2');

const [mode, port] = [process.argv[2], Number(process.argv[3])];

function pattern(n) {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

function handle(req, res) {
  const url = new URL(req.url, 'http://app');
  if (url.pathname === '/small') {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
    res.end('ok');
  } else if (url.pathname === '/upload' && (req.method === 'POST' || req.method === 'PUT')) {
    const hash = crypto.createHash('sha256');
    let length = 0;
    req.on('data', (chunk) => { hash.update(chunk); length += chunk.length; });
    req.on('end', () => {
      const body = `${hash.digest('hex')} ${length}`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) });
      res.end(body);
    });
  } else if (url.pathname === '/download') {
    const body = pattern(Number(url.searchParams.get('n') || '0'));
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(body.length) });
    res.end(body);
  } else if (url.pathname.startsWith('/status/')) {
    res.writeHead(Number(url.pathname.slice(8)));
    res.end();
  } else if (url.pathname === '/trailers') {
    res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
    res.write('with ');
    res.addTrailers({ 'x-checksum': 'abc123' });
    res.end('trailers');
  } else {
    req.resume();
    res.writeHead(404, { 'content-type': 'text/plain', 'content-length': '9' });
    res.end('not found');
  }
}

const server = mode === 'h2c' ? http2.createServer({}, handle) : http.createServer({ keepAliveTimeout: 30000 }, handle);
if (mode === 'h1') {
  // WebSocket echo on /ws, from the `ws` package (installed by scripts/bootstrap.sh --test; NODE_PATH finds it).
  const { WebSocketServer } = require('ws');
  const wss = new WebSocketServer({ server, path: '/ws', maxPayload: 256 * 1024 * 1024 });
  wss.on('connection', (ws) => ws.on('message', (data, binary) => ws.send(data, { binary })));
}
server.listen(port, '0.0.0.0', () => console.log('listening'));

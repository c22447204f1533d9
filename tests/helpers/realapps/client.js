// The real-clients matrix driven by Node's clients: `node client.js http|http2|fetch|ws BASE_URL SIZE`.
// One cell on one connection (one agent, session or dispatcher): a small request, an upload and a download
// of SIZE pattern bytes, an error response and a request after it. Prints one JSON object of what came back;
// the test compares digests and statuses. Every step is bounded by a timeout.
'use strict';
const crypto = require('crypto');
const http = require('http');
const http2 = require('http2');

const [mode, base, size] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const TIMEOUT_MS = 60000;

function pattern(n) {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

function summary(status, body) {
  return { status, length: body.length, sha256: crypto.createHash('sha256').update(body).digest('hex'),
           text: body.length <= 200 ? body.toString('latin1') : '' };
}

function viaHttp(agent, method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, agent, timeout: TIMEOUT_MS }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ ...summary(res.statusCode, Buffer.concat(parts)), reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

function viaHttp2(session, method, path, body) {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': method, ':path': path }, { endStream: !body });
    const parts = [];
    let status = 0;
    stream.setTimeout(TIMEOUT_MS, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.on('response', (headers) => { status = headers[':status']; });
    stream.on('data', (c) => parts.push(c));
    stream.on('end', () => resolve(summary(status, Buffer.concat(parts))));
    stream.on('error', reject);
    stream.on('close', () => { if (!status) reject(new Error(`stream closed, code ${stream.rstCode}`)); });
    if (body) stream.end(body);
  });
}

async function viaFetch(method, path, body) {
  const res = await fetch(new URL(path, base), { method, body, signal: AbortSignal.timeout(TIMEOUT_MS) });
  return summary(res.status, Buffer.from(await res.arrayBuffer()));
}

function viaWs(body) {
  // WebSocket: the upgrade through the proxy, then SIZE bytes echoed back in one binary message.
  const WebSocket = require('ws');
  return new Promise((resolve, reject) => {
    const url = new URL('/ws', base);
    url.protocol = 'ws:';
    const ws = new WebSocket(url, { maxPayload: 2 * size + 1024 });
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('timeout')); }, TIMEOUT_MS);
    const got = [];
    ws.on('open', () => { ws.send('small'); ws.send(body); });
    ws.on('message', (data) => {
      got.push(Buffer.from(data));
      if (got.length === 2) ws.close(1000, 'done');
    });
    ws.on('close', (code) => {
      clearTimeout(timer);
      resolve({ small: got[0] ? got[0].toString() : null, echo: got[1] ? summary(101, got[1]) : null, code });
    });
    ws.on('error', reject);
  });
}

async function main() {
  const upload = pattern(size);
  const out = {};
  if (mode === 'ws') {
    out.ws = await viaWs(upload);
  } else {
    let send;
    let done = () => {};
    if (mode === 'http') {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      send = (m, p, b) => viaHttp(agent, m, p, b);
      done = () => agent.destroy();
    } else if (mode === 'http2') {
      const session = http2.connect(base);
      session.on('error', () => {});
      send = (m, p, b) => viaHttp2(session, m, p, b);
      done = () => session.close();
    } else {
      send = viaFetch;
    }
    out.small = await send('GET', '/small');
    out.upload = await send('POST', '/upload', upload);
    out.download = await send('GET', `/download?n=${size}`);
    out.error = await send('GET', '/missing');
    out.after = await send('GET', '/small');
    done();
  }
  console.log(JSON.stringify(out));
}

main().then(() => process.exit(0), (err) => { console.error(String(err && err.stack || err)); process.exit(1); });

// ws-echo: node ws (Debian's node-ws) as a reference echo server for the
// benchmark: bench/run --servers wsgate,qt,ws.
//
// Like qt-echo and wsgate's echo-server it listens on 127.0.0.1 on a free
// port, echoes text as text and binary as binary, and prints its URL on the
// first stdout line; a 64 MiB message limit, no compression, no idle timeout
// (ws has none). With --cert FILE --key FILE it serves wss://. --check
// only loads ws and exits, 0 if it is there.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');

// Debian's node-ws is in /usr/share/nodejs, where Debian's Node.js looks for
// modules and other builds of Node.js do not.
const loadWs = () => {
  for (const name of ['ws', '/usr/share/nodejs/ws']) {
    try {
      return require(name);
    } catch (e) {
      if (e.code !== 'MODULE_NOT_FOUND') {
        throw e;
      }
    }
  }
  console.error("ws-echo: no 'ws' module; install Debian's node-ws " +
                '(scripts/install-deps.sh --bench-refs)');
  process.exit(2);
};
const { WebSocketServer } = loadWs();

const args = process.argv.slice(2);
if (args.length === 1 && args[0] === '--check') {
  process.exit(0);
}
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : undefined;
};
const cert = option('--cert');
const key = option('--key');
if ((cert === undefined) !== (key === undefined) || args.length !== (cert ? 4 : 0)) {
  console.error('usage: server.js [--cert FILE --key FILE]');
  process.exit(2);
}
const server = cert
  ? https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) })
  : http.createServer();
const wss = new WebSocketServer({
  server,
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate: false,
  clientTracking: false,
});
wss.on('connection', (ws, request) => {
  request.socket.setNoDelay(true);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
});
server.listen(0, '127.0.0.1', () => {
  console.log((cert ? 'wss' : 'ws') + '://127.0.0.1:' + server.address().port);
});

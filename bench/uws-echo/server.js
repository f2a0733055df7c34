// uws-echo: uWebSockets (through its Node.js binding, uWS.js) as a reference
// echo server for the benchmark: bench/run --servers wsgate,qt,uws.
//
// Like qt-echo and wsgate's echo-server it listens on 127.0.0.1 on a free
// port, echoes text as text and binary as binary, and prints its URL on the
// first stdout line; with --cert FILE --key FILE it serves wss://. The
// binding's directory is taken from UWS_JS (its src/uws.js is loaded);
// docs/benchmarks.md says how to get it.
'use strict';

const path = require('path');

const root = process.env.UWS_JS;
if (!root) {
  console.error('uws-echo: set UWS_JS to the directory of the uWS.js package');
  process.exit(2);
}
const uWS = require(path.join(root, 'src', 'uws.js'));

const args = process.argv.slice(2);
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : undefined;
};
const cert = option('--cert');
const key = option('--key');
if ((cert === undefined) !== (key === undefined)) {
  console.error('usage: server.js [--cert FILE --key FILE]');
  process.exit(2);
}
const app = cert ? uWS.SSLApp({ cert_file_name: cert, key_file_name: key }) : uWS.App();
app.ws('/*', {
  compression: uWS.DISABLED,
  // The same message limit as qt-echo and bench/run's echo-server, and no
  // limit on what a slow reader may leave queued or on idle time.
  maxPayloadLength: 64 * 1024 * 1024,
  maxBackpressure: 1024 * 1024 * 1024,
  idleTimeout: 0,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary);
  },
});
app.listen('127.0.0.1', 0, (socket) => {
  if (!socket) {
    console.error('uws-echo: cannot listen on 127.0.0.1');
    process.exit(1);
  }
  console.log((cert ? 'wss' : 'ws') + '://127.0.0.1:' + uWS.us_socket_local_port(socket));
});

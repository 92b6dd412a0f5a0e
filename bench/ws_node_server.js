// bench/ws_node_server.js — a WebSocket echo server on Node's `ws` package, the peer of
// cgnet's examples/ws_echo in `bench/run.sh ws`: every message comes back as it came
// (text as text, binary as binary), permessage-deflate off, one process (Node runs the
// server on one thread).
//
//   NODE_PATH=$(npm root -g) node bench/ws_node_server.js [--host H] [--port P]
//
// Port 0 (the default) lets the kernel pick one, named on the first stdout line:
// "ws_node_server: listening on tcp://127.0.0.1:41234 (ws 8.x)". SIGINT or SIGTERM
// stops it.
'use strict';

const { WebSocketServer } = require('ws');

function parseArgs(argv) {
  const out = { host: '127.0.0.1', port: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if ((a === '--host' || a === '--port') && v === undefined) {
      console.error(`ws_node_server: ${a} needs a value`);
      process.exit(2);
    }
    if (a === '--host') {
      out.host = v;
      i++;
    } else if (a === '--port') {
      const p = Number(v);
      if (!Number.isInteger(p) || p < 0 || p > 65535) {
        console.error(`ws_node_server: --port: '${v}' is not a port (0..65535)`);
        process.exit(2);
      }
      out.port = p;
      i++;
    } else {
      console.error(`ws_node_server: unknown argument '${a}'`);
      process.exit(2);
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const wss = new WebSocketServer({
  host: args.host,
  port: args.port,
  backlog: 1024, // as cgnet's default listen backlog
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
  clientTracking: false,
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => ws.terminate());
});

wss.on('listening', () => {
  const a = wss.address();
  const version = require('ws/package.json').version;
  process.stdout.write(`ws_node_server: listening on tcp://${a.address}:${a.port} (ws ${version})\n`);
});

wss.on('error', (err) => {
  console.error(`ws_node_server: ${err.message}`);
  process.exit(1);
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));

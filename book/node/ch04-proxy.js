// Chapter 4 in Node.js: the master listens on the public port and pipes each
// client to a worker's private port, in turn: two sockets in the master for
// every client. (bench/run.sh measures this program beside chapter 4.)
//   PORT=8000 WORKERS=2 node book/node/ch04-proxy.js
const http = require('node:http');
const net = require('node:net');
const { log, port, workers, forkWorkers } = require('./common');

const id = process.env.CLUSTER_WORKER_ID;

if (id === undefined) {
  const upstreams = []; // the workers' private ports, as they report them
  let turn = 0;
  forkWorkers(__filename, (child, n) => child.on('message', (privatePort) => {
    log(`worker ${n} serves on private address 127.0.0.1:${privatePort}`);
    upstreams.push(privatePort);
    if (upstreams.length === workers) listenInPublic();
  }));
  const listenInPublic = () => {
    // allowHalfOpen: when one side stops sending, keep the other way open.
    const proxy = net.createServer({ allowHalfOpen: true }, (client) => {
      const upstream = net.connect({
        port: upstreams[turn++ % upstreams.length],
        host: '127.0.0.1',
        allowHalfOpen: true,
      });
      client.pipe(upstream).pipe(client); // two sockets for one client
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    proxy.listen(port, '127.0.0.1', () => {
      const address = `127.0.0.1:${proxy.address().port}`;
      log(`listening on http://${address} ` +
        `(the master proxies to ${workers} workers)`);
    });
  };
  process.on('SIGTERM', () => process.exit(0));
} else {
  const hello = `Hello world by ${process.pid} (worker ${id})\n`;
  const server = http.createServer((req, res) => res.end(hello));
  // Port 0: a private port the kernel picks; the master learns it over IPC.
  server.listen(0, '127.0.0.1', () => process.send(server.address().port));
}

// Chapter 10 in Node.js: every worker listens on the port itself, on a socket
// of its own. In a cluster worker, listen({ exclusive: true }) does not ask
// the master (no queryServer): the worker binds and listens like any process.
// reusePort: true asks for SO_REUSEPORT, which net.Server.listen() supports
// from Node 22.12 and 23.1 on. An older Node ignores the option, so the first
// worker's bind wins and every other worker dies of EADDRINUSE: chapter 3.
//   PORT=8000 WORKERS=2 node book/node/ch10-reuseport.js
//   PORT=0 WORKERS=2 node book/node/ch10-reuseport.js   # any free port
const cluster = require('node:cluster');
const http = require('node:http');
const net = require('node:net');
const { log, port, workers } = require('./common');

if (cluster.isPrimary) {
  // With PORT=0 each worker would bind a different free port, so the master
  // asks for one, lets it go, and hands the number to every worker.
  const probe = net.createServer().listen(port, '127.0.0.1', () => {
    const shared = probe.address().port;
    probe.close(() => {
      log(`master started (Node ${process.version}); every worker ` +
        `listens on 127.0.0.1:${shared} itself`);
      let listening = 0;
      cluster.on('listening', () => {
        if (++listening < workers) return;
        log(`listening on http://127.0.0.1:${shared} ` +
          `(${workers} workers, a socket each)`);
      });
      cluster.on('exit', (worker, code, signal) => log(
        `worker ${worker.id} (pid ${worker.process.pid}) ` +
        `exited (${signal ?? code})`));
      for (let n = 0; n < workers; n++) {
        const worker = cluster.fork({ PORT: String(shared) });
        log(`forked worker ${worker.id} (pid ${worker.process.pid})`);
      }
    });
  });
} else {
  const hello = `Hello world by ${process.pid} (worker ${cluster.worker.id})\n`;
  const server = http.createServer((req, res) => res.end(hello));
  server.on('error', (err) => {
    log(`Error: ${err.message} (Node ${process.version}; reusePort ` +
      'needs 22.12 or 23.1 and later)');
    process.exit(1);
  });
  const options = { port, host: '127.0.0.1', exclusive: true, reusePort: true };
  server.listen(options, () => log(
    `listening on http://127.0.0.1:${port} (a socket of its own)`));
}

// Chapter 3 in Node.js, without the cluster module: every worker calls
// listen() on the same port. The first bind wins; the others die of
// EADDRINUSE, which Node prints itself.
//   WORKERS=3 node book/node/ch03-eaddrinuse.js          # port 8000
//   PORT=0 WORKERS=3 node book/node/ch03-eaddrinuse.js   # any free port
const http = require('node:http');
const net = require('node:net');
const { log, port, forkWorkers } = require('./common');

const id = process.env.CLUSTER_WORKER_ID;

if (id === undefined) {
  // With PORT=0 every worker would get a different free port and nothing
  // would clash, so the master asks the kernel for one free port, lets it
  // go, and hands out that number (PORT=8000 is handed out as it is).
  const probe = net.createServer().listen(port, '127.0.0.1', () => {
    const shared = probe.address().port;
    probe.close(() => {
      log(`master started; every worker will bind 127.0.0.1:${shared}`);
      forkWorkers(__filename, (child, n) => child.on('exit', (code) =>
        log(`worker ${n} (pid ${child.pid}) exited with code ${code}`)),
      { PORT: String(shared) });
    });
  });
} else {
  // No 'error' handler: a loser's error is uncaught, so Node prints it and
  // the worker exits with code 1.
  const hello = `Hello world by ${process.pid} (worker ${id})\n`;
  http.createServer((req, res) => res.end(hello))
    .listen(port, '127.0.0.1',
      () => log(`listening on http://127.0.0.1:${port}`));
}

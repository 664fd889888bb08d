// Chapter 1 in Node.js: a master forks one worker per CPU, and each worker
// serves HTTP on a port of its own, drawn at random. This is the cluster
// module's trick done by hand: the master starts this same file again
// (forkWorkers, in common.js) and tells each copy in an environment variable
// that it is a worker.
//   WORKERS=2 node book/node/ch01-fork.js
const http = require('node:http');
const { log, workers, forkWorkers } = require('./common');

const id = process.env.CLUSTER_WORKER_ID;

if (id === undefined) {
  // The master: start one copy of this file per worker, then only watch.
  log(`master started; forking ${workers} workers`);
  forkWorkers(__filename, (child, n) => child.on('exit', (code, signal) =>
    log(`worker ${n} exited (${signal ?? code})`)));
} else {
  // A worker: serve on a random port from 10000 to 29999, and draw again
  // if that port is taken.
  const hello = `Hello world by ${process.pid} (worker ${id})\n`;
  const server = http.createServer((req, res) => res.end(hello));
  const listenSomewhere = () => {
    const port = 10000 + Math.floor(Math.random() * 20000);
    server.listen(port, '127.0.0.1');
  };
  server.on('listening', () =>
    log(`listening on http://127.0.0.1:${server.address().port}`));
  server.on('error', (err) => {
    if (err.code !== 'EADDRINUSE') throw err;
    listenSomewhere();
  });
  listenSomewhere();
}

// Chapter 1 in Node.js: a master forks one worker per CPU, and each worker
// serves HTTP on a port of its own, drawn at random. This is the cluster
// module's trick done by hand: the master starts this same file again and
// tells the copy in an environment variable that it is a worker (the cluster
// module's variable is NODE_UNIQUE_ID).
//   WORKERS=2 node book/node/ch01-fork.js
const { fork } = require('node:child_process');
const http = require('node:http');
const { log, workers } = require('./common');

const id = process.env.CLUSTER_WORKER_ID;

if (id === undefined) {
  // The master: start one copy of this file per worker, then only watch.
  log(`master started; forking ${workers} workers`);
  for (let n = 1; n <= workers; n++) {
    const child = fork(__filename, process.argv.slice(2), {
      env: { ...process.env, CLUSTER_WORKER_ID: String(n) },
    });
    log(`forked worker ${n} (pid ${child.pid})`);
    child.on('exit', (code, signal) =>
      log(`worker ${n} exited (${signal ?? code})`));
  }
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

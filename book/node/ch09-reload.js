// Chapter 9 in Node.js: the articles' rolling restart on SIGUSR2. One worker at
// a time: disconnect it; when it has exited, fork its replacement; when that
// one listens, the next worker's turn comes. A SIGUSR2 during a reload is
// refused, a guard the articles' version does not have.
//   PORT=8000 WORKERS=2 node book/node/ch09-reload.js
//   kill -USR2 <master pid>; curl localhost:8000/version
const cluster = require('node:cluster');
const http = require('node:http');
const { log, port, workers } = require('./common');

// Edit it, send SIGUSR2, and the new workers answer with the new text:
// cluster.fork() reads the program from disk again.
const VERSION = 'v1';

if (cluster.isPrimary) {
  const fork = () => {
    const worker = cluster.fork();
    log(`forked worker ${worker.id} (pid ${worker.process.pid})`);
    return worker;
  };
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    if (++listening === workers) {
      log(`listening on http://${address.address}:${address.port} ` +
        `(${workers} workers)`);
    }
  });
  const exited = (worker, code, signal) => log(
    `worker ${worker.id} (pid ${worker.process.pid}) exited (${signal ?? code})`);
  cluster.on('exit', (worker, code, signal) => {
    if (!worker.exitedAfterDisconnect) exited(worker, code, signal);
  });
  for (let n = 0; n < workers; n++) fork();

  let reloading = false;
  process.on('SIGUSR2', () => {
    if (reloading) return log('SIGUSR2 during a reload: refused');
    reloading = true;
    const began = Date.now();
    const old = Object.values(cluster.workers);
    log(`SIGUSR2: replacing ${old.length} workers one at a time`);
    const turn = (i) => {
      if (i === old.length) {
        reloading = false;
        return log(`reload done: ${old.length} workers replaced in ` +
          `${Date.now() - began} ms`);
      }
      // The old worker goes first: until its replacement listens, one worker
      // fewer serves. (A worker that crashes instead never brings the next turn.)
      old[i].once('exit', (code, signal) => {
        exited(old[i], code, signal);
        if (old[i].exitedAfterDisconnect) fork().once('listening', () => turn(i + 1));
      });
      old[i].disconnect();
    };
    turn(0);
  });
} else {
  const id = cluster.worker.id;
  http.createServer((req, res) => {
    if (req.url === '/version') {
      return res.end(`${VERSION} by ${process.pid} (worker ${id})\n`);
    }
    res.end(`Hello world by ${process.pid} (worker ${id})\n`);
  }).listen(port, '127.0.0.1');
}

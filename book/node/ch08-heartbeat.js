// Chapter 8 in Node.js: the articles' heartbeat. The master pings every worker;
// one that leaves 3 pings in a row unanswered is a zombie: SIGTERM, then
// SIGKILL, and a new worker.
//   PORT=8000 WORKERS=2 HEARTBEAT_MS=1000 node book/node/ch08-heartbeat.js
//   curl localhost:8000/hang          # while (true) {} in a handler
//   curl 'localhost:8000/sleep?ms=1500'
const cluster = require('node:cluster');
const http = require('node:http');
const { log, port, workers } = require('./common');

const HEARTBEAT_MS = Number(process.env.HEARTBEAT_MS ?? 1000);
const KILL_TIMEOUT = Number(process.env.KILL_TIMEOUT ?? 5000);
const MISSED = 3;

if (cluster.isPrimary) {
  const start = () => {
    const worker = cluster.fork();
    log(`forked worker ${worker.id} (pid ${worker.process.pid})`);
    // Judged from the moment it serves: one still starting has no loop to answer from.
    let unanswered = 0;
    let timer;
    worker.once('listening', () => { timer = setInterval(beat, HEARTBEAT_MS); });
    const beat = () => {
      if (unanswered >= MISSED) {
        log(`worker ${worker.id} (pid ${worker.process.pid}) is a zombie: ` +
          `its last ${MISSED} pings went unanswered`);
        clearInterval(timer);
        worker.process.kill('SIGTERM');
        setTimeout(() => worker.process.kill('SIGKILL'), KILL_TIMEOUT).unref();
        return;
      }
      if (unanswered > 0) log(`worker ${worker.id} missed a heartbeat`);
      unanswered++;
      worker.send({ cmd: 'ping' });
    };
    worker.on('message', (message) => {
      if (message.cmd === 'pong') unanswered = 0;
    });
    worker.on('exit', (code, signal) => {
      clearInterval(timer);
      log(`worker ${worker.id} (pid ${worker.process.pid}) exited ` +
        `(${signal ?? code}); starting another`);
      start();
    });
  };
  for (let n = 0; n < workers; n++) start();
  cluster.on('listening', (worker, address) => {
    if (worker.id === workers) {
      log(`listening on http://${address.address}:${address.port} ` +
        `(${workers} workers)`);
    }
  });
} else {
  const id = cluster.worker.id;
  // Answered on the event loop that serves requests: a stuck handler stops it.
  process.on('message', (message) => {
    if (message.cmd === 'ping') process.send({ cmd: 'pong' });
  });
  http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/hang') {
      log('/hang: spinning forever');
      for (;;);
    }
    if (url.pathname === '/sleep') {
      // Blocks this thread, as a long synchronous computation would.
      const ms = Math.min(Number(url.searchParams.get('ms')) || 0, 60000);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      return res.end(`worker ${id} (pid ${process.pid}) slept ${ms} ms\n`);
    }
    res.end(`Hello world by ${process.pid} (worker ${id})\n`);
  }).listen(port, '127.0.0.1');
}

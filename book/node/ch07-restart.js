// Chapter 7 in Node.js: a cluster master that keeps its workers alive.
//   PORT=8000 WORKERS=2 node book/node/ch07-restart.js
//   curl localhost:8000/crash   # a throw in a handler: the worker leaves gracefully
//   curl localhost:8000/exit    # process.exit(1): a crash, restarted
//   MAX_RSS=100 ... then curl 'localhost:8000/leak?mb=150'
// KILL_TIMEOUT (ms, default 5000), MIN_UPTIME (ms, 1000), MAX_RESTARTS (10).
const cluster = require('node:cluster');
const http = require('node:http');
const { log, port, workers } = require('./common');

const env = (name, fallback) => Number(process.env[name] ?? fallback);
const KILL_TIMEOUT = env('KILL_TIMEOUT', 5000);
const MIN_UPTIME = env('MIN_UPTIME', 1000);
const MAX_RESTARTS = env('MAX_RESTARTS', 10);
const MAX_RSS = env('MAX_RSS', 0) * 1024 * 1024;

if (cluster.isPrimary) {
  // One entry per slot: the wait before its next restart, and its crashes in a row.
  const slots = new Map();
  const start = (slot) => {
    const worker = cluster.fork({ CLUSTER_SLOT: slot });
    Object.assign(worker, { slot, since: Date.now() });
    log(`forked worker ${worker.id} (pid ${worker.process.pid})`);
    worker.on('message', (message) => {
      if (message.cmd !== 'leaving') return;
      // The articles' "suicide" message: replace it now, kill it if it lingers.
      log(`worker ${worker.id} is leaving (${message.why})`);
      worker.leaving = true;
      start(slot);
      setTimeout(() => worker.process.kill('SIGKILL'), KILL_TIMEOUT).unref();
    });
  };
  for (let slot = 1; slot <= workers; slot++) {
    slots.set(slot, { delay: 0, crashes: 0 });
    start(slot);
  }

  cluster.on('exit', (worker, code, signal) => {
    log(`worker ${worker.id} (pid ${worker.process.pid}) exited (${signal ?? code})` +
      (worker.exitedAfterDisconnect ? ', after disconnect' : ''));
    if (worker.leaving || stopping) return;  // planned: nothing to do
    const s = slots.get(worker.slot);
    const up = Date.now() - worker.since;
    if (up >= 30000) s.delay = 0;  // it proved itself: start over
    s.crashes = up < MIN_UPTIME ? s.crashes + 1 : 0;
    if (s.crashes > MAX_RESTARTS) {
      log(`slot ${worker.slot} is given up`);
      return;
    }
    const after = s.delay;
    s.delay = Math.min(after === 0 ? 100 : after * 1.5, 15000);
    log(`slot ${worker.slot}: restart in ${after} ms`);
    setTimeout(() => start(worker.slot), after);
  });

  cluster.on('listening', (worker, address) => {
    if (worker.id === workers) {
      log(`listening on http://${address.address}:${address.port} ` +
        `(${workers} workers)`);
    }
  });

  // Ctrl-C or SIGTERM: every worker closes its server and finishes what it holds.
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    // (disconnect() takes a worker out of cluster.workers at once: count exits.)
    let left = Object.keys(cluster.workers).length;
    log('stopping: every worker drains');
    for (const worker of Object.values(cluster.workers)) worker.disconnect();
    setTimeout(() => process.exit(0), KILL_TIMEOUT).unref();
    cluster.on('exit', () => --left === 0 && process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
} else {
  const id = cluster.worker.id;
  const leaked = [];
  let leaving = false;
  // Tell the master first, then close the server (no new connections; idle
  // kept-alive ones are closed), and exit once the open ones are done.
  const leave = (why) => {
    if (leaving) return;
    leaving = true;
    log(`leaving (${why}): telling the master first`);
    process.send({ cmd: 'leaving', why });
    process.exitCode = 1;
    cluster.worker.disconnect();
  };
  process.on('uncaughtException', (err) => leave(`uncaught: ${err.message}`));

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    try {
      if (url.pathname === '/crash') throw new Error('/crash: a bug in a handler');
      if (url.pathname === '/exit') process.exit(1);
      if (url.pathname === '/leak') {
        const mb = Math.min(Number(url.searchParams.get('mb')) || 0, 1024);
        leaked.push(Buffer.alloc(mb * 1024 * 1024, 1));
        const rss = process.memoryUsage().rss >> 20;
        return res.end(`worker ${id} (pid ${process.pid}) leaked ${mb} MB; ` +
          `RSS ${rss} MB\n`);
      }
      res.end(`Hello world by ${process.pid} (worker ${id})\n`);
    } catch (err) {
      // As our Rust server does with a panic: a 500 for this request, then leave.
      res.statusCode = 500;
      res.setHeader('Connection', 'close');
      res.end('the handler threw\n');
      leave(`its handler threw: ${err.message}`);
    }
  });
  server.listen(port, '127.0.0.1');

  // The articles' memory check.
  if (MAX_RSS > 0) {
    setInterval(() => {
      const rss = process.memoryUsage().rss;
      if (rss > MAX_RSS) leave(`RSS ${rss >> 20} MB is over ${MAX_RSS >> 20} MB`);
    }, 1000).unref();
  }
}

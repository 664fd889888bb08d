// The cluster module itself. Every worker runs the two lines a Node tutorial
// shows, createServer() and listen(PORT). In a worker, listen() binds
// nothing: it asks the master (a queryServer message), and the master decides
// who accepts. (bench/run.sh measures this program in both modes.)
//   PORT=8000 WORKERS=2 node book/node/cluster.js     # round-robin, chapter 6
//   NODE_CLUSTER_SCHED_POLICY=none node book/node/cluster.js   # chapter 5
//   PORT=8000,8001 node book/node/cluster.js   # every worker listens on both
const cluster = require('node:cluster');
const http = require('node:http');
const { log, workers } = require('./common');

const ports = (process.env.PORT ?? '8000').split(',').map(Number);

if (cluster.isPrimary) {
  const policy = cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'none';
  log(`master started (scheduling policy ${policy}); ` +
    `forking ${workers} workers`);
  for (let n = 0; n < workers; n++) {
    const worker = cluster.fork();
    log(`forked worker ${worker.id} (pid ${worker.process.pid})`);
  }
  // 'listening' comes once per worker and per listen() call, when the master
  // has answered the worker's queryServer and the worker's server is up.
  const addresses = new Set();
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    addresses.add(`${address.address}:${address.port}`);
    if (++listening < workers * ports.length) return;
    for (const a of addresses) {
      log(`listening on http://${a} (${workers} workers, policy ${policy})`);
    }
  });
  cluster.on('exit', (worker, code, signal) => log(
    `worker ${worker.id} (pid ${worker.process.pid}) ` +
    `exited (${signal ?? code})`));
} else {
  const hello = `Hello world by ${process.pid} (worker ${cluster.worker.id})\n`;
  for (const port of ports) {
    http.createServer((req, res) => res.end(hello)).listen(port, '127.0.0.1');
  }
}

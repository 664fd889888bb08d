// The Node.js side of the benchmark: the cluster module, in either of its two modes.
//   NODE_CLUSTER_SCHED_POLICY=rr    the master accepts and hands out connections (method 1)
//   NODE_CLUSTER_SCHED_POLICY=none  the workers share the listening socket (method 2)
// Usage: PORT=8000 WORKERS=2 node cluster.js
const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.env.PORT || 8000);
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  let online = 0;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('listening', () => {
    if (++online === workers) console.log(`listening on http://127.0.0.1:${port}`);
  });
} else {
  http
    .createServer((req, res) => {
      res.end(`Hello world by ${process.pid} (worker ${cluster.worker.id})\n`);
    })
    .listen(port, '127.0.0.1');
}

// The articles' cluster program, as a Node tutorial writes it: the primary forks
// one worker per CPU, and each worker serves HTTP on port 8000. Two changes: the
// port comes from PORT when it is set (chapter 11's primary sets it, as most
// hosts do), and the answer names its worker, so you can see who answered.
//   node book/node/app.js                                   # Node's own primary
//   ch11-node-primary --workers 2 -- node book/node/app.js  # ours
const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

if (cluster.isPrimary) {
  const workers = Number(process.env.WORKERS ?? os.availableParallelism());
  for (let i = 0; i < workers; i++) {
    cluster.fork();
  }
} else {
  http.createServer((req, res) => {
    res.end(`Hello world by ${process.pid} (worker ${cluster.worker.id})\n`);
  }).listen(process.env.PORT ?? 8000);
}

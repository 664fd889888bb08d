// Chapter 2 in Node.js: chapter 1's program, plus a conversation. Every child
// that child_process.fork() starts has an IPC channel to its parent: the
// worker says `<port> ready`, and the master answers `ok`.
//   WORKERS=2 node book/node/ch02-ipc.js
const http = require('node:http');
const { log, workers, forkWorkers } = require('./common');

const id = process.env.CLUSTER_WORKER_ID;

if (id === undefined) {
  log(`master started; forking ${workers} workers`);
  forkWorkers(__filename, (child, n) => {
    child.on('message', (msg) => { // what the worker sent
      log(`message from worker ${n}: ${msg}`);
      if (msg.endsWith(' ready')) child.send('ok');
    });
    child.on('exit', (code, signal) =>
      log(`worker ${n} exited (${signal ?? code})`));
  });
} else {
  process.on('message', (msg) => log(`message from master: ${msg}`));
  const hello = `Hello world by ${process.pid} (worker ${id})\n`;
  const server = http.createServer((req, res) => res.end(hello));
  // Port 0: the kernel picks a free port, so two workers never clash.
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    log(`listening on http://127.0.0.1:${port}`);
    process.send(`${port} ready`); // tell the master
  });
}

// Chapter 5 in Node.js, the articles' experiment with child_process: the
// master listens, sends the listening socket to every worker with the message
// 'server', and closes its own copy. The workers accept on the one shared
// socket and race for each connection.
//   PORT=8000 WORKERS=2 node book/node/ch05-send-server.js
const http = require('node:http');
const net = require('node:net');
const { log, port, workers, forkWorkers } = require('./common');

const id = process.env.CLUSTER_WORKER_ID;

if (id === undefined) {
  const children = forkWorkers(__filename);
  const server = net.createServer();
  server.listen(port, '127.0.0.1', () => {
    const address = `127.0.0.1:${server.address().port}`;
    let sent = 0;
    let accepting = 0;
    for (const [i, child] of children.entries()) {
      child.on('message', (msg) => {
        if (msg !== 'accepting') return;
        log(`worker ${i + 1} accepts on the shared socket`);
        if (++accepting < workers) return;
        log(`listening on http://${address} (shared by ${workers} workers; ` +
          'the master holds no listening socket)');
      });
      // The fd rides along with the message 'server'. The callback runs once
      // the message is written: the fd is in the channel then, and closing
      // ours cannot lose it. Node never closes a sent server for us.
      child.send('server', server, () => {
        if (++sent < workers) return;
        server.close(); // ours goes; the workers' fds keep the socket open
        log(`sent the listening socket ${address} to ${workers} workers ` +
          'and closed ours');
      });
    }
  });
  process.on('SIGTERM', () => process.exit(0));
} else {
  const hello = `Hello world by ${process.pid} (worker ${id})\n`;
  const app = http.createServer((req, res) => res.end(hello));
  process.on('message', (msg, listener) => {
    if (msg !== 'server') return;
    // `listener` is a net.Server that Node built here, in the worker, around
    // the fd that came with the message: the master's listening socket,
    // under a new number.
    listener.on('connection', (socket) => app.emit('connection', socket));
    process.send('accepting');
  });
}

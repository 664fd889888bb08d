// The prologue's event loop, the Node.js way: one process, one thread running all the
// JavaScript, every connection served by callbacks.
//   PORT=8000 node book/node/ch00-event-loop.js     (PORT=0 picks a free port)
//   curl http://127.0.0.1:8000/         answers at once
//   curl http://127.0.0.1:8000/block    keeps the only thread busy for 3 seconds:
//                                       meanwhile nobody else gets an answer
const http = require('node:http');

const hello = `Hello world by ${process.pid} (worker 0)\n`;

const server = http.createServer((req, res) => {
  if (req.url === '/block') {
    const until = Date.now() + 3000;
    while (Date.now() < until) {} // CPU work: the loop cannot run anything else
  }
  res.end(hello);
});

// Keep an idle connection open for a minute (Node's default is 5 s): bench/models.sh
// opens thousands of connections before it starts loading them.
server.keepAliveTimeout = 60_000;

server.listen(Number(process.env.PORT ?? 8000), '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port} (pid ${process.pid})`);
});

// The Node.js side of the benchmark for chapter 4: a master that listens on the public
// port and pipes every connection to a worker on a private port of its own.
// Usage: PORT=8000 WORKERS=2 node proxy.js
const { fork } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');

if (process.env.PROXY_WORKER) {
  const server = http.createServer((req, res) => {
    res.end(`Hello world by ${process.pid} (worker ${process.env.PROXY_WORKER})\n`);
  });
  server.listen(0, '127.0.0.1', () => process.send(server.address().port));
} else {
  const port = Number(process.env.PORT || 8000);
  const workers = Number(process.env.WORKERS || 2);
  const upstreams = [];
  let turn = 0;
  for (let i = 1; i <= workers; i++) {
    const child = fork(__filename, [], { env: { ...process.env, PROXY_WORKER: String(i) } });
    child.on('message', (upstream) => {
      upstreams.push(upstream);
      if (upstreams.length === workers) {
        net
          .createServer((client) => {
            const upstream = net.connect(upstreams[turn++ % upstreams.length], '127.0.0.1');
            client.pipe(upstream).pipe(client);
            client.on('error', () => upstream.destroy());
            upstream.on('error', () => client.destroy());
          })
          .listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${port}`));
      }
    });
  }
  process.on('SIGTERM', () => process.exit(0));
}

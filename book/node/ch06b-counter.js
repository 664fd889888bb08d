// Chapter 6b in Node.js: a page counter in a cluster worker. With STATE=local
// each worker keeps `count` in its own memory, and every worker counts on its
// own. With STATE=master the count lives in the master: a worker asks over IPC
// ('incr'), and answers when the master replies ('count N').
//   STATE=master PORT=8000 WORKERS=2 node book/node/ch06b-counter.js
const cluster = require('node:cluster');
const http = require('node:http');
const { log, port, workers } = require('./common');

const state = process.env.STATE ?? 'local';

if (cluster.isPrimary) {
  let count = 0; // STATE=master: the one count, in the master
  for (let n = 0; n < workers; n++) cluster.fork();
  cluster.on('message', (worker, msg) => {
    if (msg === 'incr') worker.send(`count ${++count}`);
  });
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    if (++listening === workers) {
      log(`listening on http://${address.address}:${address.port} (STATE=${state})`);
    }
  });
} else {
  const me = `${process.pid} (worker ${cluster.worker.id})`;
  let count = 0; // STATE=local: this worker's own copy
  // STATE=master: the answers waiting for the master's replies, oldest first.
  // Replies come back in the order the questions went out.
  const waiting = [];
  process.on('message', (msg) => {
    if (msg.startsWith('count ')) waiting.shift()(msg.slice(6));
  });
  http.createServer((req, res) => {
    const answer = (n) => res.end(`count ${n} by ${me}\n`);
    if (req.url !== '/count') return res.end(`Hello world by ${me}\n`);
    if (state === 'local') return answer(++count);
    waiting.push(answer);
    process.send('incr'); // the event loop goes on; the answer comes later
  }).listen(port, '127.0.0.1');
}

// What every program in this folder shares, as the Rust chapters share the
// `shared` crate: the log line, the settings a person, a test or the
// benchmark passes in, and chapter 1's way of starting workers.
const { fork } = require('node:child_process');
const cluster = require('node:cluster');
const os = require('node:os');

// Who is speaking: `master`, or `worker N`. A worker we fork by hand finds N
// in CLUSTER_WORKER_ID; one that cluster.fork() started, in cluster.worker.id.
function role() {
  const id = process.env.CLUSTER_WORKER_ID ?? cluster.worker?.id;
  return id === undefined ? 'master' : `worker ${id}`;
}

// One line per event, in the Rust chapters' shape (UTC time, role, pid):
//   12:00:01.234 master[4121] forked worker 2 (pid 4125)
function log(text) {
  const clock = new Date().toISOString().slice(11, 23);
  console.log(`${clock} ${role()}[${process.pid}] ${text}`);
}

// PORT=8000 by default; PORT=0 lets the kernel pick a free port. WORKERS is
// one per CPU by default, like the Rust chapters' --workers.
const port = Number(process.env.PORT ?? 8000);
const workers = Number(process.env.WORKERS ?? os.availableParallelism());

// The master's half of chapter 1: run `file` (the program itself) again once
// per worker, telling each copy its number in CLUSTER_WORKER_ID, as the
// cluster module does with NODE_UNIQUE_ID. `setup(child, n)` adds what a
// chapter needs to each child; `env` adds variables. Returns the children.
function forkWorkers(file, setup = () => {}, env = {}) {
  const children = [];
  for (let n = 1; n <= workers; n++) {
    const child = fork(file, [], {
      env: { ...process.env, ...env, CLUSTER_WORKER_ID: String(n) },
    });
    log(`forked worker ${n} (pid ${child.pid})`);
    setup(child, n);
    children.push(child);
  }
  return children;
}

module.exports = { log, port, workers, forkWorkers };

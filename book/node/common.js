// What every program in this folder shares, as the Rust chapters share the
// `shared` crate: the log line, and the settings a person, a test or the
// benchmark passes in.
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

module.exports = { log, port, workers };

// The four ways child_process starts a child, one after the other, each
// printing what it got. examples/four_ways.rs in chapter 1's crate does the
// same with Rust's std::process::Command.
//   node book/node/ch01-four-ways.js
const { spawn, exec, execFile, fork } = require('node:child_process');
const readline = require('node:readline');

// ANCHOR: spawn
// No shell; the child's stdout is a stream, read while it runs.
function viaSpawn(next) {
  const child = spawn('seq', ['3']);
  readline.createInterface({ input: child.stdout })
    .on('line', (line) => console.log(`spawn:    read "${line}" while seq runs`));
  child.on('close', (code) => { console.log(`spawn:    exit code ${code}`); next(); });
}
// ANCHOR_END: spawn

// ANCHOR: exec
// One string, run by /bin/sh -c; the output comes whole, once it exits.
function viaExec(next) {
  exec('echo one two three | wc -w', (err, stdout) => {
    console.log(`exec:     "${stdout.trim()}", error ${err}`);
    next();
  });
}
// ANCHOR_END: exec

// ANCHOR: exec_file
// The program and its arguments, no shell; the output comes whole.
function viaExecFile(next) {
  execFile('echo', ['one two three | wc -w'], (err, stdout) => {
    console.log(`execFile: "${stdout.trim()}", error ${err}`);
    next();
  });
}
// ANCHOR_END: exec_file

// ANCHOR: fork
// This same file, in a new node, with an IPC channel to it.
function viaFork(next) {
  const child = fork(__filename);
  child.on('message', (text) => console.log(`fork:     the child says: ${text}`));
  child.on('exit', (code) => { console.log(`fork:     exit code ${code}`); next(); });
}
// ANCHOR_END: fork

if (process.send === undefined) {
  viaSpawn(() => viaExec(() => viaExecFile(() => viaFork(() => {}))));
} else {
  // The copy that fork() started: it alone has process.send, because it
  // alone has an IPC channel to its parent.
  process.send(`I am pid ${process.pid}, started by pid ${process.ppid}`);
  process.disconnect();
}

//! What `/proc` says about a server: its processes and threads, their memory, and how
//! often the kernel switched them off a CPU.

use std::collections::HashMap;
use std::fs;

/// A look at a server's whole process tree at one moment.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Processes in the tree (the server and every descendant).
    pub processes: usize,
    /// Threads in all of them.
    pub threads: usize,
    /// Sum of `VmRSS` over the processes, in KiB. Pages shared between processes (a
    /// forked child's copy-on-write pages) are counted once per process.
    pub rss_kib: u64,
    /// Sum of `Pss` (from `smaps_rollup`) in KiB, when asked for: each shared page split
    /// between the processes sharing it, so the sum is what the tree really uses.
    pub pss_kib: u64,
    /// Voluntary plus involuntary context switches so far, per thread (`(pid, tid)`).
    pub switches: HashMap<(u32, u32), u64>,
}

impl Sample {
    /// Context switches between `earlier` and this sample, over the threads alive now.
    /// A thread that ended in between takes its count with it; the benchmark's threads
    /// and processes live as long as their connections, which outlast the window.
    pub fn switches_since(&self, earlier: &Sample) -> u64 {
        self.switches
            .iter()
            .map(|(task, n)| n.saturating_sub(earlier.switches.get(task).copied().unwrap_or(0)))
            .sum()
    }
}

/// Every process whose ancestry leads to `root`, `root` first, from the kernel's list of
/// each thread's children (`/proc/<pid>/task/<tid>/children`): a few reads, rather than
/// one per process on the machine.
pub fn tree(root: u32) -> Vec<u32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let pid = found[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Ok(list) = fs::read_to_string(task.path().join("children")) {
                    found.extend(
                        list.split_whitespace()
                            .filter_map(|n| n.parse::<u32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    found
}

/// Samples the tree under `root`; with `pss`, also reads each process's `smaps_rollup`,
/// which costs more.
pub fn sample(root: u32, pss: bool) -> Sample {
    let mut sample = Sample::default();
    for pid in tree(root) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue; // it exited meanwhile
        };
        sample.processes += 1;
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(status) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
                continue;
            };
            sample.threads += 1;
            let switches = field(&status, "voluntary_ctxt_switches:")
                + field(&status, "nonvoluntary_ctxt_switches:");
            sample.switches.insert((pid, tid), switches);
            if tid == pid {
                sample.rss_kib += field(&status, "VmRSS:");
            }
        }
        if pss {
            if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                sample.pss_kib += field(&rollup, "Pss:");
            }
        }
    }
    sample
}

/// The number after `name` at the start of a line of a `/proc` file (`VmRSS:  1234 kB`).
fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_its_own_tree() {
        let me = std::process::id();
        assert_eq!(tree(me)[0], me);
        let sample = sample(me, true);
        assert!(sample.processes >= 1 && sample.threads >= 1);
        assert!(sample.rss_kib > 0 && sample.pss_kib > 0);
        assert!(sample.switches.contains_key(&(me, me)));
    }

    #[test]
    fn reads_a_field() {
        let status = "Name:\tx\nVmRSS:\t  1234 kB\nvoluntary_ctxt_switches:\t7\n";
        assert_eq!(field(status, "VmRSS:"), 1234);
        assert_eq!(field(status, "voluntary_ctxt_switches:"), 7);
        assert_eq!(field(status, "Missing:"), 0);
    }
}

//! Chapter 1's four ways to start a child: the example `four_ways` and the Node program
//! beside it (`book/node/ch01-four-ways.js`) must still do and print what the page shows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chapter_tests::*;

/// Builds `cargo run -p ch01-random-port-fork --example four_ways`'s binary, with the
/// profile and target dir of this test, and returns its path. The harness's `binary()`
/// builds a package's binaries, not its examples.
fn four_ways() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable knows its own path");
    // target/<profile>/deps/ch01_four_ways-HASH
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let target_dir = profile_dir
        .parent()
        .unwrap_or_else(|| panic!("unexpected profile dir {}", profile_dir.display()));
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("no profile in {}", profile_dir.display()));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--quiet", "-p", "ch01-random-port-fork"])
        .args(["--example", "four_ways", "--profile"])
        // cargo calls the `dev` profile's directory `debug`.
        .arg(if profile == "debug" { "dev" } else { profile })
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null());
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {cargo:?} to build the example: {e}"));
    assert!(
        output.status.success(),
        "`cargo build -p ch01-random-port-fork --example four_ways` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let path = profile_dir.join("examples").join("four_ways");
    assert!(
        path.exists(),
        "cargo built the example but {} does not exist",
        path.display()
    );
    path
}

/// Runs `command` to its end and returns what it printed, one line per entry; fails unless
/// it exits with code 0 and prints nothing on stderr.
#[track_caller]
fn run(name: &str, command: Command) -> Vec<String> {
    let mut program = Chapter::from_command(name, command);
    let lines = program.wait_output_closed(TIMEOUT);
    let status = program.wait_exit(TIMEOUT);
    assert!(status.success(), "{name}: {status}\n{lines:#?}");
    let errors = program.wait_stderr_closed(TIMEOUT);
    assert!(errors.is_empty(), "{name} wrote to stderr: {errors:#?}");
    lines
}

/// The lines that start with `way:`, with that prefix and the padding after it cut off.
fn said<'a>(lines: &'a [String], way: &str) -> Vec<&'a str> {
    let prefix = format!("{way}:");
    lines
        .iter()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(str::trim_start)
        .collect()
}

/// `I am worker 1 (pid P), the same program started again by pid Q`: P and Q.
fn worker_pids(line: &str) -> Option<(u32, u32)> {
    let rest = line.strip_prefix("I am worker 1 (pid ")?;
    let (pid, rest) = rest.split_once(')')?;
    let parent = rest.strip_prefix(", the same program started again by pid ")?;
    Some((pid.parse().ok()?, parent.parse().ok()?))
}

#[test]
fn the_rust_example_starts_a_child_four_ways() {
    let example = four_ways();
    let mut command = Command::new(&example);
    command.env_remove(ch01_random_port_fork::spawn::WORKER_ID_VAR);
    let lines = run("four_ways", command);

    // spawn: no shell, and the lines arrive one by one from the pipe.
    assert_eq!(
        said(&lines, "spawn"),
        [
            r#"read "1" while seq runs"#,
            r#"read "2" while seq runs"#,
            r#"read "3" while seq runs"#,
            "exit status: 0",
        ],
        "{lines:#?}"
    );
    // exec: the shell ran the pipe, so wc counted three words.
    assert_eq!(
        said(&lines, "exec"),
        [r#""3", exit status: 0"#],
        "{lines:#?}"
    );
    // execFile: no shell, so `|` reached echo as a plain character.
    assert_eq!(
        said(&lines, "execFile"),
        [r#""one two three | wc -w", exit status: 0"#],
        "{lines:#?}"
    );
    // fork: spawn_worker ran this same program again, as worker 1, a child of the first.
    let fork = said(&lines, "fork");
    assert_eq!(fork.len(), 2, "{lines:#?}");
    let (pid, parent) = worker_pids(fork[0])
        .unwrap_or_else(|| panic!("not the started copy's line: {:?}", fork[0]));
    assert_ne!(pid, parent, "{lines:#?}");
    assert_eq!(fork[1], "worker 1 exit status: 0", "{lines:#?}");
}

#[test]
fn the_node_program_starts_a_child_four_ways() {
    let Some(node) = tool_or_skip("node", "book/node/ch01-four-ways.js") else {
        return;
    };
    let mut command = Command::new(node);
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/node/ch01-four-ways.js"));
    let lines = run("node ch01-four-ways.js", command);

    assert_eq!(
        said(&lines, "spawn"),
        [
            r#"read "1" while seq runs"#,
            r#"read "2" while seq runs"#,
            r#"read "3" while seq runs"#,
            "exit code 0",
        ],
        "{lines:#?}"
    );
    assert_eq!(said(&lines, "exec"), [r#""3", error null"#], "{lines:#?}");
    assert_eq!(
        said(&lines, "execFile"),
        [r#""one two three | wc -w", error null"#],
        "{lines:#?}"
    );
    // fork: the child's words came over the IPC channel that only fork() opens.
    let fork = said(&lines, "fork");
    assert_eq!(fork.len(), 2, "{lines:#?}");
    assert!(
        fork[0].starts_with("the child says: I am pid "),
        "{lines:#?}"
    );
    assert_eq!(fork[1], "exit code 0", "{lines:#?}");
}

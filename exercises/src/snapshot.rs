//! One version of the code, built and put aside: the chapter binaries its tests start and
//! the test executables, copied out of `target/`. Its tests can then run from the copies
//! after the source has changed again, which is how `verify` runs the tests of one
//! version while it builds the next.
//!
//! A test run from a snapshot is the run `check` would make, without cargo: the same test
//! executable, in the same directory, with the same libtest arguments. The harness starts
//! the snapshot's chapter binaries instead of building them (`CHAPTER_TESTS_BINARIES`, see
//! `tests/src/lib.rs`); a test that starts one the snapshot lacks fails, saying so, and
//! `verify` reports that as its own mistake, never as a test that caught something.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::check::{self, Build, Ran};
use crate::registry::TestRun;
use crate::report;
use crate::run::{self, Ended};

/// The harness's variable for the directory of prebuilt chapter binaries.
const BINARIES_VAR: &str = "CHAPTER_TESTS_BINARIES";
/// What the harness says when a test starts a binary the snapshot does not hold.
pub const NOT_BUILT: &str = "was not built for this run";

/// A test executable a cargo command is to build: the target arguments of its run
/// (`test -p chapter-tests --test ch04_proxy`), and the target's name (`ch04_proxy`).
type Wanted = (Vec<String>, String);

/// A built version, in a directory of its own.
pub struct Snapshot {
    pub dir: PathBuf,
    /// The test executables: the run's target arguments, the copy, and the directory
    /// cargo would run it in (its package's).
    tests: Vec<(Vec<String>, PathBuf, PathBuf)>,
}

/// The chapters (packages under `chapters/`) whose binaries the tests of `run` start: the
/// chapters named in the bodies of the tests it runs (those `only` names, or those its
/// filters select), or, if one of them names none (it starts its chapter through a
/// constant or a helper), every chapter named in its test file. Unit tests start none. A
/// test that starts a chapter this misses fails saying so ([`NOT_BUILT`]), and `verify`
/// reports it as its own mistake.
pub fn chapters_of(root: &Path, run: &TestRun, only: Option<&[String]>) -> Vec<String> {
    let crate::registry::Target::Test(file) = run.target else {
        return Vec::new();
    };
    if !run.is_black_box() {
        return Vec::new();
    }
    let text =
        fs::read_to_string(root.join("tests/tests").join(format!("{file}.rs"))).unwrap_or_default();
    let Ok(dir) = fs::read_dir(root.join("chapters")) else {
        return Vec::new();
    };
    let all: Vec<String> = dir
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    let named_in = |text: &str| -> BTreeSet<String> {
        all.iter()
            .filter(|name| text.contains(&format!("\"{name}\"")))
            .cloned()
            .collect()
    };
    let whole = || named_in(&text).into_iter().collect::<Vec<_>>();
    let selected: Vec<&str> = match only {
        Some(names) => names.iter().map(String::as_str).collect(),
        None if run.filters.is_empty() => return whole(),
        None => test_names(&text)
            .into_iter()
            .filter(|name| run.selects(name))
            .collect(),
    };
    let mut found = BTreeSet::new();
    for name in selected {
        match test_body(&text, name).map(named_in) {
            Some(chapters) if !chapters.is_empty() => found.extend(chapters),
            _ => return whole(),
        }
    }
    found.into_iter().collect()
}

/// The names of the `#[test]` functions in a test file.
fn test_names(text: &str) -> Vec<&str> {
    text.split("#[test]")
        .skip(1)
        .filter_map(|after| {
            let rest = &after[after.find("fn ")? + 3..];
            Some(&rest[..rest.find('(')?])
        })
        .collect()
}

/// The text of function `name` in `text`, from `fn name(` to its closing brace.
fn test_body<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("fn {name}("))?;
    let open = start + text[start..].find('{')?;
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..open + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Builds what `runs` need (the binaries of the chapters their tests start, see
/// [`chapters_of`], and each test executable) and copies it into `dest`. Each run comes
/// with the names of the tests it will run, or `None` for those its filters select.
/// Returns how the build went, and the snapshot if it built.
pub fn build(
    root: &Path,
    runs: &[(&TestRun, Option<&[String]>)],
    dest: &Path,
) -> Result<(Build, Option<Snapshot>), String> {
    let _ = fs::remove_dir_all(dest);
    let bins = dest.join("bin");
    let tests_dir = dest.join("tests");
    for dir in [&bins, &tests_dir] {
        fs::create_dir_all(dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    }
    let chapters: BTreeSet<String> = runs
        .iter()
        .flat_map(|(run, only)| chapters_of(root, run, *only))
        .collect();
    // One `cargo build` for the chapter binaries and the test files (it builds those in
    // test mode), and a `cargo test --no-run` per package whose unit tests run: cargo
    // checks what is fresh once per call, so the fewer calls the better.
    let mut build_args = vec!["build".to_string()];
    for chapter in &chapters {
        build_args.extend(["-p".to_string(), chapter.clone()]);
    }
    if !chapters.is_empty() {
        build_args.push("--bins".into());
    }
    let mut commands: Vec<(Vec<String>, Vec<Wanted>)> = Vec::new();
    let mut files: Vec<Wanted> = Vec::new();
    let mut seen = BTreeSet::new();
    for (run, _) in runs {
        let key = run.target_args();
        if !seen.insert(key.clone()) {
            continue;
        }
        match run.target {
            crate::registry::Target::Test(name) => {
                let package = ["-p".to_string(), run.package.to_string()];
                if !build_args.windows(2).any(|w| w == package) {
                    build_args.extend(package);
                }
                build_args.extend(["--test".to_string(), name.to_string()]);
                files.push((key, name.to_string()));
            }
            crate::registry::Target::Lib => {
                let args = ["test", "-p", run.package, "--lib", "--no-run"];
                let name = run.package.replace('-', "_");
                commands.push((args.map(String::from).to_vec(), vec![(key, name)]));
            }
            crate::registry::Target::Bin(name) => {
                let args = ["test", "-p", run.package, "--bin", name, "--no-run"];
                commands.push((args.map(String::from).to_vec(), vec![(key, name.into())]));
            }
        }
    }
    if build_args.len() > 1 {
        commands.insert(0, (build_args, files));
    }
    let mut stderr = String::new();
    let mut snapshot = Snapshot {
        dir: dest.to_path_buf(),
        tests: Vec::new(),
    };
    for (mut args, wants) in commands {
        args.extend([
            "-q".to_string(),
            "--message-format".into(),
            "json-render-diagnostics".into(),
        ]);
        let out = run::cargo(root, &args, None, false)?;
        stderr += &out.stderr;
        if !out.success() {
            return Ok((
                Build {
                    ok: false,
                    stopped: out.ended == Ended::Interrupted,
                    diagnostics: report::diagnostics(&stderr),
                    stderr,
                },
                None,
            ));
        }
        for artifact in out.stdout.lines().filter_map(Artifact::parse) {
            // A binary's unit tests are a `bin` too, of the same name: the test profile
            // tells them from the program the black-box tests start.
            if artifact.kind == "bin" && !artifact.test {
                if chapters.contains(&artifact.name) {
                    copy(&artifact.executable, &bins.join(&artifact.name))?;
                }
                continue;
            }
            let Some((key, _)) = wants.iter().find(|(_, name)| *name == artifact.name) else {
                continue;
            };
            let copy_to = tests_dir.join(format!("{}-{}", snapshot.tests.len(), artifact.name));
            copy(&artifact.executable, &copy_to)?;
            snapshot
                .tests
                .push((key.clone(), copy_to, artifact.package_dir.clone()));
        }
    }
    for chapter in &chapters {
        if !bins.join(chapter).exists() {
            return Err(format!("cargo built no binary for {chapter}"));
        }
    }
    Ok((
        Build {
            ok: true,
            stopped: false,
            diagnostics: report::diagnostics(&stderr),
            stderr,
        },
        Some(snapshot),
    ))
}

impl Snapshot {
    /// Runs `run`'s tests from the copies: those its filters select, or exactly the tests
    /// `only` names; with `first_failure`, stops at the first that fails.
    pub fn test(
        &self,
        run: &TestRun,
        only: Option<&[String]>,
        first_failure: bool,
    ) -> Result<Ran, String> {
        let key = run.target_args();
        let Some((_, exe, cwd)) = self.tests.iter().find(|(k, _, _)| *k == key) else {
            return Err(format!("`{}` was not built", run.command()));
        };
        let mut libtest: Vec<String> = vec!["--color".into(), "never".into()];
        let shown = match only {
            Some(names) => {
                libtest.extend(names.iter().cloned());
                libtest.push("--exact".into());
                let mut args = key.clone();
                args.push("--".into());
                args.extend(names.iter().cloned());
                args.push("--exact".into());
                format!("cargo {}", args.join(" "))
            }
            None => {
                libtest.extend(run.filters.iter().map(|f| f.to_string()));
                run.command()
            }
        };
        let mut command = Command::new(exe);
        command
            .args(&libtest)
            .current_dir(cwd)
            .env(BINARIES_VAR, self.dir.join("bin"));
        let output = run::run_until(
            command,
            &shown,
            Some(check::timeout(run)),
            false,
            first_failure,
        )?;
        Ok(Ran {
            label: run.label(),
            command: shown,
            tests: report::tests(&output.stdout),
            output,
        })
    }

    /// Deletes the copies.
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An executable cargo built, from one line of `--message-format json`.
struct Artifact {
    /// The target's name: the binary's, or the test file's.
    name: String,
    /// The target's first kind: `bin`, `test`, `lib`...
    kind: String,
    /// Built as a test executable (a library's or a binary's unit tests, a test file).
    test: bool,
    executable: PathBuf,
    /// The directory of the package's `Cargo.toml`, where cargo runs its tests.
    package_dir: PathBuf,
}

impl Artifact {
    fn parse(line: &str) -> Option<Artifact> {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            return None;
        }
        let executable = PathBuf::from(json_string(line, "executable")?);
        let manifest = PathBuf::from(json_string(line, "manifest_path")?);
        // The first "name" of an artifact message is its target's.
        let target = &line[line.find("\"target\":")?..];
        // `"kind":["bin"]`: the first string after it.
        let kinds = &target[target.find("\"kind\":[")? + 8..];
        // The profile's `"test":true`, not the target's (a target's says whether
        // `cargo test` runs it by default).
        let profile = &line[line.find("\"profile\":{")?..];
        let profile = &profile[..profile.find('}')?];
        Some(Artifact {
            name: json_string(target, "name")?,
            kind: kinds.split('"').nth(1)?.to_string(),
            test: profile.contains("\"test\":true"),
            executable,
            package_dir: manifest.parent()?.to_path_buf(),
        })
    }
}

/// The string value of the first `"key":"..."` in `json`, unescaped; `None` if there is
/// none (or its value is not a string, such as `null`).
fn json_string(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut value = String::new();
    let mut chars = json[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
}

/// Copies an executable with `cp`. Not with `fs::copy`: this process starts test runs
/// from other threads all the time, and a child forked while we held the copy open for
/// writing would keep that fd until it execs; an exec of the copy meanwhile fails with
/// "Text file busy" (ETXTBSY). `cp`'s fds are its own.
fn copy(from: &Path, to: &Path) -> Result<(), String> {
    let status = Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|err| format!("cannot run cp: {err}"))?;
    match status.success() {
        true => Ok(()),
        false => Err(format!(
            "cp {} {} failed ({status})",
            from.display(),
            to.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_executables_cargo_reports() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#chapter-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"ch04_proxy","src_path":"/w/tests/tests/ch04_proxy.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0","test":true},"features":[],"filenames":["/w/target/debug/deps/ch04_proxy-1"],"executable":"/w/target/debug/deps/ch04_proxy-1","fresh":true}"#;
        let artifact = Artifact::parse(line).expect("an executable");
        assert_eq!(artifact.name, "ch04_proxy");
        assert_eq!(artifact.kind, "test");
        assert_eq!(
            artifact.executable,
            Path::new("/w/target/debug/deps/ch04_proxy-1")
        );
        assert_eq!(artifact.package_dir, Path::new("/w/tests"));
        assert!(artifact.test);
        // A chapter's program and its binary's unit tests: both `bin`, both test targets.
        let program = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/chapters/ch10-reuseport#0.1.0","manifest_path":"/w/chapters/ch10-reuseport/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"ch10-reuseport","src_path":"/w/chapters/ch10-reuseport/src/main.rs","edition":"2021","doc":true,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/w/target/debug/ch10-reuseport"],"executable":"/w/target/debug/ch10-reuseport","fresh":true}"#;
        let program = Artifact::parse(program).expect("an executable");
        assert_eq!((program.kind.as_str(), program.test), ("bin", false));
        let units = line
            .replace(r#""kind":["test"]"#, r#""kind":["bin"]"#)
            .replace(r#""name":"ch04_proxy""#, r#""name":"ch10-reuseport""#);
        let units = Artifact::parse(&units).expect("an executable");
        assert_eq!((units.kind.as_str(), units.test), ("bin", true));
        let library = line.replace(
            r#""executable":"/w/target/debug/deps/ch04_proxy-1""#,
            r#""executable":null"#,
        );
        assert!(Artifact::parse(&library).is_none());
        assert!(Artifact::parse(r#"{"reason":"build-finished","success":true}"#).is_none());
        assert_eq!(
            json_string(r#"{"a":"x\"y\\z"}"#, "a").as_deref(),
            Some("x\"y\\z")
        );
    }

    #[test]
    fn finds_the_chapters_a_test_file_starts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let exercise = crate::registry::find("ch01-spawn").unwrap();
        assert_eq!(
            chapters_of(&root, &exercise.tests[0], None),
            ["ch01-random-port-fork"]
        );
        let unit = &crate::registry::find("ch02-send").unwrap().tests[0];
        assert!(chapters_of(&root, unit, None).is_empty());
        let bin = &crate::registry::find("ch10-reserve").unwrap().tests[0];
        assert!(chapters_of(&root, bin, None).is_empty());
        // One test of a file that starts five chapters: the one its body names.
        let fds = &crate::registry::find("ch02-recv").unwrap().tests[2];
        assert_eq!(chapters_of(&root, fds, None), ["ch06-round-robin"]);
        let whole = TestRun {
            package: "chapter-tests",
            target: crate::registry::Target::Test("exhaustion"),
            filters: &[],
        };
        assert!(chapters_of(&root, &whole, None).len() >= 5);
        // A test that starts its chapter through a constant: the whole file's.
        let turns = ["sequential_connections_take_turns".to_string()];
        let ch06 = &crate::registry::find("ch06-handoff").unwrap().tests[0];
        assert_eq!(chapters_of(&root, ch06, Some(&turns)), ["ch06-round-robin"]);
    }
}

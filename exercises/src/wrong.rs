//! Wrong answers: versions of an exercise's region that a learner could plausibly write
//! and that its tests must reject. `verify` puts each in place of the region, proves
//! the tests it names fail, and puts the reference back.
//!
//! Each lives in `exercises/wrong/<exercise>/<n>.diff`, as a change to the reference
//! region, so that it stays the reference plus one mistake when the reference changes
//! (and says so, by failing to apply, when the lines it changes are gone):
//!
//! ```text
//! # Rounds down: 150% of one CPU is 1 worker instead of 2.
//! # caught by: ch01_random_port_fork workers_as_a_share_of_the_cpus
//! @@
//!      let exact = cpus as f64 * f64::from(percent) / 100.0;
//! -    (exact.round() as usize).max(1)
//! +    (exact.floor() as usize).max(1)
//! ```
//!
//! The first line says what the mistake is. Each `caught by` line names a test that
//! must fail: the label of one of the exercise's test commands (a `tests/tests` file, or
//! the package for a crate's unit tests: `ch02-ipc-messaging`) and the test's full name. After each `@@`, a
//! hunk: lines starting with a space are kept, `-` removed, `+` added; the kept and
//! removed lines must appear, in order, exactly once in the region.

use std::fs;
use std::path::Path;

use crate::registry::Exercise;

/// A test that must reject a wrong answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestId {
    /// The test command's label: `ch04_proxy`, or `ch02-ipc-messaging`.
    pub label: String,
    /// The test's full name as libtest prints it.
    pub name: String,
}

impl std::fmt::Display for TestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.label, self.name)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Hunk {
    /// The region's lines as they are (kept and removed lines).
    old: Vec<String>,
    /// What they become (kept and added lines).
    new: Vec<String>,
}

#[derive(Debug)]
pub struct WrongAnswer {
    /// Its number: `2` for `2.diff`.
    pub number: u32,
    /// The file, relative to the workspace root.
    pub file: String,
    /// What the mistake is, in one line.
    pub mistake: String,
    pub caught_by: Vec<TestId>,
    hunks: Vec<Hunk>,
}

impl WrongAnswer {
    /// Parses the text of `file`.
    pub fn parse(number: u32, file: &str, text: &str) -> Result<WrongAnswer, String> {
        let fail = |line: usize, why: String| format!("{file}:{line}: {why}");
        let mut mistake = None;
        let mut caught_by = Vec::new();
        let mut hunks: Vec<Hunk> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let n = index + 1;
            if line.starts_with("@@") {
                hunks.push(Hunk {
                    old: Vec::new(),
                    new: Vec::new(),
                });
                continue;
            }
            let Some(hunk) = hunks.last_mut() else {
                let Some(comment) = line.strip_prefix('#') else {
                    if line.trim().is_empty() {
                        continue;
                    }
                    return Err(fail(n, "before the first @@, only # lines".into()));
                };
                let comment = comment.trim();
                if mistake.is_none() {
                    mistake = Some(comment.to_string());
                } else if let Some(test) = comment.strip_prefix("caught by:") {
                    let mut words = test.split_whitespace();
                    match (words.next(), words.next(), words.next()) {
                        (Some(label), Some(name), None) => caught_by.push(TestId {
                            label: label.into(),
                            name: name.into(),
                        }),
                        _ => {
                            return Err(fail(
                                n,
                                "write `# caught by: LABEL TEST_NAME`, e.g. \
                                 `# caught by: ch04_proxy a_half_closed_client_still_gets_its_answer`"
                                    .into(),
                            ))
                        }
                    }
                } else {
                    return Err(fail(
                        n,
                        format!("after the first line, only `# caught by:` lines: {line:?}"),
                    ));
                }
                continue;
            };
            match line.chars().next() {
                // An empty line is a kept empty line (editors strip the lone space).
                None => {
                    hunk.old.push(String::new());
                    hunk.new.push(String::new());
                }
                Some(' ') => {
                    hunk.old.push(line[1..].to_string());
                    hunk.new.push(line[1..].to_string());
                }
                Some('-') => hunk.old.push(line[1..].to_string()),
                Some('+') => hunk.new.push(line[1..].to_string()),
                Some(_) => {
                    return Err(fail(
                        n,
                        format!("a hunk line starts with ' ', '-' or '+': {line:?}"),
                    ))
                }
            }
        }
        let mistake = mistake.filter(|m| !m.is_empty()).ok_or(format!(
            "{file}: the first line must say what the mistake is"
        ))?;
        if caught_by.is_empty() {
            return Err(format!(
                "{file}: no `# caught by: LABEL TEST_NAME` line names the test that rejects it"
            ));
        }
        if hunks.is_empty() {
            return Err(format!("{file}: no @@ hunk: nothing to change"));
        }
        for (i, hunk) in hunks.iter().enumerate() {
            if hunk.old.is_empty() {
                return Err(format!(
                    "{file}: hunk {} has no kept or removed line to find its place by",
                    i + 1
                ));
            }
            if hunk.old == hunk.new {
                return Err(format!("{file}: hunk {} changes nothing", i + 1));
            }
        }
        Ok(WrongAnswer {
            number,
            file: file.to_string(),
            mistake,
            caught_by,
            hunks,
        })
    }

    /// The region `reference` with this answer's mistake made in it.
    pub fn apply(&self, reference: &str) -> Result<String, String> {
        let mut lines: Vec<String> = reference.lines().map(str::to_string).collect();
        for (i, hunk) in self.hunks.iter().enumerate() {
            let width = hunk.old.len();
            let places: Vec<usize> = (0..=lines.len().saturating_sub(width))
                .filter(|&at| lines.len() >= width && lines[at..at + width] == hunk.old[..])
                .collect();
            let at = match places[..] {
                [at] => at,
                [] => {
                    return Err(format!(
                        "{}: hunk {} does not apply: its lines are not in the reference \
                         region any more (the reference changed; rewrite the hunk)",
                        self.file,
                        i + 1
                    ))
                }
                _ => {
                    return Err(format!(
                        "{}: hunk {} matches {} places in the region; add context lines",
                        self.file,
                        i + 1,
                        places.len()
                    ))
                }
            };
            lines.splice(at..at + width, hunk.new.iter().cloned());
        }
        let mut text = lines.join("\n");
        if reference.ends_with('\n') {
            text.push('\n');
        }
        Ok(text)
    }
}

/// The folder of `e`'s wrong answers, relative to the workspace root.
pub fn folder(e: &Exercise) -> String {
    format!("exercises/wrong/{}", e.name)
}

/// Reads every `<n>.diff` in `e`'s folder (none if there is no folder), in order, and
/// checks that each names only tests that `check` runs.
pub fn load(root: &Path, e: &Exercise) -> Result<Vec<WrongAnswer>, String> {
    let dir = root.join(folder(e));
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut numbered = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| format!("cannot list {}: {err}", folder(e)))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let number = name
            .strip_suffix(".diff")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or(format!(
                "{}/{name}: wrong answers are named 1.diff, 2.diff, ...",
                folder(e)
            ))?;
        numbered.push((number, name));
    }
    numbered.sort();
    let mut answers = Vec::new();
    for (number, name) in numbered {
        let file = format!("{}/{name}", folder(e));
        let text = fs::read_to_string(root.join(&file))
            .map_err(|err| format!("cannot read {file}: {err}"))?;
        let answer = WrongAnswer::parse(number, &file, &text)?;
        for test in &answer.caught_by {
            let run = e.run_labelled(&test.label).ok_or(format!(
                "{file}: `caught by: {} ...`, but no test command of {} is labelled {} \
                 (labels: {})",
                test.label,
                e.name,
                test.label,
                e.tests
                    .iter()
                    .map(|r| r.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?;
            if !run.selects(&test.name) {
                return Err(format!(
                    "{file}: {test} is not among the tests `{}` runs, so `check {}` \
                     would not catch this mistake",
                    run.command(),
                    e.name
                ));
            }
        }
        answers.push(answer);
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::EXERCISES;

    const REGION: &str = "    let a = 1;\n    let b = 2;\n\n    a + b\n";

    fn parse(text: &str) -> Result<WrongAnswer, String> {
        WrongAnswer::parse(1, "w/1.diff", text)
    }

    #[test]
    fn applies_hunks_in_place_of_the_lines_they_name() {
        let wrong = parse(
            "# Adds instead of subtracting.\n# caught by: t subtracts\n\
             @@\n     let b = 2;\n\n-    a + b\n+    a - b\n",
        )
        .unwrap();
        assert_eq!(wrong.mistake, "Adds instead of subtracting.");
        assert_eq!(
            wrong.caught_by,
            [TestId {
                label: "t".into(),
                name: "subtracts".into()
            }]
        );
        assert_eq!(
            wrong.apply(REGION).unwrap(),
            "    let a = 1;\n    let b = 2;\n\n    a - b\n"
        );
        // Two hunks, the second also removing a line.
        let two = parse(
            "# Two.\n# caught by: t x\n@@\n-    let a = 1;\n+    let a = 3;\n\
             @@\n     let b = 2;\n-\n",
        )
        .unwrap();
        assert_eq!(
            two.apply(REGION).unwrap(),
            "    let a = 3;\n    let b = 2;\n    a + b\n"
        );
    }

    #[test]
    fn says_when_a_hunk_no_longer_fits_the_reference() {
        let stale = parse("# Stale.\n# caught by: t x\n@@\n-    a * b\n+    a / b\n").unwrap();
        assert!(stale.apply(REGION).unwrap_err().contains("does not apply"));
        let vague = parse("# Vague.\n# caught by: t x\n@@\n \n+    dbg!(a);\n").unwrap();
        assert!(vague
            .apply("\n    x\n\n")
            .unwrap_err()
            .contains("matches 2 places"));
    }

    #[test]
    fn refuses_files_that_do_not_say_what_and_who() {
        let hunk = "@@\n-    a + b\n+    a - b\n";
        assert!(parse(hunk).unwrap_err().contains("first line"));
        assert!(parse(&format!("# What.\n{hunk}"))
            .unwrap_err()
            .contains("caught by"));
        assert!(
            parse(&format!("# What.\n# caught by: only-a-label\n{hunk}"))
                .unwrap_err()
                .contains("LABEL TEST_NAME")
        );
        assert!(parse("# What.\n# caught by: t x\n")
            .unwrap_err()
            .contains("no @@"));
        assert!(parse("# What.\n# caught by: t x\n@@\n+    x\n")
            .unwrap_err()
            .contains("to find its place"));
        assert!(parse("# What.\n# caught by: t x\n@@\n*    x\n")
            .unwrap_err()
            .contains("starts with"));
    }

    /// Every wrong answer on disk parses, names tests its exercise runs, and applies to
    /// the reference region as it is now; every exercise that needs them has two or more.
    #[test]
    fn every_wrong_answer_applies_to_the_reference() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for e in EXERCISES {
            let answers = load(&root, e).unwrap_or_else(|err| panic!("{err}"));
            assert!(
                answers.len() >= 2,
                "{}: {} wrong answer(s) in {}; two or more are needed",
                e.name,
                answers.len(),
                folder(e)
            );
            let text = fs::read_to_string(root.join(e.file)).unwrap();
            let region = crate::region::find(&text, e.anchor).unwrap();
            let reference = &text[region.inner.clone()];
            for answer in &answers {
                let wrong = answer
                    .apply(reference)
                    .unwrap_or_else(|err| panic!("{err}"));
                assert_ne!(wrong, reference, "{}", answer.file);
            }
        }
    }
}

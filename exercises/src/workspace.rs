//! The workspace the tool works on: its source files, the regions in them, and the
//! tool's own state under `target/exercises/` (saved reference code, hint levels).

use std::fs;
use std::path::{Path, PathBuf};

use crate::region::{self, Region};
use crate::registry::Exercise;

/// Where an exercise stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    /// The file holds the reference code.
    Reference,
    /// Started: the file holds the starter or the learner's own code.
    Started,
}

pub struct Workspace {
    pub root: PathBuf,
}

/// An exercise's file, read, with its region located.
pub struct Source {
    pub text: String,
    pub region: Region,
}

impl Source {
    pub fn inner(&self) -> &str {
        &self.text[self.region.inner.clone()]
    }
}

impl Workspace {
    /// The workspace this tool was built from.
    pub fn new() -> Workspace {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest).to_path_buf();
        Workspace { root }
    }

    pub fn path(&self, e: &Exercise) -> PathBuf {
        self.root.join(e.file)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("target").join("exercises")
    }

    /// Where `start` saves the reference region.
    pub fn backup(&self, e: &Exercise) -> PathBuf {
        self.state_dir().join(format!("{}.orig", e.name))
    }

    /// Where `reset` saves the learner's region, so resetting never loses work.
    pub fn yours(&self, e: &Exercise) -> PathBuf {
        self.state_dir().join(format!("{}.yours", e.name))
    }

    /// Where `hint` remembers the last level it showed.
    fn hint_level_file(&self, e: &Exercise) -> PathBuf {
        self.state_dir().join(format!("{}.hint", e.name))
    }

    /// A path as the learner should read it: relative to the workspace.
    pub fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    pub fn read(&self, e: &Exercise) -> Result<Source, String> {
        let text = fs::read_to_string(self.path(e))
            .map_err(|err| format!("cannot read {}: {err}", e.file))?;
        let region = region::find(&text, e.anchor).map_err(|err| {
            format!(
                "{}: {err} in {}. The markers must stay as they are; \
                 `git checkout -- {}` brings them back.",
                e.name, e.file, e.file
            )
        })?;
        Ok(Source { text, region })
    }

    pub fn write(&self, e: &Exercise, text: &str) -> Result<(), String> {
        fs::write(self.path(e), text).map_err(|err| format!("cannot write {}: {err}", e.file))
    }

    pub fn status(&self, e: &Exercise) -> Result<Status, String> {
        let source = self.read(e)?;
        let backup = fs::read_to_string(self.backup(e)).ok();
        Ok(match backup {
            // A backup equal to the file's region is stale (the file was put back by
            // hand, e.g. with git): the exercise is not started.
            Some(saved) if saved == source.inner() => Status::Reference,
            Some(_) => Status::Started,
            None if region::is_starter(source.inner(), e.name) => Status::Started,
            None => Status::Reference,
        })
    }

    /// Saves the reference region, then puts `new_inner` in its place. Returns the line
    /// where the region starts.
    pub fn replace_reference(&self, e: &Exercise, new_inner: &str) -> Result<usize, String> {
        let source = self.read(e)?;
        if self.status(e)? == Status::Started {
            return Err(format!(
                "{} is already started: your code is in {}, {} (line {}). \
                 To start over: cargo run -q -p exercise -- reset {}",
                e.name, e.file, e.function, source.region.first_line, e.name
            ));
        }
        let backup = self.backup(e);
        fs::create_dir_all(self.state_dir())
            .and_then(|()| fs::write(&backup, source.inner()))
            .map_err(|err| {
                format!(
                    "cannot save the reference code to {}: {err}",
                    self.show(&backup)
                )
            })?;
        let replaced = region::replace(&source.text, &source.region, new_inner);
        if let Err(err) = self.write(e, &replaced) {
            let _ = fs::remove_file(&backup);
            return Err(err);
        }
        Ok(source.region.first_line)
    }

    /// Starts `e`: the starter in place of the reference. Returns the region's line.
    pub fn start(&self, e: &Exercise) -> Result<usize, String> {
        let source = self.read(e)?;
        let starter = region::starter(&source.region.indent, e.name, e.todo);
        self.replace_reference(e, &starter)
    }

    /// Puts the reference back. Returns a sentence saying what happened, or `None` if
    /// there was nothing to do.
    pub fn reset(&self, e: &Exercise) -> Result<Option<String>, String> {
        self.reset_keeping(e, true)
    }

    /// [`Workspace::reset`]; with `keep_yours`, the region's code, if it is not the
    /// starter, is saved first (`verify` does not save its wrong answers over a
    /// learner's work).
    pub fn reset_keeping(&self, e: &Exercise, keep_yours: bool) -> Result<Option<String>, String> {
        let source = self.read(e)?;
        let Ok(saved) = fs::read_to_string(self.backup(e)) else {
            if region::is_starter(source.inner(), e.name) {
                return Err(format!(
                    "{} is started but its backup in {} is gone (cargo clean?). \
                     Put the reference back with git: git checkout -- {} \
                     (that also undoes any other change to that file).",
                    e.name,
                    self.show(&self.state_dir()),
                    e.file
                ));
            }
            return Ok(None);
        };
        if saved == source.inner() {
            let _ = fs::remove_file(self.backup(e));
            return Ok(None);
        }
        let mut kept = String::new();
        if keep_yours && !region::is_starter(source.inner(), e.name) {
            let yours = self.yours(e);
            fs::write(&yours, source.inner())
                .map_err(|err| format!("cannot save your code to {}: {err}", self.show(&yours)))?;
            kept = format!(" Your version is kept in {}.", self.show(&yours));
        }
        self.write(e, &region::replace(&source.text, &source.region, &saved))?;
        let _ = fs::remove_file(self.backup(e));
        Ok(Some(format!(
            "{}: {} is back to the reference code.{kept}",
            e.name, e.file
        )))
    }

    /// The last hint level shown for `e` (0: none yet).
    pub fn hint_level(&self, e: &Exercise) -> usize {
        fs::read_to_string(self.hint_level_file(e))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Remembers that hint `level` of `e` was shown.
    pub fn remember_hint(&self, e: &Exercise, level: usize) {
        // Only a convenience: if it cannot be saved, the next `hint` starts over.
        let _ = fs::create_dir_all(self.state_dir())
            .and_then(|()| fs::write(self.hint_level_file(e), level.to_string()));
    }

    /// Starts `e`'s hints over from the first.
    pub fn forget_hints(&self, e: &Exercise) {
        let _ = fs::remove_file(self.hint_level_file(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{find, EXERCISES};

    /// A throwaway copy of one exercise's file in a workspace of its own. `test` names the
    /// test that asks: tests run in parallel in one process, and two that shared a
    /// scratch copy of the same exercise would start and reset each other's.
    fn scratch(test: &str, e: &Exercise) -> Workspace {
        let real = Workspace::new();
        let root = std::env::temp_dir().join(format!(
            "exercise-ws-{}-{test}-{}",
            std::process::id(),
            e.name
        ));
        let _ = fs::remove_dir_all(&root);
        let file = root.join(e.file);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::copy(real.path(e), &file).unwrap();
        Workspace { root }
    }

    #[test]
    fn start_reset_and_hints_keep_their_state_in_target() {
        let e = find("ch04-limit").unwrap();
        let ws = scratch("hints", e);
        let original = fs::read(ws.path(e)).unwrap();
        assert_eq!(ws.status(e).unwrap(), Status::Reference);
        assert_eq!(ws.hint_level(e), 0);
        ws.remember_hint(e, 2);
        assert_eq!(ws.hint_level(e), 2);

        ws.forget_hints(e);
        assert_eq!(ws.hint_level(e), 0);
        ws.start(e).unwrap();
        assert_eq!(ws.status(e).unwrap(), Status::Started);
        assert!(ws.start(e).unwrap_err().contains("already started"));
        assert!(ws
            .read(e)
            .unwrap()
            .inner()
            .contains("todo!(\"exercise ch04-limit: "));

        // The learner writes something; reset keeps it and restores the bytes.
        let source = ws.read(e).unwrap();
        let mine = region::replace(&source.text, &source.region, "    true\n");
        ws.write(e, &mine).unwrap();
        let said = ws.reset(e).unwrap().unwrap();
        assert!(
            said.contains("kept in target/exercises/ch04-limit.yours"),
            "{said}"
        );
        assert_eq!(fs::read(ws.path(e)).unwrap(), original);
        assert_eq!(fs::read_to_string(ws.yours(e)).unwrap(), "    true\n");
        assert_eq!(ws.reset(e).unwrap(), None, "nothing left to reset");
        let _ = fs::remove_dir_all(&ws.root);
    }

    #[test]
    fn every_exercise_starts_and_resets_byte_for_byte() {
        for e in EXERCISES {
            let ws = scratch("every", e);
            let original = fs::read(ws.path(e)).unwrap();
            ws.start(e).unwrap_or_else(|err| panic!("{err}"));
            assert!(region::is_starter(ws.read(e).unwrap().inner(), e.name));
            ws.reset(e).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(fs::read(ws.path(e)).unwrap(), original, "{}", e.name);
            let _ = fs::remove_dir_all(&ws.root);
        }
    }
}

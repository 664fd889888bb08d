//! The workspace follows the book: each chapter's crate holds the idea it teaches, a later
//! chapter reuses an earlier one by depending on its crate, and `shared` keeps only the
//! small helpers no chapter teaches. These tests read the manifests and sources, so they
//! run in milliseconds, and fail when a change bends that shape:
//!
//! - a chapter that depends on a later chapter (the dependency graph must read like the
//!   table of contents);
//! - `shared` growing past 1,000 lines, or keeping a module that fewer than two chapters
//!   use (a module one chapter uses belongs to that chapter).

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every chapter crate's folder name (`ch07-auto-restart`), in the book's order.
fn chapters() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root().join("chapters"))
        .expect("read chapters/")
        .map(|e| e.expect("a chapters/ entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ch"))
        .collect();
    names.sort();
    names
}

/// Where a crate like `ch07-auto-restart` comes in the book: its number, then the letter of
/// a chapter that comes between two (`ch06b-shared-state`, after 6 and before 7).
fn place(name: &str) -> (u32, &str) {
    let number = name[2..4]
        .parse()
        .unwrap_or_else(|_| panic!("'{name}' does not start with chNN"));
    let letter = name[4..].split('-').next().unwrap_or_default();
    (number, letter)
}

/// The names of the `[dependencies]` (not dev-dependencies) in a manifest.
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            deps.push(name.to_string());
        }
    }
    deps
}

#[test]
fn no_chapter_depends_on_a_later_one() {
    let chapters = chapters();
    assert!(chapters.len() >= 11, "found only {chapters:?}");
    let mut edges = 0;
    for chapter in &chapters {
        let manifest = fs::read_to_string(root().join("chapters").join(chapter).join("Cargo.toml"))
            .expect("read a chapter's Cargo.toml");
        for dep in dependencies(&manifest)
            .iter()
            .filter(|d| d.starts_with("ch"))
        {
            assert!(
                place(dep) < place(chapter),
                "{chapter} depends on {dep}: a chapter may only reuse what an earlier one taught"
            );
            edges += 1;
        }
    }
    // The shape is real: the later chapters do reuse the earlier ones.
    assert!(edges >= 10, "only {edges} edges between chapters");
}

#[test]
fn shared_is_small_and_each_module_serves_two_chapters() {
    let src = root().join("shared/src");
    let mut total = 0;
    let mut modules = Vec::new();
    for entry in fs::read_dir(&src).expect("read shared/src") {
        let path = entry.expect("a shared/src entry").path();
        let text = fs::read_to_string(&path).expect("read a shared source file");
        total += text.lines().count();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if stem != "lib" {
            modules.push(stem);
        }
    }
    assert!(
        total < 1000,
        "shared/src has {total} lines: move what a chapter teaches into that chapter's crate"
    );
    for module in modules {
        let users: Vec<String> = chapters()
            .into_iter()
            .filter(|chapter| {
                let dir = root().join("chapters").join(chapter).join("src");
                fs::read_dir(dir).into_iter().flatten().flatten().any(|f| {
                    let text = fs::read_to_string(f.path()).unwrap_or_default();
                    text.contains(&format!("shared::{module}"))
                        || (module == "log" && text.contains("shared::log!"))
                })
            })
            .collect();
        assert!(
            users.len() >= 2,
            "shared::{module} is used by {users:?}: a module one chapter uses belongs in it"
        );
    }
}

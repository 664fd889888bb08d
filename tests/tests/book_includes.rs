//! The book never pastes code: it includes it from the real sources with
//! `{{#include ../../chapters/...:anchor}}`. mdBook does not fail when an anchor is
//! missing (it includes nothing), so a renamed anchor would silently empty a code block.
//! This test reads every page under `book/src` and checks that:
//!
//! - every `{{#include path}}`, `{{#include path:anchor}}` and line-range include points at
//!   a file that exists (relative to the page), and the named anchor has both an
//!   `ANCHOR: name` and a later `ANCHOR_END: name` line, with something between them;
//! - every image a page shows (`![..](img/x.svg)` or `<img src="..">`) exists;
//! - every link in `SUMMARY.md`, and every link from one page to another `.md` page, points
//!   at a file that exists, and every page under `book/src` is listed in `SUMMARY.md`.
//!
//! It needs nothing but the files, so it runs in milliseconds and in parallel with the
//! chapter tests.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// One `{{#include ...}}` found in a page.
#[derive(Debug, PartialEq, Eq)]
struct Include {
    /// The path as written, relative to the page.
    path: String,
    selector: Selector,
    /// 1-based line of the page, for messages.
    line: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Selector {
    Whole,
    Anchor(String),
    /// `path:start:end`, `path:start:`, `path::end`, or `path:line`; 1-based, inclusive.
    Lines(Option<usize>, Option<usize>),
}

fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src")
}

/// Every `.md` file under `dir`, recursively, sorted.
fn pages(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Finds every include directive in a page, as mdBook's links preprocessor would:
/// `{{#include ...}}` and `{{#rustdoc_include ...}}`, skipping escaped `\{{#include`.
fn includes(text: &str) -> Vec<Include> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        while let Some(at) = rest.find("{{#") {
            let escaped = line[..offset + at].ends_with('\\');
            let after = &rest[at + 3..];
            let Some(end) = after.find("}}") else { break };
            let body = after[..end].trim();
            let consumed = at + 3 + end + 2;
            offset += consumed;
            rest = &rest[consumed..];
            if escaped {
                continue;
            }
            let target = match body.split_once(char::is_whitespace) {
                Some(("include" | "rustdoc_include", target)) => target.trim(),
                _ => continue,
            };
            found.push(parse_target(target, n + 1));
        }
    }
    found
}

fn parse_target(target: &str, line: usize) -> Include {
    let (path, selector) = match target.split_once(':') {
        None => (target, Selector::Whole),
        Some((path, sel)) => {
            let number = |s: &str| s.trim().parse::<usize>().ok();
            let selector = match sel.split_once(':') {
                Some((a, b)) => Selector::Lines(number(a), number(b)),
                None if sel.chars().all(|c| c.is_ascii_digit()) && !sel.is_empty() => {
                    Selector::Lines(number(sel), number(sel))
                }
                None => Selector::Anchor(sel.trim().to_string()),
            };
            (path, selector)
        }
    };
    Include {
        path: path.trim().to_string(),
        selector,
        line,
    }
}

/// The anchor name on a source line after `marker` (`ANCHOR:` or `ANCHOR_END:`), as
/// mdBook reads it: the word characters and dashes after the colon.
fn anchor_on(line: &str, marker: &str) -> Option<String> {
    let at = line.find(marker)?;
    // `ANCHOR:` must not match inside `ANCHOR_END:` or `MY_ANCHOR:`.
    if line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let name: String = line[at + marker.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Checks that `source` has `ANCHOR: name`, then `ANCHOR_END: name`, with at least one line
/// of code between them that is not itself a marker.
fn check_anchor(source: &str, name: &str) -> Result<(), String> {
    let lines: Vec<&str> = source.lines().collect();
    let start = lines
        .iter()
        .position(|l| anchor_on(l, "ANCHOR:").as_deref() == Some(name));
    let end = lines
        .iter()
        .position(|l| anchor_on(l, "ANCHOR_END:").as_deref() == Some(name));
    match (start, end) {
        (None, _) => Err(format!("has no `// ANCHOR: {name}` line")),
        (Some(_), None) => Err(format!("has `ANCHOR: {name}` but no `ANCHOR_END: {name}`")),
        (Some(s), Some(e)) if e < s => Err(format!(
            "has `ANCHOR_END: {name}` (line {}) before `ANCHOR: {name}` (line {})",
            e + 1,
            s + 1
        )),
        (Some(s), Some(e)) => {
            let code = lines[s + 1..e]
                .iter()
                .filter(|l| anchor_on(l, "ANCHOR:").is_none())
                .filter(|l| anchor_on(l, "ANCHOR_END:").is_none())
                .any(|l| !l.trim().is_empty());
            match code {
                true => Ok(()),
                false => Err(format!("has an empty region `{name}`")),
            }
        }
    }
}

/// Checks one include against the file system; `Err` says what is wrong.
fn check_include(page_dir: &Path, include: &Include) -> Result<(), String> {
    let file = page_dir.join(&include.path);
    let source = fs::read_to_string(&file)
        .map_err(|e| format!("includes {}, which cannot be read: {e}", include.path))?;
    match &include.selector {
        Selector::Whole => Ok(()),
        Selector::Anchor(name) => {
            check_anchor(&source, name).map_err(|why| format!("{} {why}", include.path))
        }
        Selector::Lines(start, end) => {
            let count = source.lines().count();
            let first = start.unwrap_or(1);
            let last = end.unwrap_or(count);
            if first == 0 || first > last || last > count {
                Err(format!(
                    "includes lines {first}..={last} of {}, which has {count} lines",
                    include.path
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// Markdown links and images `[text](target)` / `![alt](target)`, and HTML `<img src>`:
/// (is_image, target, line). The text in brackets may span lines (long alt texts do).
/// Code fences, inline code and HTML comments are skipped: brackets there are not links
/// (SUMMARY.md keeps the chapters still to come in a comment).
fn links(text: &str) -> Vec<(bool, String, usize)> {
    // The page with everything that is not prose blanked out, newlines kept, so that
    // positions still map to line numbers.
    let mut plain = String::with_capacity(text.len());
    let mut in_fence = false;
    let mut in_comment = false;
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        if !in_fence && (in_comment || line.contains("<!--")) {
            in_comment = !line.contains("-->");
        } else if fence || in_fence {
            in_fence ^= fence;
        } else {
            for (i, part) in line.split('`').enumerate() {
                if i % 2 == 0 {
                    plain.push_str(part);
                }
            }
        }
        plain.push('\n');
    }
    let line_of = |at: usize| plain[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(close) = plain[from..].find("](") {
        let paren = from + close + 1;
        let Some(len) = plain[paren..].find(')') else {
            break;
        };
        let target = plain[paren + 1..paren + len].split_whitespace().next();
        let open = plain[..from + close].rfind('[');
        let is_image = open.is_some_and(|o| plain[..o].ends_with('!'));
        found.push((is_image, target.unwrap_or("").to_string(), line_of(paren)));
        from = paren + len + 1;
    }
    let mut from = 0;
    while let Some(at) = plain[from..].find("<img") {
        let tag = from + at;
        let end = plain[tag..].find('>').map_or(plain.len(), |e| tag + e);
        if let Some(src) = plain[tag..end].find("src=\"") {
            let value = &plain[tag + src + 5..end];
            if let Some(quote) = value.find('"') {
                found.push((true, value[..quote].to_string(), line_of(tag)));
            }
        }
        from = end;
    }
    found.sort_by_key(|(_, _, line)| *line);
    found
}

/// A link target that points inside the book (not a URL, not a pure `#fragment`), with
/// any `#fragment` removed.
fn local(target: &str) -> Option<&str> {
    if target.is_empty() || target.starts_with('#') || target.contains("://") {
        return None;
    }
    if target.starts_with("mailto:") {
        return None;
    }
    Some(target.split('#').next().unwrap_or(target))
}

#[test]
fn every_include_points_at_a_real_file_and_anchor() {
    let src = book_src();
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut anchors = 0;
    for page in pages(&src) {
        let text = read(&page);
        let dir = page.parent().expect("a page has a directory");
        for include in includes(&text) {
            checked += 1;
            if matches!(include.selector, Selector::Anchor(_)) {
                anchors += 1;
            }
            if let Err(why) = check_include(dir, &include) {
                problems.push(format!(
                    "{}:{}: {why}",
                    page.strip_prefix(&src).unwrap_or(&page).display(),
                    include.line
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken includes in the book:\n  {}\nFix the path, or put back the \
         `// ANCHOR: name` / `// ANCHOR_END: name` comments in the source.",
        problems.join("\n  ")
    );
    // The chapters show their code by anchor; if none was found, the parser is broken.
    assert!(
        anchors >= 10 && checked >= anchors,
        "found only {checked} includes ({anchors} by anchor) in {}: is the book there?",
        src.display()
    );
}

#[test]
fn every_image_and_page_link_exists() {
    let src = book_src();
    let mut problems = Vec::new();
    let mut images = 0;
    for page in pages(&src) {
        let text = read(&page);
        let dir = page.parent().expect("a page has a directory");
        for (is_image, target, line) in links(&text) {
            let Some(path) = local(&target) else { continue };
            let wanted = is_image || path.ends_with(".md");
            if !wanted {
                continue;
            }
            images += usize::from(is_image);
            if !dir.join(path).is_file() {
                problems.push(format!(
                    "{}:{line}: {} {target} does not exist",
                    page.strip_prefix(&src).unwrap_or(&page).display(),
                    if is_image { "image" } else { "page" }
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n  {}",
        problems.join("\n  ")
    );
    assert!(
        images >= 3,
        "found only {images} images: every chapter has a diagram"
    );
}

#[test]
fn summary_lists_existing_pages_and_every_page_is_listed() {
    let src = book_src();
    let summary = read(&src.join("SUMMARY.md"));
    let mut listed = BTreeSet::new();
    let mut problems = Vec::new();
    for (_, target, line) in links(&summary) {
        // `[Draft]()` is mdBook's draft chapter: no file yet, and that is allowed.
        let Some(path) = local(&target) else { continue };
        if !src.join(path).is_file() {
            problems.push(format!("SUMMARY.md:{line}: {target} does not exist"));
        }
        listed.insert(src.join(path));
    }
    for page in pages(&src) {
        if page.file_name().is_some_and(|n| n == "SUMMARY.md") {
            continue;
        }
        if !listed.contains(&page) {
            problems.push(format!(
                "{} is not listed in SUMMARY.md, so mdBook will not build it",
                page.strip_prefix(&src).unwrap_or(&page).display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        listed.len() >= 4,
        "SUMMARY.md lists only {} pages",
        listed.len()
    );
}

// The checker itself: it must find what it is meant to find, and refuse what is wrong.

#[test]
fn the_parser_finds_every_kind_of_include() {
    let page = "text\n```rust\n{{#include ../a.rs:master}}\n{{#include ../a.rs}}\n\
                {{#include ../a.rs:3:9}} {{#include ../a.rs::4}}\n{{#include ../a.rs:7}}\n\
                \\{{#include ../escaped.rs:x}}\n{{#rustdoc_include ../b.rs:worker}}\n```\n";
    let found = includes(page);
    let selectors: Vec<(&str, &Selector)> = found
        .iter()
        .map(|i| (i.path.as_str(), &i.selector))
        .collect();
    assert_eq!(
        selectors,
        vec![
            ("../a.rs", &Selector::Anchor("master".into())),
            ("../a.rs", &Selector::Whole),
            ("../a.rs", &Selector::Lines(Some(3), Some(9))),
            ("../a.rs", &Selector::Lines(None, Some(4))),
            ("../a.rs", &Selector::Lines(Some(7), Some(7))),
            ("../b.rs", &Selector::Anchor("worker".into())),
        ]
    );
    assert_eq!(found[0].line, 3);
}

#[test]
fn the_checker_refuses_a_renamed_or_half_anchor() {
    let source = "// ANCHOR: master\nfn master() {}\n// ANCHOR_END: master\n\
                  // ANCHOR: open\nfn open() {}\n// ANCHOR: empty\n// ANCHOR_END: empty\n";
    assert_eq!(check_anchor(source, "master"), Ok(()));
    assert!(
        check_anchor(source, "mast").is_err(),
        "a prefix is not the anchor"
    );
    assert!(check_anchor(source, "master_loop").is_err());
    assert!(check_anchor(source, "open")
        .unwrap_err()
        .contains("no `ANCHOR_END"));
    assert!(check_anchor(source, "empty").unwrap_err().contains("empty"));
    let backwards = "// ANCHOR_END: x\nfn x() {}\n// ANCHOR: x\n";
    assert!(check_anchor(backwards, "x").unwrap_err().contains("before"));
}

#[test]
fn the_link_finder_sees_images_and_skips_code() {
    let page = "![a diagram\nover two lines](img/a.svg) and [next](ch02.md#top)\n`[not](a.md)`\n\
                ```\n[nor](b.md)\n```\n<img src=\"img/b.svg\" alt=\"b\">\n[web](https://x.org)\n\
                <!-- later:\n- [Chapter 9](ch09.md)\n-->\n";
    let found: Vec<(bool, String)> = links(page).into_iter().map(|(i, t, _)| (i, t)).collect();
    assert_eq!(
        found,
        vec![
            (true, "img/a.svg".to_string()),
            (false, "ch02.md#top".to_string()),
            (true, "img/b.svg".to_string()),
            (false, "https://x.org".to_string()),
        ]
    );
    assert_eq!(local("ch02.md#top"), Some("ch02.md"));
    assert_eq!(local("https://x.org"), None);
}

/// The ids mdBook gives a page's headings: the heading's text with its markup removed,
/// lower-cased, spaces turned into `-`, anything else but letters, digits, `_` and `-`
/// dropped, and `-1`, `-2`, ... after a repeat.
fn heading_ids(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if in_fence {
            continue;
        }
        let heading = heading.trim_start_matches('#').trim();
        // `[text](target)` shows as `text`.
        let mut shown = String::new();
        let mut rest = heading;
        while let Some(open) = rest.find('[') {
            shown.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match (after.find("]("), after.find(')')) {
                (Some(close), Some(end)) if close < end => {
                    shown.push_str(&after[..close]);
                    rest = &after[end + 1..];
                }
                _ => {
                    shown.push('[');
                    rest = after;
                }
            }
        }
        shown.push_str(rest);
        let base: String = shown
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    Some(c.to_ascii_lowercase())
                } else if c.is_whitespace() {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        let mut id = base.clone();
        let mut n = 0;
        while ids.contains(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        ids.push(id);
    }
    ids
}

#[test]
fn every_fragment_link_names_a_heading_and_every_code_block_closes() {
    let src = book_src();
    let mut problems = Vec::new();
    let mut fragments = 0;
    for page in pages(&src) {
        let text = read(&page);
        let name = page
            .strip_prefix(&src)
            .unwrap_or(&page)
            .display()
            .to_string();
        // An unclosed ``` swallows the rest of the page into one code block.
        let fences = text
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count();
        if fences % 2 == 1 {
            problems.push(format!("{name}: a code block (```) is never closed"));
        }
        let dir = page.parent().expect("a page has a directory");
        for (_, target, line) in links(&text) {
            let Some((file, fragment)) = target.split_once('#') else {
                continue;
            };
            if target.contains("://") || !(file.is_empty() || file.ends_with(".md")) {
                continue;
            }
            let linked = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            let Ok(linked_text) = std::fs::read_to_string(&linked) else {
                continue; // every_image_and_page_link_exists reports it
            };
            fragments += 1;
            if !heading_ids(&linked_text).iter().any(|id| id == fragment) {
                problems.push(format!(
                    "{name}:{line}: no heading of {} has the id #{fragment}",
                    if file.is_empty() { "this page" } else { file }
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links inside pages:\n  {}\nA heading's id is its text in lower case, \
         spaces as '-', punctuation dropped.",
        problems.join("\n  ")
    );
    assert!(
        fragments >= 10,
        "found only {fragments} links to a heading: is the link finder broken?"
    );
}

#[test]
fn heading_ids_follow_mdbook() {
    let page = "# Top\n## `EPOLLEXCLUSIVE`: one worker, the same\n```text\n# not a heading\n```\n\
                ### Run it\n### Run it\n## See [chapter 5](ch05.md)'s race\n";
    assert_eq!(
        heading_ids(page),
        [
            "top",
            "epollexclusive-one-worker-the-same",
            "run-it",
            "run-it-1",
            "see-chapter-5s-race"
        ]
    );
}

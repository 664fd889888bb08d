//! Finding and replacing the text between two anchor lines. Pure functions on strings:
//! nothing here touches the disk.

use std::ops::Range;

/// The lines strictly between `// ANCHOR: <anchor>` and `// ANCHOR_END: <anchor>`.
#[derive(Debug, PartialEq, Eq)]
pub struct Region {
    /// Byte range of the inner lines (possibly empty), ending just before the end marker.
    pub inner: Range<usize>,
    /// The indentation of the start marker; the `todo!()` line gets the same.
    pub indent: String,
    /// 1-based line number of the first inner line.
    pub first_line: usize,
}

/// Locates the region called `anchor` in `text`. Each marker must sit on a line of its
/// own, exactly once, start before end.
pub fn find(text: &str, anchor: &str) -> Result<Region, String> {
    let start_marker = format!("// ANCHOR: {anchor}");
    let end_marker = format!("// ANCHOR_END: {anchor}");
    let mut start: Option<(usize, usize, String)> = None; // (inner start, line, indent)
    let mut end: Option<usize> = None;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim();
        if content == start_marker {
            if start.is_some() {
                return Err(format!("'{start_marker}' appears more than once"));
            }
            let indent: String = line
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect();
            start = Some((offset + line.len(), index + 2, indent));
        } else if content == end_marker {
            if end.is_some() {
                return Err(format!("'{end_marker}' appears more than once"));
            }
            if start.is_none() {
                return Err(format!("'{end_marker}' comes before '{start_marker}'"));
            }
            end = Some(offset);
        }
        offset += line.len();
    }
    match (start, end) {
        (Some((inner_start, first_line, indent)), Some(inner_end)) => Ok(Region {
            inner: inner_start..inner_end,
            indent,
            first_line,
        }),
        (None, _) => Err(format!("no line '{start_marker}'")),
        (Some(_), None) => Err(format!("no line '{end_marker}'")),
    }
}

/// `text` with the region's inner lines replaced by `new_inner` (which should end with a
/// newline, as the lines it replaces do).
pub fn replace(text: &str, region: &Region, new_inner: &str) -> String {
    let mut out = String::with_capacity(text.len() + new_inner.len());
    out.push_str(&text[..region.inner.start]);
    out.push_str(new_inner);
    out.push_str(&text[region.inner.end..]);
    out
}

/// What a started exercise's region holds: a comment that says where help is, and a
/// `todo!()` that says what to write.
pub fn starter(indent: &str, name: &str, todo: &str) -> String {
    format!(
        "{indent}// Exercise {name}: your code goes here. Stuck? \
         cargo run -q -p exercise -- hint {name}\n\
         {indent}todo!(\"exercise {name}: {todo}\")\n"
    )
}

/// Does this region still hold the starter of exercise `name` (whatever its wording),
/// with nothing else but comments and blank lines?
pub fn is_starter(inner: &str, name: &str) -> bool {
    let todo = format!("todo!(\"exercise {name}:");
    let mut code = inner
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"));
    matches!((code.next(), code.next()), (Some(line), None) if line.starts_with(&todo))
}

/// The 1-based line numbers a region's inner text spans in its file, once replaced.
pub fn lines(region: &Region, inner: &str) -> std::ops::RangeInclusive<usize> {
    let count = inner.lines().count().max(1);
    region.first_line..=region.first_line + count - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::EXERCISES;

    const SAMPLE: &str = "\
fn outer() -> u32 {
    // ANCHOR: solution_a
    let x = 1;

    x + 1
    // ANCHOR_END: solution_a
}
// ANCHOR: solution_ab
fn other() {}
// ANCHOR_END: solution_ab
";

    #[test]
    fn finds_the_lines_strictly_between_the_markers() {
        let region = find(SAMPLE, "solution_a").unwrap();
        assert_eq!(
            &SAMPLE[region.inner.clone()],
            "    let x = 1;\n\n    x + 1\n"
        );
        assert_eq!(region.indent, "    ");
        assert_eq!(region.first_line, 3);
        // A longer anchor that starts with the same letters is a different region.
        let region = find(SAMPLE, "solution_ab").unwrap();
        assert_eq!(&SAMPLE[region.inner.clone()], "fn other() {}\n");
        assert_eq!(region.indent, "");
    }

    #[test]
    fn start_then_restore_gives_back_the_same_bytes() {
        let region = find(SAMPLE, "solution_a").unwrap();
        let original = SAMPLE[region.inner.clone()].to_string();
        let started = replace(SAMPLE, &region, &starter(&region.indent, "ex-a", "add one"));
        assert_eq!(
            started,
            "fn outer() -> u32 {\n    // ANCHOR: solution_a\n    \
             // Exercise ex-a: your code goes here. Stuck? cargo run -q -p exercise -- hint ex-a\n    \
             todo!(\"exercise ex-a: add one\")\n    // ANCHOR_END: solution_a\n}\n\
             // ANCHOR: solution_ab\nfn other() {}\n// ANCHOR_END: solution_ab\n"
        );
        // The region can be found again in the started text, and holds the starter.
        let again = find(&started, "solution_a").unwrap();
        assert!(is_starter(&started[again.inner.clone()], "ex-a"));
        assert!(!is_starter(&started[again.inner.clone()], "ex-b"));
        assert!(!is_starter(&original, "ex-a"));
        assert_eq!(lines(&again, &started[again.inner.clone()]), 3..=4);
        assert_eq!(replace(&started, &again, &original), SAMPLE);
    }

    #[test]
    fn a_todo_with_code_around_it_is_the_learners_work() {
        assert!(is_starter("  todo!(\"exercise e: x\")\n", "e"));
        assert!(is_starter("  // mine\n\n  todo!(\"exercise e: y\")\n", "e"));
        assert!(!is_starter(
            "  let x = 1;\n  todo!(\"exercise e: y\")\n",
            "e"
        ));
        assert!(!is_starter("", "e"));
    }

    #[test]
    fn keeps_crlf_and_an_empty_region() {
        let text = "a\r\n  // ANCHOR: solution_x\r\n  // ANCHOR_END: solution_x\r\nb";
        let region = find(text, "solution_x").unwrap();
        assert!(region.inner.is_empty());
        let started = replace(text, &region, "  todo!()\n");
        let again = find(&started, "solution_x").unwrap();
        assert_eq!(replace(&started, &again, ""), text);
    }

    #[test]
    fn refuses_missing_doubled_or_reversed_markers() {
        assert!(find(SAMPLE, "solution_b").unwrap_err().contains("no line"));
        let doubled = format!("{SAMPLE}// ANCHOR: solution_a\n");
        assert!(find(&doubled, "solution_a")
            .unwrap_err()
            .contains("more than once"));
        let reversed = "// ANCHOR_END: solution_r\n// ANCHOR: solution_r\n";
        assert!(find(reversed, "solution_r")
            .unwrap_err()
            .contains("comes before"));
        let open = "// ANCHOR: solution_o\nx\n";
        assert!(find(open, "solution_o").unwrap_err().contains("ANCHOR_END"));
    }

    /// Every anchor exists exactly once in the real sources, and blanking it then
    /// restoring it gives back the file byte for byte (in memory: nothing is written).
    #[test]
    fn every_exercise_region_exists_and_round_trips() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for e in EXERCISES {
            let text = std::fs::read_to_string(root.join(e.file))
                .unwrap_or_else(|err| panic!("{}: cannot read {}: {err}", e.name, e.file));
            let region = find(&text, e.anchor).unwrap_or_else(|err| panic!("{}: {err}", e.name));
            let original = &text[region.inner.clone()];
            assert!(
                !original.trim().is_empty(),
                "{}: the region is empty",
                e.name
            );
            let started = replace(&text, &region, &starter(&region.indent, e.name, e.todo));
            let again = find(&started, e.anchor).unwrap();
            assert!(is_starter(&started[again.inner.clone()], e.name));
            assert_eq!(replace(&started, &again, original), text, "{}", e.name);
        }
    }
}

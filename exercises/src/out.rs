//! Printing that survives a closed pipe. `println!` panics when stdout is gone
//! (`exercise list | head -2`); these stop writing instead and let the command finish
//! its work, which matters when that work is putting a source file back.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout, unless an earlier write found it closed.
pub fn stdout(text: &str) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

/// Writes `text` to stderr, ignoring errors: there is nowhere left to report them.
pub fn stderr(text: &str) {
    let _ = io::stderr().write_all(text.as_bytes());
}

/// `println!` to stdout that never panics.
macro_rules! say {
    () => { $crate::out::stdout("\n") };
    ($($arg:tt)*) => { $crate::out::stdout(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that never panics.
macro_rules! tell {
    ($($arg:tt)*) => { $crate::out::stderr(&format!("{}\n", format_args!($($arg)*))) };
}

/// `text` wrapped at `width` columns, every line starting with `indent`. A `code span`
/// is never cut.
pub fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for word in text.split_whitespace() {
        match words.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_string()),
        }
        if word.matches('`').count() % 2 == 1 {
            open = !open;
        }
    }
    let mut out = String::new();
    let mut line = String::new();
    for word in &words {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            out += &format!("{indent}{line}\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out += &format!("{indent}{line}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_word_boundaries() {
        assert_eq!(
            wrap("one two three four", "  ", 12),
            "  one two\n  three four\n"
        );
        // A word longer than the width gets a line of its own, uncut.
        assert_eq!(wrap("a verylongword b", "", 5), "a\nverylongword\nb\n");
        // So does a code span.
        assert_eq!(
            wrap("call `a(1 - b)` now", "", 10),
            "call\n`a(1 - b)`\nnow\n"
        );
        assert_eq!(wrap("", "  ", 10), "");
    }
}

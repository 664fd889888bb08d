//! `--workers`: how many workers a master starts. One per CPU unless told, as Node's
//! examples fork `os.cpus().length`; a number, or a share of the CPUs like PM2's `-i`
//! (`--workers 50%`).
//!
//! Explained in chapter 1; every chapter with workers (1 to 10) flattens [`Workers`] into
//! its `Options`.

use clap::Args;

/// The most workers a chapter will start. Enough for any classroom machine, and a typo
/// such as `--workers 10000` is refused instead of forking until the machine gives out.
pub const MAX_WORKERS: usize = 128;

/// `--workers N` or `--workers 50%`, for a chapter's `Options` to flatten.
#[derive(Args, Debug, Clone)]
pub struct Workers {
    /// How many workers, one per CPU unless given: at most 128, or a share of the CPUs like 50%
    #[arg(long = "workers", value_name = "N", default_value_t = one_per_cpu())]
    #[arg(value_parser = parse_workers, allow_negative_numbers = true)]
    pub count: usize,
}

/// The default: one worker per CPU this process may run on.
fn one_per_cpu() -> usize {
    num_cpus::get().min(MAX_WORKERS)
}

/// `--workers 4`, or `--workers 50%` for a share of the machine's CPUs.
fn parse_workers(value: &str) -> Result<usize, String> {
    let n = match value.strip_suffix('%') {
        Some(percent) => {
            let percent: u32 = percent
                .parse()
                .map_err(|_| "a share of the CPUs is a whole percentage, like 50%")?;
            workers_for_share(percent, num_cpus::get())
        }
        None => value
            .parse()
            .map_err(|_| "a number of workers like 4, or a share of the CPUs like 50%")?,
    };
    if n == 0 {
        return Err(format!("{value} means no worker at all; ask for 1 or more"));
    }
    if n > MAX_WORKERS {
        return Err(format!(
            "{value} means {n} workers; this tutorial starts at most {MAX_WORKERS}"
        ));
    }
    Ok(n)
}

/// How many workers `percent`% of `cpus` CPUs is: rounded to the nearest whole worker,
/// and never fewer than one, so `--workers 10%` on a 2-CPU machine still starts one.
// ANCHOR: workers_for_share
pub fn workers_for_share(percent: u32, cpus: usize) -> usize {
    // ANCHOR: solution_ch01_percent
    let exact = cpus as f64 * f64::from(percent) / 100.0;
    (exact.round() as usize).max(1)
    // ANCHOR_END: solution_ch01_percent
}
// ANCHOR_END: workers_for_share

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Test {
        #[command(flatten)]
        workers: Workers,
    }

    fn workers(words: &[&str]) -> Result<usize, String> {
        let words = ["test"].iter().chain(words);
        match Test::try_parse_from(words) {
            Ok(test) => Ok(test.workers.count),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn reads_a_number_or_a_share() {
        assert_eq!(workers(&["--workers", "3"]), Ok(3));
        assert_eq!(
            workers(&["--workers=100%"]),
            Ok(num_cpus::get().min(MAX_WORKERS))
        );
        assert_eq!(workers(&[]), Ok(num_cpus::get().min(MAX_WORKERS)));
    }

    #[test]
    fn explains_bad_input() {
        for (value, expected) in [
            ("0", "no worker at all"),
            ("100000", "at most 128"),
            ("-1", "a number of workers"),
            ("half", "a number of workers"),
            ("1.5%", "a whole percentage"),
        ] {
            let err = workers(&["--workers", value]).unwrap_err();
            assert!(
                err.contains(&format!("'{value}' for '--workers <N>'")) && err.contains(expected),
                "--workers {value}: {err}"
            );
        }
    }

    #[test]
    fn the_help_states_the_limit() {
        let help = Test::command().render_help().to_string();
        assert!(help.contains(&format!("at most {MAX_WORKERS}")), "{help}");
    }

    #[test]
    fn a_share_of_the_cpus() {
        assert_eq!(workers_for_share(50, 8), 4);
        assert_eq!(workers_for_share(100, 2), 2);
        assert_eq!(workers_for_share(10, 2), 1);
        assert_eq!(workers_for_share(150, 4), 6);
    }
}

//! The options every chapter's command line shares, as clap `Args` for a chapter's
//! `Options` to flatten (`#[command(flatten)]`): where to listen, and how long a silent
//! connection may stay. Plus [`Seconds`] and [`Switch`], value types for the options of a
//! chapter's own, and [`refuse`], for options that must agree with each other.
//!
//! Each chapter declares its whole command line in its `main.rs`; an option that a
//! chapter teaches is declared in that chapter's crate (`--workers` in chapter 1's, the
//! keeper's options in chapter 7's). Workers are started by re-running the same binary
//! with the same arguments, so a worker parses exactly what its master parsed.
//!
//! Every option that takes a number says `allow_negative_numbers`: `--port -1` is then a
//! bad port, refused in words that name `--port`, rather than an unknown flag `-1`.
//! Every chapter's command says `args_override_self`: a later `--port` replaces an earlier
//! one, as with any hand-written parser, instead of being an error.

use std::fmt::Display;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, ValueEnum};

/// `--host`, `--port` (8000 unless given) and `--idle-timeout`: a program that listens on
/// one port.
#[derive(Args, Debug, Clone)]
pub struct Listen {
    /// Address to listen on (a classroom server is not public)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free port
    #[arg(long, value_name = "PORT", default_value_t = 8000)]
    #[arg(allow_negative_numbers = true)]
    pub port: u16,
    /// Drop a connection that sends nothing for this long, in seconds (at most a day)
    #[arg(long, value_name = "SECS", default_value = "10")]
    #[arg(value_parser = idle_timeout, allow_negative_numbers = true)]
    pub idle_timeout: Duration,
}

/// [`Listen`] for chapters 1 and 2, where every worker listens on a port of its own: with
/// `--port 0`, the default, each picks a free one.
#[derive(Args, Debug, Clone)]
pub struct ListenRandom {
    /// Address to listen on (a classroom server is not public)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on; 0: every worker picks a free port
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    #[arg(allow_negative_numbers = true)]
    pub port: u16,
    /// Drop a connection that sends nothing for this long, in seconds (at most a day)
    #[arg(long, value_name = "SECS", default_value = "10")]
    #[arg(value_parser = idle_timeout, allow_negative_numbers = true)]
    pub idle_timeout: Duration,
}

/// [`Listen`] for chapters 6 to 9, where `--port 8000,8001` makes every worker ask the
/// master for each port.
#[derive(Args, Debug, Clone)]
pub struct ListenMany {
    /// Address to listen on (a classroom server is not public)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port(s) to listen on, like 8000,8001; 0 picks a free port
    // A later `--port` replaces an earlier one, as for every other option.
    #[arg(long = "port", value_name = "PORT[,PORT]", default_value = "8000")]
    #[arg(
        value_delimiter = ',',
        overrides_with = "ports",
        allow_negative_numbers = true
    )]
    pub ports: Vec<u16>,
    /// Drop a connection that sends nothing for this long, in seconds (at most a day)
    #[arg(long, value_name = "SECS", default_value = "10")]
    #[arg(value_parser = idle_timeout, allow_negative_numbers = true)]
    pub idle_timeout: Duration,
}

/// `--idle-timeout`: some time, or no connection could ever be served.
fn idle_timeout(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        timeout if timeout.is_zero() => Err("must be above 0".into()),
        timeout => Ok(timeout),
    }
}

/// A length of time given in seconds, `5` or `0.25`, as `--idle-timeout` takes it: for the
/// options of chapters 7 to 9 (`--kill-timeout`, `--min-uptime`, ...). Not negative, and at
/// most a day: a typo such as `--kill-timeout 5000000` is refused rather than obeyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        let secs: f64 = text
            .parse()
            .map_err(|_| "a number of seconds like 5 or 0.5".to_string())?;
        match Duration::try_from_secs_f64(secs) {
            Ok(d) if d <= Duration::from_secs(86_400) => Ok(Seconds(d)),
            _ => Err("from 0 to 86400 seconds".into()),
        }
    }
}

impl Display for Seconds {
    /// As a learner would type it: `5 s`, `0.25 s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} s", self.0.as_secs_f64())
    }
}

/// A [`Seconds`] option's value parser, for a `Duration` field: `value_parser = seconds`.
/// A chapter's own checks start from it.
pub fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<Seconds>().map(|Seconds(d)| d)
}

/// The value of an `on|off` option, off unless given: nothing else is accepted, so
/// `--exclusive maybe` is an error rather than a silent "off".
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// Refuses a command line whose options parsed one by one but disagree with each other
/// (chapter 6's `--weights` and `--workers`): says `why` as clap says a bad value, with
/// the usage, and exits 2 before anything is bound or forked.
pub fn refuse<Options: CommandFactory>(why: impl Display) -> ! {
    Options::command()
        .error(ErrorKind::ArgumentConflict, why)
        .exit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    #[command(name = "test")]
    struct Many {
        #[command(flatten)]
        listen: ListenMany,
        #[arg(long, default_value = "off")]
        fast: Switch,
    }

    fn parse(words: &[&str]) -> Result<Many, String> {
        let words = ["test"].iter().chain(words);
        Many::try_parse_from(words).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_common_options() {
        let many = parse(&["--port", "8000,8001", "--idle-timeout=0.5"]).unwrap();
        assert_eq!(many.listen.ports, [8000, 8001]);
        assert_eq!(many.listen.idle_timeout, Duration::from_millis(500));
        assert_eq!(many.listen.host, IpAddr::from([127, 0, 0, 1]));
        assert!(!many.fast.is_on());
        // The last `--port` wins, as it did before a list was allowed.
        assert_eq!(
            parse(&["--port", "1,2", "--port", "3"])
                .unwrap()
                .listen
                .ports,
            [3]
        );
    }

    #[test]
    fn explains_bad_input() {
        for (words, expected) in [
            (
                &["--port", "99999"][..],
                "'99999' for '--port <PORT[,PORT]>'",
            ),
            (&["--port", "8000,x"], "'x' for '--port"),
            (&["--port", "-1"], "'-1' for '--port"),
            (&["--idle-timeout", "0"], "must be above 0"),
            (&["--idle-timeout", "1e9"], "from 0 to 86400 seconds"),
            (&["--host", "localhost"], "'localhost' for '--host <ADDR>'"),
            (&["--fast", "yes"], "'yes' for '--fast <FAST>'"),
            (&["--bogus"], "'--bogus'"),
        ] {
            let err = parse(words).unwrap_err();
            assert!(err.contains(expected), "{words:?}: {err}");
        }
    }

    #[test]
    fn the_help_shows_no_empty_default() {
        let help = Many::command().render_help().to_string();
        assert!(help.contains("--port <PORT[,PORT]>"), "{help}");
        assert!(!help.contains("[default: ]"), "{help}");
    }

    #[test]
    fn seconds_are_checked() {
        assert_eq!(
            "0.25".parse::<Seconds>(),
            Ok(Seconds(Duration::from_millis(250)))
        );
        assert_eq!(Seconds(Duration::from_millis(1500)).to_string(), "1.5 s");
        for bad in ["-1", "soon", "NaN", "1e9"] {
            assert!(bad.parse::<Seconds>().is_err(), "{bad} should be refused");
        }
    }
}

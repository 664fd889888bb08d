//! Command-line arguments shared by every chapter binary.
//!
//! Explained in chapter 1. Every chapter takes `--host`, `--port`, `--workers` and
//! `--idle-timeout`, and may add options of its own. Workers are started by re-running the
//! same binary with the same arguments (chapter 1's `spawn`), so a worker parses exactly
//! what its master parsed.
//!
//! We parse by hand rather than pull in a parser crate: the whole grammar is
//! `--name value` or `--name=value`, and a learner can read all of it here.

use std::fmt::Display;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// The most workers a chapter will start. Enough for any classroom machine, and a typo
/// such as `--workers 10000` is refused instead of forking until the machine gives out.
pub const MAX_WORKERS: usize = 128;

/// A check of the whole command line, once every option has parsed.
type Check = fn(&Args) -> Result<(), String>;

/// A chapter's command line: the common options and the chapter's own.
pub struct Cli {
    name: &'static str,
    about: &'static str,
    default_port: u16,
    many_ports: bool,
    /// Why `--workers` is refused, for a program that has no workers (chapter 0).
    no_workers: Option<&'static str>,
    extra: Vec<Opt>,
    checks: Vec<Check>,
}

struct Opt {
    name: &'static str,
    value: &'static str,
    help: &'static str,
    default: &'static str,
    /// Whether a value parses as the option's type: checked when the command line is
    /// read, before anything is forked.
    valid: fn(&str) -> Result<(), String>,
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Args {
    /// Address to listen on (default 127.0.0.1: a classroom server is not public).
    pub host: IpAddr,
    /// Port to listen on; 0 lets the kernel pick a free one. The first of [`Args::ports`].
    pub port: u16,
    ports: Vec<u16>,
    /// How many workers to start (default: one per CPU, like `os.cpus().length`).
    pub workers: usize,
    /// How long a connection may stay silent before the worker drops it.
    pub idle_timeout: Duration,
    extra: Vec<(&'static str, String)>,
}

impl Cli {
    /// A command line for the binary `name`, described by `about` in `--help`.
    pub fn new(name: &'static str, about: &'static str) -> Cli {
        Cli {
            name,
            about,
            default_port: 8000,
            many_ports: false,
            no_workers: None,
            extra: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// The port used when `--port` is not given (8000 unless a chapter says otherwise).
    pub fn default_port(mut self, port: u16) -> Cli {
        self.default_port = port;
        self
    }

    /// Lets `--port` take a list, `--port 8000,8001` (chapter 6: every worker asks the
    /// master for each port), read back with [`Args::ports`].
    pub fn many_ports(mut self) -> Cli {
        self.many_ports = true;
        self
    }

    /// For a program with no workers (chapter 0): `--workers` is left out of the help, and
    /// refused with the other argument errors, saying `why`.
    pub fn without_workers(mut self, why: &'static str) -> Cli {
        self.no_workers = Some(why);
        self
    }

    /// Adds a chapter-specific option `--name VALUE` whose value must parse as a `T`,
    /// read back with [`Args::get`]. A value that does not parse is refused with the
    /// other argument errors, before any worker is forked.
    pub fn option<T>(
        mut self,
        name: &'static str,
        value: &'static str,
        help: &'static str,
        default: &'static str,
    ) -> Cli
    where
        T: FromStr,
        T::Err: Display,
    {
        self.extra.push(Opt {
            name,
            value,
            help,
            default,
            valid: |text| text.parse::<T>().map(drop).map_err(|e| e.to_string()),
        });
        self
    }

    /// Adds a chapter-specific `--name on|off` (off by default), read back with
    /// [`Args::is_on`].
    pub fn switch(mut self, name: &'static str, help: &'static str) -> Cli {
        self.extra.push(Opt {
            name,
            value: "on|off",
            help,
            default: "off",
            // "--fast expects on|off, not 'yes'" says it all: no reason after it.
            valid: |text| text.parse::<Switch>().map(drop).map_err(|_| String::new()),
        });
        self
    }

    /// Adds a check of the whole command line, run after every option has parsed: for
    /// options that must agree with each other (chapter 6's `--weights` and `--workers`).
    pub fn check(mut self, check: Check) -> Cli {
        self.checks.push(check);
        self
    }

    /// Parses the process's arguments. Prints help and exits 0 on `--help`; prints what is
    /// wrong and exits 2 on a bad argument.
    pub fn parse(self) -> Args {
        let words: Vec<String> = std::env::args().skip(1).collect();
        match self.parse_from(&words) {
            Ok(Some(args)) => args,
            Ok(None) => {
                print!("{}", self.usage());
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::process::exit(0);
            }
            Err(message) => {
                eprintln!(
                    "{}: {message}\n\n{}",
                    self.name,
                    self.usage().lines().next().unwrap_or_default()
                );
                eprintln!("Run with --help to see every option.");
                std::process::exit(2);
            }
        }
    }

    /// Parses `words`; `Ok(None)` means `--help` was asked for.
    fn parse_from(&self, words: &[String]) -> Result<Option<Args>, String> {
        let mut args = Args {
            host: IpAddr::from([127, 0, 0, 1]),
            port: self.default_port,
            ports: vec![self.default_port],
            workers: num_cpus::get().min(MAX_WORKERS),
            idle_timeout: Duration::from_secs(10),
            extra: self
                .extra
                .iter()
                .map(|o| (o.name, o.default.into()))
                .collect(),
        };
        let mut rest = words.iter();
        while let Some(word) = rest.next() {
            if word == "--help" || word == "-h" {
                return Ok(None);
            }
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (word.as_str(), None),
            };
            let known = ["--host", "--port", "--workers", "--idle-timeout"].contains(&name)
                || self.extra.iter().any(|o| o.name == name);
            if !known {
                return Err(format!("unknown argument '{word}'"));
            }
            if let (Some(why), "--workers") = (self.no_workers, name) {
                return Err(format!("--workers does not apply here: {why}"));
            }
            let value = match inline.or_else(|| rest.next().cloned()) {
                Some(value) => value,
                None => return Err(format!("{name} needs a value")),
            };
            match name {
                "--host" => args.host = parse(name, &value, "an IP address like 127.0.0.1")?,
                "--port" => {
                    args.ports = match self.many_ports {
                        true => value
                            .split(',')
                            .map(|p| parse(name, p, "ports from 0 to 65535, like 8000,8001"))
                            .collect::<Result<_, _>>()?,
                        false => vec![parse(name, &value, "a port from 0 to 65535")?],
                    };
                    args.port = args.ports[0];
                }
                "--workers" => args.workers = parse_workers(&value)?,
                "--idle-timeout" => {
                    let expected = "a number of seconds up to 86400, like 10 or 0.5";
                    let Seconds(timeout) = parse(name, &value, expected)?;
                    if timeout.is_zero() {
                        return Err(format!("--idle-timeout must be above 0, not '{value}'"));
                    }
                    args.idle_timeout = timeout;
                }
                _ => {
                    if let Some(opt) = self.extra.iter().find(|o| o.name == name) {
                        (opt.valid)(&value).map_err(|why| match why.is_empty() {
                            true => format!("{name} expects {}, not '{value}'", opt.value),
                            false => format!("{name} expects {}, not '{value}': {why}", opt.value),
                        })?;
                    }
                    for (extra, slot) in args.extra.iter_mut() {
                        if *extra == name {
                            *slot = value.clone();
                        }
                    }
                }
            }
        }
        for check in &self.checks {
            check(&args)?;
        }
        Ok(Some(args))
    }

    fn usage(&self) -> String {
        let port = match self.many_ports {
            false => "PORT",
            true => "PORT[,PORT]",
        };
        let workers = match self.no_workers {
            None => " [--workers N]",
            Some(_) => "",
        };
        let mut text = format!(
            "Usage: {} [--host ADDR] [--port {port}]{workers} [--idle-timeout SECS]",
            self.name
        );
        for o in &self.extra {
            text += &format!(" [{} {}]", o.name, o.value);
        }
        text += &format!("\n\n{}\n\nOptions:\n", self.about);
        let port = match self.default_port {
            0 => "0: every worker picks a free port".to_string(),
            p => format!("{p}; 0 picks a free port"),
        };
        let mut rows = vec![
            (
                "--host ADDR".to_string(),
                "address to listen on (default 127.0.0.1)".to_string(),
            ),
            match self.many_ports {
                false => (
                    "--port PORT".into(),
                    format!("port to listen on (default {port})"),
                ),
                true => (
                    "--port PORT[,PORT]".into(),
                    format!("port(s) to listen on, like 8000,8001 (default {port})"),
                ),
            },
            (
                "--idle-timeout SECS".into(),
                "drop a connection that sends nothing for this long (default 10)".into(),
            ),
        ];
        if self.no_workers.is_none() {
            let help = format!(
                "how many workers, at most {MAX_WORKERS}, or a share of the CPUs like 50% \
                 (default {}, one per CPU)",
                num_cpus::get().min(MAX_WORKERS)
            );
            rows.insert(2, ("--workers N".into(), help));
        }
        for o in &self.extra {
            // An option whose absence means "none" says so in its help instead.
            let help = match o.default {
                "" => o.help.to_string(),
                default => format!("{} (default {default})", o.help),
            };
            rows.push((format!("{} {}", o.name, o.value), help));
        }
        for (flag, help) in rows {
            // A flag too long for its column gets its help on the next line.
            match flag.len() < 23 {
                true => text += &format!("  {flag:<22} {help}\n"),
                false => text += &format!("  {flag}\n  {:<22} {help}\n", ""),
            }
        }
        text + "  --help                 print this help\n"
    }
}

impl Args {
    /// Every port given with `--port` (one, unless the chapter allows [`Cli::many_ports`]).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The value of a chapter-specific option declared with [`Cli::option`].
    ///
    /// The value was checked when the command line was parsed; asking for it as another
    /// type than the one declared is a bug in the chapter, and panics saying so.
    pub fn get<T: FromStr>(&self, name: &str) -> T {
        let value = self
            .extra
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("option {name} was never declared with Cli::option"));
        match value.parse() {
            Ok(v) => v,
            Err(_) => panic!("option {name} was declared with another type than asked for"),
        }
    }

    /// Whether a `--name on|off` option declared with [`Cli::switch`] is on.
    pub fn is_on(&self, name: &str) -> bool {
        self.get::<Switch>(name) == Switch::On
    }
}

/// The value of an `on|off` option: nothing else is accepted, so `--exclusive maybe` is
/// an error rather than a silent "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

impl FromStr for Switch {
    type Err = String;

    fn from_str(text: &str) -> Result<Switch, String> {
        match text {
            "on" => Ok(Switch::On),
            "off" => Ok(Switch::Off),
            _ => Err("only on or off".into()),
        }
    }
}

/// A length of time given in seconds, `5` or `0.25`, as `--idle-timeout` takes it: for the
/// options of chapters 7 and 8 (`--kill-timeout`, `--min-uptime`, ...). Not negative, and at
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

impl std::fmt::Display for Seconds {
    /// As a learner would type it: `5 s`, `0.25 s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} s", self.0.as_secs_f64())
    }
}

fn parse<T: FromStr>(name: &str, value: &str, expected: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name} expects {expected}, not '{value}'"))
}

/// `--workers 4`, or `--workers 50%` for a share of the machine's CPUs.
fn parse_workers(value: &str) -> Result<usize, String> {
    let n = match value.strip_suffix('%') {
        Some(percent) => {
            let percent: u32 = parse("--workers", percent, "a whole percentage like 50%")?;
            workers_for_share(percent, num_cpus::get())
        }
        None => parse("--workers", value, "a number of workers like 4, or 50%")?,
    };
    if n == 0 {
        return Err(format!(
            "--workers {value} means no worker at all; ask for 1 or more"
        ));
    }
    if n > MAX_WORKERS {
        return Err(format!(
            "--workers {value} means {n} workers; this tutorial starts at most {MAX_WORKERS}"
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

    fn parse_words(words: &[&str]) -> Result<Option<Args>, String> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        Cli::new("test", "a test")
            .option::<f64>("--interval", "SECS", "how often", "1")
            .switch("--fast", "go fast")
            .parse_from(&words)
    }

    #[test]
    fn reads_common_and_extra_options() {
        let args = parse_words(&["--port", "0", "--workers=3", "--interval", "2.5"])
            .unwrap()
            .unwrap();
        assert_eq!(args.port, 0);
        assert_eq!(args.workers, 3);
        assert_eq!(args.get::<f64>("--interval"), 2.5);
    }

    #[test]
    fn explains_bad_input() {
        let err = parse_words(&["--port", "99999"]).unwrap_err();
        assert!(err.contains("--port expects a port"), "{err}");
        assert!(parse_words(&["--workers", "0"])
            .unwrap_err()
            .contains("no worker"));
        assert!(parse_words(&["--bogus"])
            .unwrap_err()
            .contains("unknown argument"));
        assert!(parse_words(&["--port"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_words(&["--help"]).unwrap().is_none());
        assert!(parse_words(&["--workers", "100000"])
            .unwrap_err()
            .contains("at most"));
        assert!(parse_words(&["--interval", "soon"])
            .unwrap_err()
            .contains("--interval expects SECS, not 'soon'"));
        // Said once: no ": only on or off" repeating what "on|off" said.
        assert_eq!(
            parse_words(&["--fast", "yes"]).unwrap_err(),
            "--fast expects on|off, not 'yes'"
        );
        let args = parse_words(&["--fast", "on"]).unwrap().unwrap();
        assert!(args.is_on("--fast"));
    }

    #[test]
    fn the_help_agrees_with_itself() {
        let usage = Cli::new("test", "a test")
            .many_ports()
            .option::<String>("--list", "A,B", "a list; without it, none", "")
            .usage();
        let first = usage.lines().next().unwrap();
        assert!(first.contains("[--port PORT[,PORT]]"), "{usage}");
        assert!(usage.contains("  --port PORT[,PORT] "), "{usage}");
        assert!(!usage.contains("(default )"), "{usage}");
        assert!(usage.contains("  --workers N "), "{usage}");
    }

    #[test]
    fn a_program_without_workers_refuses_and_hides_workers() {
        let cli = Cli::new("test", "a test").without_workers("there is one process");
        let words: Vec<String> = ["--workers", "2"].iter().map(|w| w.to_string()).collect();
        assert_eq!(
            cli.parse_from(&words).unwrap_err(),
            "--workers does not apply here: there is one process"
        );
        assert!(!cli.usage().contains("--workers"), "{}", cli.usage());
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

    #[test]
    fn a_share_of_the_cpus() {
        assert_eq!(workers_for_share(50, 8), 4);
        assert_eq!(workers_for_share(100, 2), 2);
        assert_eq!(workers_for_share(10, 2), 1);
        assert_eq!(workers_for_share(150, 4), 6);
    }
}

//! One measured row (a target at a number of connections), and the CSV file of them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The CSV's columns, in order.
const HEADER: &str = "date,machine,target,connections,open,requests_per_s,p50_ms,p99_ms,errors,\
new_client_ms,new_client_max_ms,new_client_failed,rss_mib,pss_mib,processes,threads,\
context_switches,switches_per_request,status,note";

/// What one target did at one number of connections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub date: String,
    pub machine: String,
    pub target: String,
    /// Connections asked for.
    pub level: usize,
    /// Connections that had their first answer before the counting began.
    pub open: usize,
    pub rps: f64,
    /// Latency of the loaded requests, from loadgen.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Median and worst time from a new client's connect to its whole first answer.
    pub fresh_ms: f64,
    pub fresh_max_ms: f64,
    pub fresh_failed: usize,
    pub rss_mib: f64,
    pub pss_mib: f64,
    pub processes: usize,
    pub threads: usize,
    pub switches: u64,
    pub switches_per_request: f64,
    /// `ok`, or `stopped` when the target could not serve this many connections.
    pub status: String,
    pub note: String,
}

impl Row {
    pub fn new(target: &str, level: usize) -> Row {
        Row {
            target: target.into(),
            level,
            status: "ok".into(),
            ..Row::default()
        }
    }

    /// A target that could not be measured at this level, and why.
    pub fn stopped(target: &str, level: usize, why: &str) -> Row {
        Row {
            status: "stopped".into(),
            note: why.into(),
            ..Row::new(target, level)
        }
    }

    pub fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// Median and worst of the probes' waits; failed probes are counted apart.
    pub fn set_fresh(&mut self, waits: &[Option<Duration>]) {
        let mut ms: Vec<f64> = waits
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        self.fresh_failed = waits.len() - ms.len();
        self.fresh_ms = ms.get(ms.len() / 2).copied().unwrap_or(0.0);
        self.fresh_max_ms = ms.last().copied().unwrap_or(0.0);
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        if !self.ok() {
            return format!("stopped: {}", self.note);
        }
        format!(
            "{:>8.0} req/s, {:>8.1} MiB RSS ({:.1} PSS), {:>5} processes, {:>5} threads, \
             {:.2} switches/request, new client {:.1} ms (worst {:.1})",
            self.rps,
            self.rss_mib,
            self.pss_mib,
            self.processes,
            self.threads,
            self.switches_per_request,
            self.fresh_ms,
            self.fresh_max_ms
        )
    }

    fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{:.0},{:.3},{:.3},{},{:.3},{:.3},{},{:.2},{:.2},{},{},{},{:.4},{},{}",
            quote(&self.date),
            quote(&self.machine),
            quote(&self.target),
            self.level,
            self.open,
            self.rps,
            self.p50_ms,
            self.p99_ms,
            self.errors,
            self.fresh_ms,
            self.fresh_max_ms,
            self.fresh_failed,
            self.rss_mib,
            self.pss_mib,
            self.processes,
            self.threads,
            self.switches,
            self.switches_per_request,
            quote(&self.status),
            quote(&self.note)
        )
    }

    fn from_csv(line: &str) -> Result<Row, String> {
        let f = split(line);
        if f.len() != HEADER.split(',').count() {
            return Err(format!(
                "{} fields, expected {}",
                f.len(),
                HEADER.split(',').count()
            ));
        }
        let num = |i: usize| -> Result<f64, String> {
            f[i].parse()
                .map_err(|_| format!("field {} is not a number: '{}'", i + 1, f[i]))
        };
        Ok(Row {
            date: f[0].clone(),
            machine: f[1].clone(),
            target: f[2].clone(),
            level: num(3)? as usize,
            open: num(4)? as usize,
            rps: num(5)?,
            p50_ms: num(6)?,
            p99_ms: num(7)?,
            errors: num(8)? as u64,
            fresh_ms: num(9)?,
            fresh_max_ms: num(10)?,
            fresh_failed: num(11)? as usize,
            rss_mib: num(12)?,
            pss_mib: num(13)?,
            processes: num(14)? as usize,
            threads: num(15)? as usize,
            switches: num(16)? as u64,
            switches_per_request: num(17)?,
            status: f[18].clone(),
            note: f[19].clone(),
        })
    }
}

/// A field in double quotes when it holds a comma or a quote.
fn quote(text: &str) -> String {
    match text.contains([',', '"', '\n']) {
        true => format!("\"{}\"", text.replace('"', "\"\"").replace('\n', " ")),
        false => text.to_string(),
    }
}

/// Splits one CSV line, honouring double quotes.
fn split(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

pub fn write(path: &Path, rows: &[Row]) -> Result<(), String> {
    let mut text = String::new();
    let _ = writeln!(text, "{HEADER}");
    for row in rows {
        let _ = writeln!(text, "{}", row.to_csv());
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn read(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!(
            "{} does not start with the expected header",
            path.display()
        ));
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| Row::from_csv(l).map_err(|e| format!("{}:{}: {e}", path.display(), n + 2)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_survives_the_csv() {
        let mut row = Row::new("process", 1000);
        row.date = "2026-01-02".into();
        row.machine = "vm, 2 CPUs \"x\"".into();
        row.rps = 1234.0;
        row.switches_per_request = 1.5;
        row.note = "a, b".into();
        let back = Row::from_csv(&row.to_csv()).unwrap();
        assert_eq!(back, row);
        assert!(Row::from_csv("a,b").is_err());
    }
}

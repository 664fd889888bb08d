//! Keeping N workers alive: a worker that dies is replaced, after a delay that grows
//! while its replacements keep dying, and a place that crash-loops is given up on.
//!
//! Explained in chapter 7, and used by chapters 8 and 9, whose masters replace hung and
//! reloaded workers through it.
//!
//! The master thinks in *slots*: places 1 to N, each held by one worker at a time. A
//! worker's id is never reused (as in Node); when worker 3 in slot 1 dies, worker 5 may
//! take slot 1. The supervisor only keeps the books and decides; the master forks, and
//! tells it who holds which slot. Its knobs are PM2's:
//!
//! | [`Policy`] | PM2 | meaning |
//! |---|---|---|
//! | `restart_delay` | `exp_backoff_restart_delay` | the wait before the second restart in a row |
//! | `growth`, `max_delay` | the ×1.5 of `exp_backoff_restart_delay`, its 15 s cap | how the wait grows |
//! | `stable_after` | 30 s (`EXP_BACKOFF_RESET_TIMER`) | up this long, and the wait starts over |
//! | `min_uptime` | `min_uptime` | dying sooner is a crash at start |
//! | `max_restarts` | `max_restarts` | more such crashes in a row, and the slot is given up |
//!
//! One difference from PM2: the first restart is immediate. A worker that served for a
//! while and died once is replaced at once, as Node's `cluster.on('exit', () =>
//! cluster.fork())` does; only when its replacements keep dying does the wait grow.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How the supervisor restarts workers.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The wait before the second restart of a slot in a row (the first is immediate).
    pub restart_delay: Duration,
    /// Each restart after that waits this many times longer...
    pub growth: f64,
    /// ...up to this.
    pub max_delay: Duration,
    /// A worker that lives this long has proved itself: its slot's wait starts over.
    pub stable_after: Duration,
    /// A worker that dies sooner than this died "at start".
    pub min_uptime: Duration,
    /// A slot whose workers die at start more than this many times in a row is given up.
    pub max_restarts: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            restart_delay: Duration::from_millis(100),
            growth: 1.5,
            max_delay: Duration::from_secs(15),
            stable_after: Duration::from_secs(30),
            min_uptime: Duration::from_secs(1),
            max_restarts: 10,
        }
    }
}

/// What to do about a worker that exited.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Start a new worker in `slot` once `after` has passed ([`Supervisor::due`] says
    /// when). The worker was up for `up`; `crashes` counts the deaths at start in a row,
    /// this one included (0 if it lived past `min_uptime`).
    Restart {
        slot: usize,
        after: Duration,
        up: Duration,
        crashes: u32,
    },
    /// Slot `slot` crashed at start more than `max_restarts` times in a row: leave it
    /// empty.
    GiveUp { slot: usize, crashes: u32 },
    /// A planned exit (the worker said it was leaving, or was told to): its slot already
    /// has a replacement, or the master is stopping. Nothing to do.
    Planned,
}

/// One place in the pool.
#[derive(Debug)]
struct Slot {
    /// The worker holding it, and since when.
    worker: Option<(u32, Instant)>,
    /// How long the next restart waits.
    delay: Duration,
    /// Deaths at start in a row.
    crashes: u32,
    /// When a restart is due, if one is.
    restart_at: Option<Instant>,
    given_up: bool,
    /// How many workers this slot has started.
    starts: u32,
}

/// The books of a master that keeps its workers alive.
#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    slots: Vec<Slot>,
    /// Workers whose exit is expected: they said they were leaving, or were told to.
    leaving: HashSet<u32>,
}

impl Supervisor {
    /// A pool of `n` slots, numbered 1 to `n`, all empty.
    pub fn new(n: usize, policy: Policy) -> Supervisor {
        let slots = (0..n)
            .map(|_| Slot {
                worker: None,
                delay: Duration::ZERO,
                crashes: 0,
                restart_at: None,
                given_up: false,
                starts: 0,
            })
            .collect();
        Supervisor {
            policy,
            slots,
            leaving: HashSet::new(),
        }
    }

    /// The policy the books follow.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The slot numbers, 1 to n.
    pub fn slots(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.slots.len()
    }

    /// Worker `id` now holds `slot` (it was just forked). Returns how many workers the
    /// slot has started, this one included.
    pub fn started(&mut self, slot: usize, id: u32, now: Instant) -> u32 {
        let s = &mut self.slots[slot - 1];
        s.worker = Some((id, now));
        s.restart_at = None;
        s.starts += 1;
        s.starts
    }

    /// How many workers `slot` has started so far; the next one's start is this plus 1.
    pub fn starts(&self, slot: usize) -> u32 {
        self.slots[slot - 1].starts
    }

    /// The slot worker `id` holds, if it holds one.
    pub fn slot_of(&self, id: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.worker.is_some_and(|(w, _)| w == id))
            .map(|i| i + 1)
    }

    /// How long worker `id` has held its slot, if it holds one.
    pub fn uptime(&self, id: u32, now: Instant) -> Option<Duration> {
        let slot = self.slot_of(id)?;
        let (_, since) = self.slots[slot - 1].worker?;
        Some(now.saturating_duration_since(since))
    }

    /// Worker `id` is leaving on purpose (it said so, or the master told it to): its exit
    /// is planned, not a crash, and it gives up its slot now so that a replacement can
    /// take it at once. Returns the slot it held.
    pub fn leaving(&mut self, id: u32) -> Option<usize> {
        self.leaving.insert(id);
        let slot = self.slot_of(id)?;
        self.slots[slot - 1].worker = None;
        Some(slot)
    }

    /// Gives up worker `id`'s slot now, with no restart: its workers need what no restart
    /// can bring (chapter 7: an address the master cannot bind). Returns the slot.
    pub fn give_up(&mut self, id: u32) -> Option<usize> {
        let slot = self.slot_of(id)?;
        let s = &mut self.slots[slot - 1];
        s.worker = None;
        s.restart_at = None;
        s.given_up = true;
        Some(slot)
    }

    /// Worker `id` exited: decide what becomes of its slot.
    // ANCHOR: exited
    pub fn exited(&mut self, id: u32, now: Instant) -> Verdict {
        if self.leaving.remove(&id) {
            return Verdict::Planned;
        }
        let Some(slot) = self.slot_of(id) else {
            return Verdict::Planned;
        };
        let s = &mut self.slots[slot - 1];
        let up = s.worker.map_or(Duration::ZERO, |(_, since)| now - since);
        s.worker = None;
        self.died(slot, up, now)
    }
    // ANCHOR_END: exited

    /// Worker `id` exited without ever getting ready (chapter 11: it did not serve within
    /// its listen timeout): however long it lived, it died at start.
    pub fn exited_unready(&mut self, id: u32, now: Instant) -> Verdict {
        if self.leaving.remove(&id) {
            return Verdict::Planned;
        }
        let Some(slot) = self.slot_of(id) else {
            return Verdict::Planned;
        };
        self.slots[slot - 1].worker = None;
        self.died(slot, Duration::ZERO, now)
    }

    /// A worker for `slot` could not even be forked (out of processes, out of fds): that
    /// counts as a death at start, with the same backoff.
    pub fn start_failed(&mut self, slot: usize, now: Instant) -> Verdict {
        self.slots[slot - 1].starts += 1;
        self.died(slot, Duration::ZERO, now)
    }

    /// The books of a death after `up`: count it, and give up or schedule a restart.
    // ANCHOR: died
    fn died(&mut self, slot: usize, up: Duration, now: Instant) -> Verdict {
        let policy = self.policy;
        let s = &mut self.slots[slot - 1];
        // A worker that stayed up long enough earns its slot a fresh start.
        if up >= policy.stable_after {
            s.delay = Duration::ZERO;
        }
        // Dying young is what a crash loop looks like; one long life breaks the row.
        if up < policy.min_uptime {
            s.crashes += 1;
        } else {
            s.crashes = 0;
        }
        if s.crashes > policy.max_restarts {
            s.given_up = true;
            return Verdict::GiveUp {
                slot,
                crashes: s.crashes,
            };
        }
        let after = s.delay;
        s.restart_at = Some(now + after);
        s.delay = next_delay(after, &policy);
        Verdict::Restart {
            slot,
            after,
            up,
            crashes: s.crashes,
        }
    }
    // ANCHOR_END: died

    /// The slots whose restart is due at `now`; each is then no longer due.
    pub fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.restart_at.is_some_and(|at| at <= now) {
                s.restart_at = None;
                due.push(i + 1);
            }
        }
        due
    }

    /// When the next restart is due, if any is: how long the master may wait for events.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.restart_at).min()
    }

    /// How many slots are still in service (not given up).
    pub fn in_service(&self) -> usize {
        self.slots.iter().filter(|s| !s.given_up).count()
    }
}

/// The wait before a slot's next restart, when this one waited `delay`.
// ANCHOR: next_delay
fn next_delay(delay: Duration, policy: &Policy) -> Duration {
    // ANCHOR: solution_ch07_backoff
    // The first restart is immediate; if that worker dies too, the next waits
    // restart_delay, and every one after that waits longer, up to the cap.
    match delay.is_zero() {
        true => policy.restart_delay,
        false => delay.mul_f64(policy.growth),
    }
    .min(policy.max_delay)
    // ANCHOR_END: solution_ch07_backoff
}
// ANCHOR_END: next_delay

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Policy {
        Policy {
            restart_delay: Duration::from_millis(100),
            growth: 1.5,
            max_delay: Duration::from_millis(300),
            stable_after: Duration::from_secs(30),
            min_uptime: Duration::from_secs(1),
            max_restarts: 5,
        }
    }

    /// The waits a slot's restarts get while every worker dies 10 ms after its start,
    /// and how the row ends.
    fn crash_loop(sup: &mut Supervisor) -> (Vec<u128>, Verdict) {
        let t = Instant::now();
        let mut id = 1;
        sup.started(1, id, t);
        let mut delays = Vec::new();
        loop {
            match sup.exited(id, t + Duration::from_millis(10)) {
                Verdict::Restart {
                    slot: 1, after, up, ..
                } => {
                    assert_eq!(up, Duration::from_millis(10));
                    delays.push(after.as_millis());
                }
                other => return (delays, other),
            }
            id += 1;
            sup.started(1, id, t);
        }
    }

    #[test]
    fn delays_grow_to_the_cap_then_the_slot_is_given_up() {
        let mut sup = Supervisor::new(2, quick());
        let (delays, end) = crash_loop(&mut sup);
        assert_eq!(delays, [0, 100, 150, 225, 300]);
        assert_eq!(
            end,
            Verdict::GiveUp {
                slot: 1,
                crashes: 6
            }
        );
        assert_eq!(sup.in_service(), 1);
    }

    #[test]
    fn the_first_restart_is_immediate_and_the_second_waits() {
        let mut sup = Supervisor::new(1, quick());
        let t = Instant::now();
        sup.started(1, 1, t);
        let first = sup.exited(1, t + Duration::from_secs(5));
        assert_eq!(
            first,
            Verdict::Restart {
                slot: 1,
                after: Duration::ZERO,
                up: Duration::from_secs(5),
                crashes: 0
            },
            "a worker that served for a while is replaced at once"
        );
        assert_eq!(sup.due(t + Duration::from_secs(5)), vec![1]);
        sup.started(1, 2, t + Duration::from_secs(5));
        let Verdict::Restart { after, .. } = sup.exited(2, t + Duration::from_secs(6)) else {
            panic!()
        };
        assert_eq!(after.as_millis(), 100, "its replacement died too: wait");
    }

    #[test]
    fn a_worker_that_lasts_resets_the_delay() {
        let mut sup = Supervisor::new(1, quick());
        let t = Instant::now();
        sup.started(1, 1, t);
        sup.exited(1, t + Duration::from_secs(2));
        sup.started(1, 2, t + Duration::from_secs(2));
        sup.exited(2, t + Duration::from_secs(4));
        sup.started(1, 3, t + Duration::from_secs(4));
        let Verdict::Restart { after, .. } = sup.exited(3, t + Duration::from_secs(6)) else {
            panic!()
        };
        assert_eq!(after.as_millis(), 150, "it grows while workers die");
        sup.started(1, 4, t + Duration::from_secs(6));
        let Verdict::Restart { after, .. } = sup.exited(4, t + Duration::from_secs(40)) else {
            panic!()
        };
        assert_eq!(after.as_millis(), 0, "30 s up: the wait starts over");
    }

    #[test]
    fn a_long_life_breaks_the_row_of_crashes() {
        let mut sup = Supervisor::new(1, quick());
        let t = Instant::now();
        let mut now = t;
        for id in 1..=5 {
            sup.started(1, id, now);
            now += Duration::from_millis(10);
            assert!(
                matches!(sup.exited(id, now), Verdict::Restart { crashes, .. } if crashes == id)
            );
        }
        // One worker that reaches min_uptime: the row is broken, and five more crashes
        // are needed to give the slot up.
        sup.started(1, 6, now);
        now += Duration::from_secs(2);
        assert!(matches!(
            sup.exited(6, now),
            Verdict::Restart { crashes: 0, .. }
        ));
        for id in 7..=11 {
            sup.started(1, id, now);
            now += Duration::from_millis(10);
            assert!(matches!(sup.exited(id, now), Verdict::Restart { .. }));
        }
        sup.started(1, 12, now);
        assert!(matches!(
            sup.exited(12, now),
            Verdict::GiveUp { crashes: 6, .. }
        ));
    }

    #[test]
    fn a_planned_exit_is_not_a_crash_and_frees_the_slot() {
        let mut sup = Supervisor::new(1, quick());
        let t = Instant::now();
        sup.started(1, 7, t);
        assert_eq!(sup.leaving(7), Some(1));
        assert_eq!(sup.slot_of(7), None);
        sup.started(1, 8, t);
        assert_eq!(sup.exited(7, t), Verdict::Planned);
        assert_eq!(sup.slot_of(8), Some(1));
    }

    #[test]
    fn a_slot_given_up_at_once_is_never_restarted() {
        let mut sup = Supervisor::new(2, quick());
        let t = Instant::now();
        sup.started(1, 1, t);
        sup.started(2, 2, t);
        assert_eq!(sup.give_up(1), Some(1));
        assert_eq!(sup.give_up(1), None, "worker 1 holds no slot any more");
        assert_eq!(sup.in_service(), 1);
        assert_eq!(sup.exited(1, t), Verdict::Planned, "its exit is no crash");
        assert_eq!(sup.next_due(), None, "and no restart is due");
        assert_eq!(sup.slot_of(2), Some(2));
    }

    #[test]
    fn a_worker_that_never_got_ready_died_at_start_however_long_it_lived() {
        let mut sup = Supervisor::new(1, quick());
        let t = Instant::now();
        sup.started(1, 1, t);
        let verdict = sup.exited_unready(1, t + Duration::from_secs(5));
        assert!(
            matches!(verdict, Verdict::Restart { crashes: 1, .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_failed_fork_counts_as_a_crash_at_start() {
        let mut sup = Supervisor::new(1, quick());
        let t = Instant::now();
        for _ in 0..5 {
            assert!(matches!(sup.start_failed(1, t), Verdict::Restart { .. }));
        }
        assert!(matches!(sup.start_failed(1, t), Verdict::GiveUp { .. }));
        assert_eq!(sup.starts(1), 6);
    }

    #[test]
    fn restarts_come_due_in_time() {
        let mut sup = Supervisor::new(2, quick());
        let t = Instant::now();
        sup.started(1, 1, t);
        sup.started(2, 2, t);
        sup.exited(2, t + Duration::from_millis(10));
        sup.started(2, 3, t + Duration::from_millis(10));
        sup.exited(3, t + Duration::from_secs(5));
        assert_eq!(sup.next_due(), Some(t + Duration::from_millis(5100)));
        assert!(sup.due(t + Duration::from_secs(5)).is_empty());
        assert_eq!(sup.due(t + Duration::from_secs(6)), vec![2]);
        assert_eq!(sup.next_due(), None);
    }
}

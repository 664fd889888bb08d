//! The worker's side of a count kept in another process (`--state master` or `agent`):
//! ask for the next number (`incr`), and answer the request when the reply (`count N`)
//! comes.
//!
//! The worker's loop never waits for a reply. The request is left for later (chapter 0's
//! `Server::handler_later`) and its question joins a line, oldest first. A channel delivers
//! its messages in order, and the master and the agent answer in order, so a reply always
//! belongs to the oldest question still waiting. A question that waits too long gets its
//! request a 503, but keeps its place in the line: if its reply comes after all, it must
//! not be taken for the next question's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ch00_server_models::server::Later;
use ch02_ipc_messaging::channel::Channel;
use shared::http::Response;
use shared::log;

/// The most questions a worker leaves waiting for replies. Past it, a request is answered
/// 503 at once. It also bounds what a stopped master or agent leaves unread in the
/// channel: 128 short messages sit well inside a socket's send buffer (about 200 KiB, some
/// 270 such messages), so `send` never blocks the worker's loop.
pub const MAX_WAITING: usize = 128;

/// The questions one worker has sent and the requests waiting for their replies.
pub struct Questions {
    /// Who answers, for the log and the 503s: `the master`, `the agent`.
    who: &'static str,
    /// Where the questions go: the channel to the master, or the line to the agent; `None`
    /// while there is no agent.
    to: Option<Channel>,
    /// One per question sent and not replied to yet, oldest first.
    waiting: VecDeque<Question>,
    /// How long a request waits for its reply before it is answered 503.
    timeout: Duration,
    /// Requests have been answered 503 for want of a reply since the last reply: logged
    /// once, when it starts and when it ends.
    late: bool,
    /// This worker's id, for the answers' text.
    id: u32,
}

/// One question sent: the request waiting for its reply (`None` once it was answered 503),
/// and when it was asked.
struct Question {
    later: Option<Later>,
    asked: Instant,
}

impl Questions {
    /// Worker `id`'s questions to `who`, sent on `to`; a request waits `timeout` at most.
    pub fn new(who: &'static str, to: Option<Channel>, timeout: Duration, id: u32) -> Questions {
        Questions {
            who,
            to,
            waiting: VecDeque::new(),
            timeout,
            late: false,
            id,
        }
    }

    /// Asks for the next count, for the request `later`. `None`: it waits for the reply;
    /// `Some(503)` at once when no question can be sent.
    // ANCHOR: ask
    pub fn ask(&mut self, later: Later) -> Option<Response> {
        if self.waiting.len() >= MAX_WAITING {
            let why = format!("{MAX_WAITING} requests already wait for {}", self.who);
            return Some(unavailable(&why));
        }
        let Some(to) = &self.to else {
            return Some(unavailable("no agent to ask; the master starts one"));
        };
        match to.send("incr") {
            Ok(()) => {
                self.waiting.push_back(Question {
                    later: Some(later),
                    asked: Instant::now(),
                });
                None
            }
            Err(e) => Some(unavailable(&format!("could not ask {}: {e}", self.who))),
        }
    }
    // ANCHOR_END: ask

    /// A reply came: it answers the oldest question. Returns the request to answer and
    /// its answer, if that request still waits.
    // ANCHOR: reply
    pub fn reply(&mut self, text: &str) -> Option<(Later, Response)> {
        // ANCHOR: solution_ch06b_reply
        let Some(question) = self.waiting.pop_front() else {
            log!("'{text}' from {} answers no question; dropped", self.who);
            return None;
        };
        if std::mem::take(&mut self.late) {
            log!("{} replies again", self.who);
        }
        // Its request was answered 503 already: this is its late reply, and the next
        // question's is still to come.
        let later = question.later?;
        let n = text.strip_prefix("count ").and_then(|n| n.parse().ok());
        let response = match n {
            Some(n) => count(n, self.id),
            None => {
                log!("{} replied '{text}', not 'count N'; answered 503", self.who);
                unavailable(&format!("{} replied '{text}', not a count", self.who))
            }
        };
        Some((later, response))
        // ANCHOR_END: solution_ch06b_reply
    }
    // ANCHOR_END: reply

    /// Every request that has waited for its reply longer than the timeout, with a 503.
    /// Their questions keep their places in the line, for the replies still to come.
    // ANCHOR: overdue
    pub fn overdue(&mut self) -> Vec<(Later, Response)> {
        let mut due = Vec::new();
        for question in &mut self.waiting {
            // Oldest first: once one is in time, so are all behind it.
            if question.asked.elapsed() < self.timeout {
                break;
            }
            if let Some(later) = question.later.take() {
                let why = format!("no reply from {} within {:?}", self.who, self.timeout);
                due.push((later, unavailable(&why)));
            }
        }
        if !due.is_empty() && !std::mem::replace(&mut self.late, true) {
            log!(
                "no reply from {} within {:?}: answering 503 until it replies",
                self.who,
                self.timeout
            );
        }
        due
    }
    // ANCHOR_END: overdue

    /// The line to the agent is gone: no reply will come on it, so every waiting request
    /// gets a 503, and so does every new one until [`Questions::connect`].
    pub fn lost(&mut self, why: &str) -> Vec<(Later, Response)> {
        self.to = None;
        let answers: Vec<(Later, Response)> = self
            .waiting
            .drain(..)
            .filter_map(|question| question.later)
            .map(|later| (later, unavailable(why)))
            .collect();
        let waited = match answers.len() {
            0 => String::new(),
            1 => ", and the request that waited for it gets a 503".to_string(),
            n => format!(", and the {n} requests that waited for it get a 503"),
        };
        log!("{why}{waited}; /count answers 503 until the master sends a line to a new agent");
        answers
    }

    /// Questions go to `to` from now on: a line to a new agent.
    pub fn connect(&mut self, to: Channel) {
        self.to = Some(to);
    }

    /// The line questions go to now.
    pub fn line(&self) -> Option<&Channel> {
        self.to.as_ref()
    }
}

/// Worker `id`'s answer to `/count`: `count N by PID (worker ID)`.
pub fn count(n: u64, id: u32) -> Response {
    let pid = std::process::id();
    Response::ok(format!("count {n} by {pid} (worker {id})\n"))
}

/// A 503 that says why there is no count.
pub fn unavailable(why: &str) -> Response {
    Response {
        status: 503,
        body: format!("no count: {why}\n"),
    }
}

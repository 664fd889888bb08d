//! The cluster module's messages: what a Node worker says to its primary, and what the
//! primary answers, on the channel of [`crate::ipc`].
//!
//! Every one is an object with `cmd: "NODE_CLUSTER"` and a `seq`, a counter of the
//! sender's own (`sendHelper` in `lib/internal/cluster/utils.js`). An answer names the
//! message it answers in `ack`: the worker's `queryServer` callback, or the primary's
//! `newconn` callback, waits for the message whose `ack` is its `seq`. The worker's side
//! is `lib/internal/cluster/child.js`; Node's own primary is `primary.js`, with
//! `round_robin_handle.js` and `shared_handle.js`.
//!
//! | message | from | what it says |
//! |---|---|---|
//! | `{act: "online"}` | worker | the worker runs (sent by `_setupWorker`, before any user code) |
//! | `{act: "queryServer", address, port, addressType, fd, index}` | worker | `server.listen()` was called: listen there for me |
//! | `{errno, key, ack, data, sockname}` | primary | done (round-robin: no fd, the address bound); or `errno`, the bind's error |
//! | `{act: "listening", address, port, ...}` | worker | the server listens: the worker serves |
//! | `NODE_HANDLE` `{act: "newconn", key}` + fd | primary | a connection accepted on `key`'s socket |
//! | `{ack, accepted}` | worker | taken (`true`), or not (`false`: its server is closing, or full) |
//! | `{act: "close", key}` | worker | this server is closing: send it no more |
//! | `{act: "disconnect"}` | primary | close your servers, finish what you hold, then go |
//! | `{act: "exitedAfterDisconnect"}` | worker | I leave on purpose (`worker.disconnect()`): acknowledge |

use serde_json::{json, Value};

/// What a worker said on its channel, as the primary understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// `online`: the worker's cluster code runs.
    Online,
    /// `queryServer`: listen for me.
    QueryServer(Query),
    /// `listening`: the server listens on `port`; from now on the worker serves.
    Listening { port: u64 },
    /// The answer to `newconn` number `ack`.
    Accepted { ack: u64, accepted: bool },
    /// `close`: the server of `key` is closing in the worker.
    Close { key: String },
    /// `exitedAfterDisconnect`: the worker leaves on purpose and waits for an answer.
    ExitedAfterDisconnect { seq: u64 },
    /// `NODE_HANDLE_ACK` / `NODE_HANDLE_NACK`: the channel's acknowledgement of a handle
    /// (`ipc::Channel::acknowledged`); `false` if the fd did not arrive.
    HandleAck { arrived: bool },
    /// A `NODE_HANDLE` from the worker: something it passed with `process.send(msg,
    /// handle)`. Acknowledged, and closed.
    Handle,
    /// Anything else: a message of the program's own (`process.send()`), or a command
    /// this primary does not know. Described for the log.
    Unknown(String),
}

/// A worker's `queryServer`: where its `server.listen()` wants to listen.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub seq: u64,
    /// `null` for "any address" (`listen(port)` without a host).
    pub address: Option<String>,
    pub port: i64,
    /// `4` or `6` for TCP; `-1` for a Unix socket path, `"udp4"` for UDP.
    pub address_type: Value,
    /// `server.listen({ fd })`: an fd the worker already has.
    pub fd: Option<i64>,
    /// The how-many-th `listen` on this same address in this worker (from 0).
    pub index: u64,
}

impl Query {
    /// The handle's key, exactly as Node's primary makes it (`queryServer` in
    /// `primary.js`): `${address}:${port}:${addressType}:${fd}:${index}`, so an absent
    /// address reads `null` and an absent fd `undefined`, as in JavaScript.
    // ANCHOR: key
    pub fn key(&self) -> String {
        let address = self.address.as_deref().unwrap_or("null");
        let address_type = match &self.address_type {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let fd = self.fd.map_or("undefined".to_string(), |fd| fd.to_string());
        format!("{address}:{}:{address_type}:{fd}:{}", self.port, self.index)
    }
    // ANCHOR_END: key

    /// A TCP listen on a port: the only kind this primary balances.
    pub fn is_tcp(&self) -> bool {
        self.fd.is_none()
            && (0..=65535).contains(&self.port)
            && matches!(self.address_type.as_i64(), Some(4 | 6))
    }
}

/// Reads one message from a worker.
// ANCHOR: parse
pub fn parse(message: &Value) -> FromWorker {
    let number = |field: &str| message[field].as_u64();
    match message["cmd"].as_str() {
        Some("NODE_HANDLE_ACK") => return FromWorker::HandleAck { arrived: true },
        Some("NODE_HANDLE_NACK") => return FromWorker::HandleAck { arrived: false },
        Some("NODE_HANDLE") => return FromWorker::Handle,
        Some("NODE_CLUSTER") => {}
        Some(other) => return FromWorker::Unknown(format!("an internal message {other:?}")),
        None => return FromWorker::Unknown("a message of the program's own".into()),
    }
    let Some(seq) = number("seq") else {
        return FromWorker::Unknown("a cluster message without a seq".into());
    };
    match (message["act"].as_str(), number("ack")) {
        (Some("online"), _) => FromWorker::Online,
        (Some("queryServer"), _) => FromWorker::QueryServer(Query {
            seq,
            address: message["address"].as_str().map(String::from),
            port: message["port"].as_i64().unwrap_or(-1),
            address_type: message["addressType"].clone(),
            fd: message["fd"].as_i64(),
            index: number("index").unwrap_or(0),
        }),
        (Some("listening"), _) => FromWorker::Listening {
            port: number("port").unwrap_or(0),
        },
        (Some("close"), _) => FromWorker::Close {
            key: message["key"].as_str().unwrap_or_default().to_string(),
        },
        (Some("exitedAfterDisconnect"), _) => FromWorker::ExitedAfterDisconnect { seq },
        (None, Some(ack)) => FromWorker::Accepted {
            ack,
            accepted: message["accepted"] == true,
        },
        (act, _) => FromWorker::Unknown(format!("a cluster message {act:?}")),
    }
}
// ANCHOR_END: parse

/// The primary's messages. Each takes the primary's next `seq`.
pub struct Primary {
    seq: u64,
}

impl Primary {
    pub fn new() -> Primary {
        Primary { seq: 0 }
    }

    /// `{cmd: "NODE_CLUSTER", ...fields, seq}`, with the next seq.
    fn message(&mut self, fields: Value) -> (u64, Value) {
        let seq = self.seq;
        self.seq += 1;
        let mut message = json!({ "cmd": "NODE_CLUSTER" });
        if let (Some(message), Value::Object(fields)) = (message.as_object_mut(), fields) {
            message.extend(fields);
            message.insert("seq".into(), json!(seq));
        }
        (seq, message)
    }

    /// The answer to `query`: the key of the handle that serves it, and either the
    /// address bound (`sockname`, round-robin) or the bind's error as libuv's negative
    /// errno (`-98` for `EADDRINUSE`), which the worker's `listen` turns into its own
    /// error. `ack` is the worker's seq: that is how its callback finds this answer.
    // ANCHOR: query_reply
    pub fn query_reply(&mut self, query: &Query, key: &str, bound: Result<Value, i32>) -> Value {
        let reply = match bound {
            Ok(sockname) => json!({
                "errno": null, "key": key, "ack": query.seq, "data": null,
                "sockname": sockname,
            }),
            Err(errno) => json!({
                "errno": -errno, "key": key, "ack": query.seq, "data": null,
            }),
        };
        self.message(reply).1
    }
    // ANCHOR_END: query_reply

    /// `newconn`: a connection accepted on `key`'s socket; its fd travels with it, and
    /// the worker answers with `ack` set to the seq returned here.
    // ANCHOR: newconn
    pub fn newconn(&mut self, key: &str) -> (u64, Value) {
        self.message(json!({ "act": "newconn", "key": key }))
    }
    // ANCHOR_END: newconn

    /// `disconnect`: close every server, finish, and exit.
    pub fn disconnect(&mut self) -> Value {
        self.message(json!({ "act": "disconnect" })).1
    }

    /// The answer to the worker's message `seq` (its `exitedAfterDisconnect`).
    pub fn ack(&mut self, seq: u64) -> Value {
        self.message(json!({ "ack": seq })).1
    }
}

/// A socket's address as `server.address()` reports it: `{address, family, port}`.
pub fn sockname(addr: std::net::SocketAddr) -> Value {
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    json!({ "address": addr.ip().to_string(), "family": family, "port": addr.port() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines copied from `strace` of a Node v20 cluster (`PORT=18777 node app.js`).
    const QUERY: &str = r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":18777,"addressType":4,"backlog":0,"seq":1}"#;

    #[test]
    fn reads_what_a_node_worker_sends() {
        let query = serde_json::from_str(QUERY).unwrap();
        let FromWorker::QueryServer(query) = parse(&query) else {
            panic!("not a queryServer")
        };
        assert_eq!(query.key(), "null:18777:4:undefined:0", "Node's own key");
        assert!(query.is_tcp());
        for (line, expected) in [
            (
                r#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#,
                FromWorker::Online,
            ),
            (
                r#"{"cmd":"NODE_CLUSTER","ack":2,"accepted":true,"seq":3}"#,
                FromWorker::Accepted {
                    ack: 2,
                    accepted: true,
                },
            ),
            (
                r#"{"cmd":"NODE_CLUSTER","act":"close","key":"k","seq":4}"#,
                FromWorker::Close { key: "k".into() },
            ),
            (
                r#"{"cmd":"NODE_HANDLE_ACK"}"#,
                FromWorker::HandleAck { arrived: true },
            ),
            (
                r#""hello""#,
                FromWorker::Unknown("a message of the program's own".into()),
            ),
        ] {
            assert_eq!(parse(&serde_json::from_str(line).unwrap()), expected);
        }
    }

    #[test]
    fn answers_as_nodes_primary_does() {
        let query = serde_json::from_str(QUERY).unwrap();
        let FromWorker::QueryServer(query) = parse(&query) else {
            panic!()
        };
        let mut primary = Primary::new();
        let addr = "127.0.0.1:18777".parse().unwrap();
        let reply = primary.query_reply(&query, &query.key(), Ok(sockname(addr)));
        assert_eq!(
            reply.to_string(),
            r#"{"cmd":"NODE_CLUSTER","errno":null,"key":"null:18777:4:undefined:0","ack":1,"data":null,"sockname":{"address":"127.0.0.1","family":"IPv4","port":18777},"seq":0}"#
        );
        let refused = primary.query_reply(&query, "k", Err(98));
        assert_eq!(refused["errno"], -98);
        let (seq, newconn) = primary.newconn("k");
        assert_eq!(seq, 2);
        assert_eq!(
            newconn.to_string(),
            r#"{"cmd":"NODE_CLUSTER","act":"newconn","key":"k","seq":2}"#
        );
    }
}

//! The audit log's hash chain, independent of any database.
//!
//! Every event's hash is `hex(sha256(prev_hash || canonical))`, where
//! `prev_hash` is the previous event's hash as 64 hex digits (64 zeros for
//! the first event) and `canonical` is the JSON object
//! `{"actor", "at", "data", "kind", "seq", "session"}` with its keys (and
//! every nested object's keys) sorted and no whitespace.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::types::{BrokenLink, Problem, Verification};

/// The `prev_hash` of a session's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields an event's hash covers.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    pub session: &'a str,
    pub seq: u64,
    pub at: i64,
    pub kind: &'a str,
    pub actor: Option<&'a str>,
    pub data: &'a Value,
}

/// `value` as JSON with sorted keys and no whitespace, whatever the order
/// of its maps.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        // null, booleans and numbers print the same compact way in any order.
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&Value::String(s.to_string()).to_string());
}

/// The canonical JSON of an event, the text its hash covers after the
/// previous hash.
pub fn canonical_event(f: &Fields<'_>) -> String {
    // Built as a map so that the keys are sorted like any other object.
    let mut map = serde_json::Map::new();
    map.insert(
        "actor".into(),
        f.actor.map_or(Value::Null, |a| Value::String(a.into())),
    );
    map.insert("at".into(), Value::from(f.at));
    map.insert("data".into(), f.data.clone());
    map.insert("kind".into(), Value::String(f.kind.into()));
    map.insert("seq".into(), Value::from(f.seq));
    map.insert("session".into(), Value::String(f.session.into()));
    canonical_json(&Value::Object(map))
}

/// `hex(sha256(prev_hash || canonical_event))`.
pub fn event_hash(prev_hash: &str, f: &Fields<'_>) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical_event(f).as_bytes());
    hex(&h.finalize())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One row of `session_events` as stored.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub session: String,
    pub seq: u64,
    pub at: i64,
    pub kind: String,
    pub actor: Option<String>,
    /// The `data` column's text.
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredEvent {
    /// The hash this row would have if it had been written at `seq` after
    /// `prev_hash`; `None` when its data is not JSON.
    fn hash_as(&self, seq: u64, prev_hash: &str) -> Option<String> {
        let data: Value = serde_json::from_str(&self.data).ok()?;
        Some(event_hash(
            prev_hash,
            &Fields {
                session: &self.session,
                seq,
                at: self.at,
                kind: &self.kind,
                actor: self.actor.as_deref(),
                data: &data,
            },
        ))
    }
}

/// Checks a session's log, `rows` in ascending seq order, against itself
/// and against the count and head the session row records. Reports the
/// first broken link.
pub fn verify(
    session: &str,
    recorded_count: u64,
    recorded_head: &str,
    rows: &[StoredEvent],
) -> Verification {
    let mut prev = GENESIS.to_string();
    let mut expected: u64 = 1;
    let broken = 'check: {
        for row in rows {
            if row.seq != expected {
                // Rows come sorted and seqs are unique, so the log skips
                // `expected`.
                break 'check Some(BrokenLink {
                    seq: expected,
                    problem: Problem::Deleted,
                    reason: format!(
                        "event {expected} is missing (the log goes on at event {}): it was deleted",
                        row.seq
                    ),
                });
            }
            match row.hash_as(row.seq, &row.prev_hash) {
                None => {
                    break 'check Some(BrokenLink {
                        seq: row.seq,
                        problem: Problem::Edited,
                        reason: format!(
                            "event {} has data that is not JSON: it was edited",
                            row.seq
                        ),
                    });
                }
                Some(h) if h != row.hash => {
                    // Written at another seq? Then it was moved, else edited.
                    let last = rows
                        .last()
                        .map_or(0, |r| r.seq)
                        .max(recorded_count)
                        .max(rows.len() as u64);
                    let moved_from = (1..=last)
                        .filter(|s| *s != row.seq)
                        .find(|s| row.hash_as(*s, &row.prev_hash).as_deref() == Some(&row.hash));
                    break 'check Some(match moved_from {
                        Some(orig) => BrokenLink {
                            seq: row.seq,
                            problem: Problem::Reordered,
                            reason: format!(
                                "the event at seq {} was written as event {orig}: events were \
                                 reordered",
                                row.seq
                            ),
                        },
                        None => BrokenLink {
                            seq: row.seq,
                            problem: Problem::Edited,
                            reason: format!(
                                "event {} does not match its hash: its content was edited",
                                row.seq
                            ),
                        },
                    });
                }
                Some(_) => {}
            }
            if row.prev_hash != prev {
                let reason = if row.seq == 1 {
                    "event 1 does not start the chain (its prev_hash is not 64 zeros): it was \
                     replaced"
                        .to_string()
                } else {
                    format!(
                        "event {} does not follow event {} (its prev_hash is not that event's \
                         hash): events were reordered, or event {} was edited and its hash \
                         recomputed",
                        row.seq,
                        row.seq - 1,
                        row.seq - 1
                    )
                };
                break 'check Some(BrokenLink {
                    seq: row.seq,
                    problem: Problem::Reordered,
                    reason,
                });
            }
            prev.clone_from(&row.hash);
            expected += 1;
        }
        let n = expected - 1;
        if n < recorded_count {
            let missing = recorded_count - n;
            let which = if missing == 1 {
                format!("event {recorded_count} was")
            } else {
                format!("events {} to {recorded_count} were", n + 1)
            };
            break 'check Some(BrokenLink {
                seq: n + 1,
                problem: Problem::Truncated,
                reason: format!(
                    "the session records {recorded_count} events but the log ends at event {n}: \
                     the last {which} deleted"
                ),
            });
        }
        if n > recorded_count {
            break 'check Some(BrokenLink {
                seq: recorded_count + 1,
                problem: Problem::Added,
                reason: format!(
                    "the log has {n} events but the session records {recorded_count}: events \
                     after {recorded_count} were added outside the store"
                ),
            });
        }
        if prev != recorded_head {
            break 'check Some(BrokenLink {
                seq: n,
                problem: Problem::HeadMismatch,
                reason: format!(
                    "the chain ends in another hash than the session records: event {n} or the \
                     session's head was changed"
                ),
            });
        }
        None
    };
    let intact_through = match &broken {
        None => expected - 1,
        Some(b) => match b.problem {
            // The links held to the end of the log; what follows the
            // recorded count is not trusted, nor is a last event whose hash
            // is not the recorded head.
            Problem::Truncated => expected - 1,
            Problem::Added => recorded_count,
            Problem::HeadMismatch => b.seq.saturating_sub(1),
            _ => b.seq - 1,
        },
    };
    Verification {
        session: session.to_string(),
        ok: broken.is_none(),
        events: rows.len() as u64,
        recorded_count,
        recorded_head: recorded_head.to_string(),
        intact_through,
        broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: &str = "0123456789abcdef0123456789abcdef";

    fn chain(n: u64) -> Vec<StoredEvent> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let data = json!({"n": seq, "b": [1, {"z": 1, "a": 2}]});
                let f = Fields {
                    session: S,
                    seq,
                    at: 1000 + seq as i64,
                    kind: "signal",
                    actor: Some("uid 0 (root)"),
                    data: &data,
                };
                let hash = event_hash(&prev, &f);
                let row = StoredEvent {
                    session: S.into(),
                    seq,
                    at: f.at,
                    kind: f.kind.into(),
                    actor: f.actor.map(str::to_string),
                    data: canonical_json(&data),
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                row
            })
            .collect()
    }

    fn head(rows: &[StoredEvent]) -> String {
        rows.last().map_or(GENESIS.into(), |r| r.hash.clone())
    }

    #[test]
    fn canonical_json_sorts_keys_everywhere() {
        let v = json!({"b": 1, "a": {"d": [true, null, {"y": "é\n", "x": 1.5}], "c": -3}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":-3,"d":[true,null,{"x":1.5,"y":"é\n"}]},"b":1}"#
        );
    }

    #[test]
    fn known_answer() {
        // The documented formula, spelled out by hand.
        let data = json!({"signal": "SIGTERM"});
        let f = Fields {
            session: S,
            seq: 1,
            at: 1_700_000_000_000,
            kind: "created",
            actor: None,
            data: &data,
        };
        let text = format!(
            "{GENESIS}{{\"actor\":null,\"at\":1700000000000,\"data\":{{\"signal\":\"SIGTERM\"}},\
             \"kind\":\"created\",\"seq\":1,\"session\":\"{S}\"}}"
        );
        assert_eq!(event_hash(GENESIS, &f), sha256_hex(text.as_bytes()));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let rows = chain(5);
        let v = verify(S, 5, &head(&rows), &rows);
        assert!(v.ok, "{v:?}");
        assert_eq!((v.events, v.intact_through), (5, 5));
        let v = verify(S, 0, GENESIS, &[]);
        assert!(v.ok);
    }

    #[test]
    fn edits_are_found() {
        let mut rows = chain(5);
        let h = head(&rows);
        rows[2].data = r#"{"n":99}"#.into();
        let b = verify(S, 5, &h, &rows).broken.unwrap();
        assert_eq!((b.seq, b.problem), (3, Problem::Edited));
        rows[2].data = "not json".into();
        let b = verify(S, 5, &h, &rows).broken.unwrap();
        assert_eq!((b.seq, b.problem), (3, Problem::Edited));
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let mut rows = chain(5);
        let h = head(&rows);
        rows[1].at += 1;
        rows[1].hash = rows[1].hash_as(2, &rows[1].prev_hash).unwrap();
        let b = verify(S, 5, &h, &rows).broken.unwrap();
        assert_eq!((b.seq, b.problem), (3, Problem::Reordered));
    }

    #[test]
    fn deletions_are_found() {
        let rows = chain(5);
        let h = head(&rows);
        let mut middle = rows.clone();
        middle.remove(2);
        let v = verify(S, 5, &h, &middle);
        let b = v.broken.unwrap();
        assert_eq!((b.seq, b.problem), (3, Problem::Deleted));
        assert_eq!(v.intact_through, 2);

        let v = verify(S, 5, &h, &rows[..4]);
        let b = v.broken.unwrap();
        assert_eq!((b.seq, b.problem), (5, Problem::Truncated));
        assert_eq!(v.intact_through, 4);
        let b = verify(S, 5, &h, &rows[..2]).broken.unwrap();
        assert_eq!((b.seq, b.problem), (3, Problem::Truncated));
        assert!(
            b.reason.contains("events 3 to 5 were deleted"),
            "{}",
            b.reason
        );
    }

    #[test]
    fn reordering_is_found() {
        let mut rows = chain(5);
        let h = head(&rows);
        // Swap the seqs of rows 2 and 4, then sort by seq as the store does.
        rows[1].seq = 4;
        rows[3].seq = 2;
        rows.sort_by_key(|r| r.seq);
        let b = verify(S, 5, &h, &rows).broken.unwrap();
        assert_eq!((b.seq, b.problem), (2, Problem::Reordered));
        assert!(b.reason.contains("written as event 4"), "{}", b.reason);
    }

    #[test]
    fn head_and_count_are_checked() {
        let rows = chain(3);
        let b = verify(S, 2, &head(&rows), &rows).broken.unwrap();
        assert_eq!((b.seq, b.problem), (3, Problem::Added));
        let b = verify(S, 3, GENESIS, &rows).broken.unwrap();
        assert_eq!((b.seq, b.problem), (3, Problem::HeadMismatch));
    }
}

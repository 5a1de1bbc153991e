//! A session as the pages show it: times and durations in words, and its
//! recorded plan read as what the session could do. The plan is read as
//! JSON, field by field, so that the web crate needs no sandbox types; a
//! field it cannot read shows as unknown, never as "nothing".

use serde_json::Value;
use store::Session;

/// What the header shows of who is looking: their name and a logout
/// button when they logged in, the users page for admins. Empty on a
/// server without users.
#[derive(Clone, Debug, Default)]
pub struct Nav {
    pub user: String,
    pub role: String,
    pub logged_in: bool,
    pub admin: bool,
}

impl Nav {
    pub fn of(p: &crate::auth::Principal) -> Nav {
        Nav {
            user: p.name.clone(),
            role: p.role.to_string(),
            logged_in: p.via == crate::auth::Via::Login,
            admin: p.is_admin() && p.via != crate::auth::Via::Local,
        }
    }
}

/// One row of the sessions table.
pub struct Row {
    pub id: String,
    pub short: String,
    pub status: String,
    pub exit: String,
    pub profile: String,
    pub backend: String,
    pub user: String,
    pub workspace: String,
    pub command: String,
    pub created: String,
    pub duration: String,
    pub network: String,
    pub rw_paths: String,
    pub masked: String,
}

impl Row {
    pub fn of(s: &Session, now_ms: i64) -> Row {
        let plan = Plan::read(&s.policy);
        Row {
            id: s.id.clone(),
            short: s.short_id().to_string(),
            status: s.status.to_string(),
            exit: s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            profile: s.profile.clone(),
            backend: s.backend.to_string(),
            user: s.user.clone(),
            workspace: s.workspace.clone(),
            command: s.command.join(" "),
            created: when(s.created_at),
            duration: duration(
                s.started_at.unwrap_or(s.created_at),
                s.ended_at.unwrap_or(now_ms),
            ),
            network: plan.network.clone(),
            rw_paths: plan.count(
                plan.mounts
                    .as_ref()
                    .map(|m| m.iter().filter(|m| m.writable).count()),
            ),
            masked: plan.count(plan.masked.as_ref().map(Vec::len)),
        }
    }
}

/// A mount of the plan: where, from where, writable or not, and why.
pub struct Mount {
    pub destination: String,
    pub source: String,
    pub writable: bool,
    pub purpose: String,
    /// A host path bound in (not a tmpfs or other in-memory mount).
    pub from_host: bool,
}

/// A masked path and the rule that masked it.
pub struct Masked {
    pub path: String,
    pub reason: String,
}

/// The recorded plan, as far as it can be read.
pub struct Plan {
    pub network: String,
    pub mounts: Option<Vec<Mount>>,
    pub masked: Option<Vec<Masked>>,
    pub env: Option<Vec<String>>,
    pub limits: Vec<(String, String)>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Plan {
    pub fn read(policy: &str) -> Plan {
        let v: Value = serde_json::from_str(policy).unwrap_or(Value::Null);
        let mounts = v.get("mounts").and_then(Value::as_array).map(|a| {
            let mut m: Vec<Mount> = a
                .iter()
                .map(|m| Mount {
                    destination: text(&m["destination"]),
                    source: match &m["source"]["type"] {
                        Value::String(t) if t == "bind" => text(&m["source"]["path"]),
                        t => text(t),
                    },
                    writable: m["writable"].as_bool().unwrap_or(false),
                    purpose: text(&m["purpose"]),
                    from_host: m["source"]["type"] == "bind",
                })
                .collect();
            // What the agent can change first: the blast radius.
            m.sort_by_key(|m| !m.writable);
            m
        });
        let masked = v.get("masked").and_then(Value::as_array).map(|a| {
            a.iter()
                .map(|m| Masked {
                    path: text(&m["path"]),
                    reason: reason(&m["reason"]),
                })
                .collect()
        });
        let env = v
            .get("env")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|e| text(&e["name"])).collect());
        let limits = v
            .get("limits")
            .and_then(Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default();
        Plan {
            network: v
                .get("network")
                .map(text)
                .unwrap_or_else(|| "unknown".into()),
            mounts,
            masked,
            env,
            limits,
        }
    }

    fn count(&self, n: Option<usize>) -> String {
        n.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
    }
}

/// A mask's reason in words: its kind, and the rule or what it names.
fn reason(r: &Value) -> String {
    let kind = text(&r["kind"]).replace('_', " ");
    let detail = ["rule", "what", "entry"]
        .iter()
        .find_map(|k| r.get(*k).map(text))
        .unwrap_or_default();
    if detail.is_empty() {
        kind
    } else {
        format!("{kind}: {detail}")
    }
}

pub use store::utc as when;

/// `3s`, `4m 05s`, `2h 03m`.
pub fn duration(from_ms: i64, to_ms: i64) -> String {
    let s = (to_ms - from_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_dates() {
        assert_eq!(duration(0, 3_400), "3s");
        assert_eq!(duration(0, 245_000), "4m 05s");
        assert_eq!(duration(0, 7_380_000), "2h 03m");
        assert_eq!(duration(5, 0), "0s");
    }

    #[test]
    fn a_plan_reads_writable_mounts_first_and_unknowns_as_unknown() {
        let p = Plan::read(
            r#"{"network":"none","mounts":[
                {"destination":"/usr","source":{"type":"bind","path":"/usr"},"writable":false,"purpose":"rootfs"},
                {"destination":"/w","source":{"type":"bind","path":"/home/u/w"},"writable":true,"purpose":"workspace"}],
              "masked":[{"path":"/w/.env","kind":"file","reason":{"kind":"name_rule","rule":"dotenv file"}}],
              "env":[{"name":"HOME","source":{"kind":"base"}}]}"#,
        );
        let m = p.mounts.as_ref().unwrap();
        assert!(m[0].writable && m[0].source == "/home/u/w" && m[0].from_host);
        assert_eq!(p.masked.unwrap()[0].reason, "name rule: dotenv file");
        assert_eq!(p.env.unwrap(), ["HOME"]);
        let broken = Plan::read("not json");
        assert!(broken.mounts.is_none() && broken.masked.is_none());
        assert_eq!(broken.network, "unknown");
    }
}

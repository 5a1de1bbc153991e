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
    /// The audit chain's verdict: ✓, ✗ or ?; empty where not checked.
    pub chain: &'static str,
}

/// What a row shows of a session's policy: its network, how many
/// read-write host paths, how many masked paths. Sessions of one profile
/// share a policy, so the server keeps these by the policy's hash.
#[derive(Clone, Debug)]
pub struct Chips {
    pub network: String,
    pub rw_paths: String,
    pub masked: String,
}

impl Chips {
    pub fn of(policy: &str) -> Chips {
        let plan = Plan::read(policy);
        Chips {
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

impl Row {
    pub fn of(s: &Session, now_ms: i64) -> Row {
        Row::with(s, now_ms, Chips::of(&s.policy))
    }

    pub fn with(s: &Session, now_ms: i64, chips: Chips) -> Row {
        Row {
            id: s.id.clone(),
            short: s.short_id().to_string(),
            status: if stalled(s, now_ms) {
                "stalled".to_string()
            } else {
                s.status.to_string()
            },
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
            network: chips.network,
            rw_paths: chips.rw_paths,
            masked: chips.masked,
            chain: "",
        }
    }
}

/// How long a live session's supervisor may stay silent before the
/// session shows as stalled: five heartbeats.
pub const STALL_MS: i64 = 15_000;

/// A live session whose supervisor stopped saying it is alive (its
/// start, or creation, counts as the first word): the status "running"
/// would be a lie nobody can check.
pub fn stalled(s: &Session, now_ms: i64) -> bool {
    s.status.is_live()
        && now_ms - s.heartbeat_at.or(s.started_at).unwrap_or(s.created_at) > STALL_MS
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
    /// The allowlist network's rules (empty for other networks).
    pub network_allow: Vec<String>,
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
            network_allow: v
                .get("network_allow")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default(),
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

/// What a session asked beyond its profile (the `asked` of its first
/// event), one line per difference.
pub fn asked(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(n) = v.get("network").and_then(Value::as_str) {
        out.push(format!("network {n}"));
    }
    for m in v
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mode = m.get("mode").and_then(Value::as_str).unwrap_or("ro");
        let path = text(&m["path"]);
        match m.get("target").filter(|t| !t.is_null()) {
            Some(t) => out.push(format!("{mode} {path} at {}", text(t))),
            None => out.push(format!("{mode} {path}")),
        }
    }
    if let Some(env) = v.get("env").and_then(Value::as_array) {
        let names: Vec<String> = env.iter().map(text).collect();
        out.push(format!("environment {}", names.join(", ")));
    }
    if let Some(i) = v.get("image").and_then(Value::as_str) {
        out.push(format!("image {i}"));
    }
    out
}

/// A span of milliseconds in words, as `duration` says it.
pub fn ago(ms: i64) -> String {
    duration(0, ms)
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

/// A session's CPU and memory over time, as two SVG polylines drawn by
/// the page itself (no chart library).
#[derive(Debug, Default)]
pub struct Chart {
    /// `x,y` points in a 600×100 box, or empty.
    pub cpu: String,
    pub memory: String,
    /// The top of each scale, in words.
    pub cpu_max: String,
    pub memory_max: String,
    /// The last values, in words.
    pub cpu_now: String,
    pub memory_now: String,
    pub pids_now: String,
    pub samples: usize,
}

pub const CHART_W: f64 = 600.0;
pub const CHART_H: f64 = 100.0;

impl Chart {
    pub fn of(samples: &[store::Sample]) -> Chart {
        let mut c = Chart {
            samples: samples.len(),
            ..Chart::default()
        };
        if samples.is_empty() {
            return c;
        }
        let (t0, t1) = (samples[0].at, samples[samples.len() - 1].at);
        let span = (t1 - t0).max(1) as f64;
        let x = |at: i64| (at - t0) as f64 / span * CHART_W;
        // CPU: the share of one CPU between two samples, in percent.
        let cpu: Vec<(i64, f64)> = samples
            .windows(2)
            .filter_map(|w| {
                let (a, b) = (&w[0], &w[1]);
                let used = b.cpu_usec?.checked_sub(a.cpu_usec?)? as f64;
                let dt = (b.at - a.at) as f64 * 1000.0;
                (dt > 0.0).then(|| (b.at, used / dt * 100.0))
            })
            .collect();
        let mem: Vec<(i64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.at, s.memory_bytes? as f64 / (1 << 20) as f64)))
            .collect();
        let line = |points: &[(i64, f64)], top: f64| {
            points
                .iter()
                .map(|(at, v)| {
                    format!(
                        "{:.1},{:.1}",
                        x(*at),
                        CHART_H - (v / top).min(1.0) * CHART_H
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let cpu_top = cpu.iter().map(|p| p.1).fold(100.0f64, f64::max);
        let mem_top = mem.iter().map(|p| p.1).fold(1.0f64, f64::max);
        c.cpu = line(&cpu, cpu_top);
        c.memory = line(&mem, mem_top);
        c.cpu_max = format!("{cpu_top:.0} %");
        c.memory_max = format!("{mem_top:.0} MiB");
        c.cpu_now = cpu
            .last()
            .map(|p| format!("{:.0} %", p.1))
            .unwrap_or_default();
        c.memory_now = mem
            .last()
            .map(|p| format!("{:.1} MiB", p.1))
            .unwrap_or_default();
        c.pids_now = samples
            .last()
            .and_then(|s| s.pids)
            .map(|p| p.to_string())
            .unwrap_or_default();
        c
    }
}

#[cfg(test)]
mod asked_tests {
    #[test]
    fn what_was_asked_beyond_the_profile_in_words() {
        let v = serde_json::json!({
            "network": "bridge",
            "mounts": [{"path": "/data", "target": null, "mode": "rw"}, {"path": "/a", "target": "/b", "mode": "ro"}],
            "env": ["TOKEN", "HOME"],
            "image": "debian:12"
        });
        assert_eq!(
            super::asked(&v),
            [
                "network bridge",
                "rw /data",
                "ro /a at /b",
                "environment TOKEN, HOME",
                "image debian:12"
            ]
        );
        assert!(super::asked(&serde_json::json!({})).is_empty());
    }
}

//! `--metrics-listen`: how many requests the proxy allowed and denied, in
//! Prometheus' text format (version 0.0.4). Served on a listener of its
//! own, so that whoever scrapes it reaches nothing of the Docker API, and
//! read with the proxy's own strict HTTP reader.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// What the proxy did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Forwarded to the daemon.
    Allowed,
    /// Answered by the proxy with a refusal.
    Denied,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        }
    }
}

/// The proxy's counters. Operation names are the routes' own (or
/// `unknown`), so the set of series is bounded whatever clients send.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, Verdict), u64>>,
}

impl Metrics {
    pub fn count(&self, operation: &'static str, verdict: Verdict) {
        // A poisoned lock means a panic while counting elsewhere; the map
        // itself is still whole.
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((operation, verdict)).or_default() += 1;
    }

    /// The exposition for a proxy of `role` speaking API version `api`.
    pub fn render(&self, role: &str, api: &str) -> String {
        let role = escape(role);
        let mut out = String::from(
            "# HELP agentctl_proxy_requests_total Requests the proxy judged, by role, operation and decision.\n\
             # TYPE agentctl_proxy_requests_total counter\n",
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((op, verdict), n) in requests {
            out.push_str(&format!(
                "agentctl_proxy_requests_total{{role=\"{role}\",operation=\"{}\",decision=\"{}\"}} {n}\n",
                escape(op),
                verdict.label()
            ));
        }
        out.push_str(
            "# HELP agentctl_proxy_up Whether the proxy is serving.\n\
             # TYPE agentctl_proxy_up gauge\n\
             agentctl_proxy_up 1\n\
             # HELP agentctl_proxy_info The proxy's role and the Docker API version it speaks to the daemon.\n\
             # TYPE agentctl_proxy_info gauge\n",
        );
        out.push_str(&format!(
            "agentctl_proxy_info{{role=\"{role}\",api=\"{}\"}} 1\n",
            escape(api)
        ));
        out
    }
}

/// A label value as the text format writes it: backslash, double quote and
/// line feed escaped (a role file's name is the user's to choose).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_rendered_per_operation_and_decision() {
        let m = Metrics::default();
        m.count("containers.create", Verdict::Denied);
        m.count("containers.create", Verdict::Allowed);
        m.count("containers.create", Verdict::Denied);
        m.count("unknown", Verdict::Denied);
        let text = m.render("launcher", "1.47");
        for line in [
            "# TYPE agentctl_proxy_requests_total counter",
            "agentctl_proxy_requests_total{role=\"launcher\",operation=\"containers.create\",decision=\"allowed\"} 1",
            "agentctl_proxy_requests_total{role=\"launcher\",operation=\"containers.create\",decision=\"denied\"} 2",
            "agentctl_proxy_requests_total{role=\"launcher\",operation=\"unknown\",decision=\"denied\"} 1",
            "agentctl_proxy_up 1",
            "agentctl_proxy_info{role=\"launcher\",api=\"1.47\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let text = Metrics::default().render("my \"role\"\n", "1.47");
        assert!(
            text.contains("agentctl_proxy_info{role=\"my \\\"role\\\"\\n\",api=\"1.47\"} 1\n"),
            "{text}"
        );
    }
}

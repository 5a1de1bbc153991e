//! What one proxy serves: its role, its daemon, its session, where its
//! denials go. Shared by the connections (`server`) and the rules, which
//! use neither the other's code.

use std::sync::Arc;

use crate::role::Role;
use crate::session::SessionScope;
use crate::upstream::Addr;

/// An event for the audit log: a denied request.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub session: Option<String>,
    pub role: String,
    pub operation: String,
    pub reason: String,
}

pub type AuditSink = Arc<dyn Fn(AuditEvent) + Send + Sync>;

pub struct Config {
    pub role: Role,
    pub upstream: Addr,
    /// The version every request is rewritten to.
    pub api: (u64, u64),
    pub session: Option<SessionScope>,
    pub max_body: u64,
    pub audit: Option<AuditSink>,
    /// Held by a session's container create from its check until the
    /// daemon has answered, so that two creates cannot both pass the
    /// session's `limits.containers`.
    pub creates: tokio::sync::Mutex<()>,
}

impl Config {
    pub fn api_string(&self) -> String {
        format!("{}.{}", self.api.0, self.api.1)
    }
}

//! A Docker Engine API proxy that checks what the daemon will actually
//! execute. Requests are parsed strictly, rewritten to one canonical API
//! version, and their JSON bodies decoded into typed structs and
//! re-serialized, so the daemon never sees bytes the proxy did not check.

pub mod body;
pub mod config;
pub mod http1;
pub mod metrics;
pub mod metrics_http;
pub mod relay;
pub mod role;
pub mod route;
pub mod rules;
pub mod server;
pub mod session;
pub mod upstream;

pub use config::{AuditEvent, AuditSink, BindRootError, Config, bind_roots};
pub use metrics::Metrics;
pub use metrics_http::serve_metrics;
pub use role::{Role, RoleError, Scope};
pub use server::{Listener, ServeError, serve};
pub use session::{ChildLimits, SessionScope};
pub use upstream::{Addr, UpstreamError, negotiate};

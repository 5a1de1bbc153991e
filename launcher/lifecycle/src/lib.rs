//! The session lifecycle that the CLI, the dashboard and workers share:
//! plan a session from a request, put it on record, start it (foreground
//! or detached), stop it with a reason and an actor, exec in it, follow its
//! output, list sessions, and reconcile the record with what the backends
//! know. Every session and its end go on record in the session store.
//!
//! Layers, bottom to top; a module uses only modules above it in this list
//! (checked by `launcher/agentctl/tests/architecture.rs`):
//!
//! - `error`: what can go wrong; `pidfd`: a process by descriptor.
//! - `location`: where the store is, opening it (store access).
//! - `lock`: the launcher's lock on a session it records.
//! - `record`: a session's row, first event, and how an end is written.
//! - `profiles`, `backends`: profiles from disk; which backend runs a
//!   session (backend choice).
//! - `context`: [`Lifecycle`], the handle every operation hangs off.
//! - `planning`: from a [`SessionRequest`] to a plan.
//! - `docker`: the session's Docker proxy child.
//! - `reconcile`: reconciliation and orphans.
//! - `recording`: opening, the live record, the end.
//! - `launch`, `manage`: start; stop, exec, follow, list, remove, audit.

pub mod backends;
mod context;
mod docker;
mod error;
mod launch;
mod location;
mod lock;
mod manage;
mod pidfd;
mod planning;
pub mod profiles;
mod reconcile;
pub mod record;
mod recording;
mod sampling;
mod supervise;

pub use backends::{Backends, HostBackends};
pub use context::Lifecycle;
pub use docker::{denials_to_record, events_to_record, scope_from_plan};
pub use error::{Error, Result};
pub use launch::{Ended, Launch};
pub use location::StoreLocation;
pub use manage::{StopRequest, Stopped};
pub use planning::{SessionRequest, own_state};
pub use reconcile::FoundOrphan;
pub use record::Outcome;

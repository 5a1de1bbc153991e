//! The team server's launcher worker (`agentctl worker`).
//!
//! A worker claims queued session requests from a Postgres store (one
//! statement with `FOR UPDATE SKIP LOCKED`, woken by `LISTEN/NOTIFY`) and
//! runs each as a foreground session of its own child process, through the
//! session library, under the request's profile. Layers, bottom to top:
//!
//! - `error`: what can go wrong.
//! - `roots`: which directories a user's workspace may be under, and the
//!   check of a path against them on this host's file system.
//! - `git`: cloning a repository into a fresh workspace with the worker's
//!   own credentials.
//! - `job`: the child side: one claimed request, run to its end.
//! - `metrics`: the worker's own counters, served for Prometheus.
//! - `pool`: the worker's loop: register, claim, heartbeat, reap workers
//!   that died, drain.

mod error;
pub mod git;
pub mod job;
pub mod metrics;
pub mod pool;
pub mod roots;

pub use error::WorkerError;

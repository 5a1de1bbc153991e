//! What the rules ask the daemon, behind a trait: the real connection
//! (`upstream::Lazy`, opened on first use) in the proxy, an answer table
//! in the rules' unit tests.

use std::future::Future;

use bytes::Bytes;

use crate::upstream::{self, Lazy, UpstreamError};

/// The daemon, as the rules see it: one request of the proxy's own (never
/// a client's), answered whole.
pub trait Daemon: Send {
    /// Sends `method target` (a canonical target the rules built, with
    /// `body` as JSON) and returns the status and the body.
    fn call(
        &mut self,
        method: &str,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<(u16, Bytes), UpstreamError>> + Send;
}

impl Daemon for Lazy {
    async fn call(
        &mut self,
        method: &str,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), UpstreamError> {
        upstream::request(self.sender().await?, method, target, body).await
    }
}

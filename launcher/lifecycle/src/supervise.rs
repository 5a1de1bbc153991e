//! What a session's supervisor (a foreground `agentctl run`, a detached
//! session's `__watch-stops`) writes while the session runs: its output,
//! in chunks, as it comes, and a heartbeat every few seconds with a sample
//! of the session's cgroup. Any dashboard over the same store shows both,
//! and a live session whose heartbeat stops shows as stalled.

use std::io::Read;
use std::time::{Duration, Instant};

use store::SessionStore;

/// How often output is copied into the store: well under the 100 ms a
/// dashboard reader may wait for a line.
pub const OUTPUT_POLL: Duration = Duration::from_millis(25);
/// How often the supervisor says it is alive, with a sample.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// The largest chunk one append writes.
const CHUNK: usize = 64 * 1024;

/// Where the session's output comes from.
pub enum Source {
    /// The file a foreground session's backend appends to
    /// ([`sandbox::RunOptions::output_copy`]), read from where the last
    /// read ended.
    File(std::fs::File),
    /// What a thread following the backend's log sends.
    Channel(std::sync::mpsc::Receiver<Vec<u8>>),
    None,
}

pub struct Supervision {
    id: String,
    source: Source,
    /// Read and not yet in the store (a failed append is tried again).
    pending: Vec<u8>,
    cap: u64,
    /// The sandbox's init on the host, and how to know its cgroup.
    sandbox: Option<Sandbox>,
    last_beat: Option<Instant>,
    warned: bool,
}

impl Supervision {
    pub fn new(id: &str, source: Source) -> Supervision {
        Supervision {
            id: id.to_string(),
            source,
            pending: Vec::new(),
            cap: store::DEFAULT_OUTPUT_CAP,
            sandbox: None,
            last_beat: None,
            warned: false,
        }
    }

    /// What to sample: the sandbox's init.
    pub fn sandbox(&mut self, s: Sandbox) {
        self.sandbox = Some(s);
    }

    /// Copies new output into the store; says it is alive when due.
    pub async fn tick(&mut self, store: &SessionStore) {
        self.read();
        self.write(store).await;
        if self.last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
            self.last_beat = Some(Instant::now());
            let now = store::now_ms();
            let sample = self.sandbox.as_ref().and_then(|s| s.sample(now));
            if let Err(e) = store.heartbeat(&self.id, now, sample.as_ref()).await {
                tracing::debug!("heartbeat not written: {e}");
            }
        }
    }

    /// Everything left, before the end goes on record.
    pub async fn drain(&mut self, store: &SessionStore) {
        self.read();
        self.write(store).await;
    }

    fn read(&mut self) {
        match &mut self.source {
            Source::File(f) => {
                let mut buf = vec![0u8; CHUNK];
                // A bound, so that a flood of output still lets the loop
                // look for stops.
                for _ in 0..64 {
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                    }
                }
            }
            Source::Channel(rx) => {
                while let Ok(bytes) = rx.try_recv() {
                    self.pending.extend_from_slice(&bytes);
                    if self.pending.len() >= 64 * CHUNK {
                        break;
                    }
                }
            }
            Source::None => {}
        }
    }

    async fn write(&mut self, store: &SessionStore) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(CHUNK);
            match store
                .append_output(&self.id, store::now_ms(), &self.pending[..n], self.cap)
                .await
            {
                Ok(_) => {
                    self.pending.drain(..n);
                }
                Err(e) => {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!("the session's output is not being recorded: {e}");
                    }
                    // Kept for the next tick, within reason.
                    if self.pending.len() > 4 * CHUNK {
                        let excess = self.pending.len() - 4 * CHUNK;
                        self.pending.drain(..excess);
                    }
                    return;
                }
            }
        }
    }
}

/// The next notice from a listener; a listener whose connection failed is
/// dropped (the caller polls), and without one this never returns.
pub async fn notice(l: &mut Option<store::Listener>) -> Option<String> {
    let Some(listener) = l else {
        return std::future::pending().await;
    };
    match listener.recv().await {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!("notices lost, polling: {e}");
            *l = None;
            None
        }
    }
}

/// Whether an events notice (`<id> <kind>,…`) asks session `id` to stop.
pub fn asks_to_stop(notice: Option<&str>, id: &str) -> bool {
    notice
        .and_then(|n| n.split_once(' '))
        .is_some_and(|(s, kinds)| s == id && kinds.split(',').any(|k| k == "stop_requested"))
}

/// The sandbox's init, and how to know that a cgroup is the session's.
pub enum Sandbox {
    /// A pid whose cgroup's path must name one of these (the session id,
    /// the container id): a detached session's, read from its backend.
    Named(u32, Vec<String>),
    /// A pid held by a pidfd since it started (a foreground session's):
    /// while the process lives, the number is its own.
    Held(crate::pidfd::PidFd, u32),
}

impl Sandbox {
    fn sample(&self, at: i64) -> Option<store::Sample> {
        use crate::sampling::{Accept, sample};
        match self {
            Sandbox::Named(pid, marks) => {
                let marks: Vec<&str> = marks.iter().map(String::as_str).collect();
                sample(*pid, &Accept::Named(&marks), at)
            }
            Sandbox::Held(fd, pid) => {
                // Signal 0: is it still alive (and so still that pid)?
                fd.signal(0).ok()?;
                sample(*pid, &Accept::NotOurs, at)
            }
        }
    }
}

/// A `Write` that sends what is written to a [`Source::Channel`]: what a
/// backend's `logs` writes, from the thread that follows them.
pub struct ChannelWriter(pub std::sync::mpsc::Sender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_stop_of_this_session_wakes_it() {
        let id = "ab12";
        assert!(super::asks_to_stop(Some("ab12 stop_requested"), id));
        assert!(super::asks_to_stop(Some("ab12 signal,stop_requested"), id));
        assert!(!super::asks_to_stop(Some("ab123 stop_requested"), id));
        assert!(!super::asks_to_stop(Some("ab12 exec"), id));
        assert!(!super::asks_to_stop(Some("ab12"), id));
        assert!(!super::asks_to_stop(None, id));
    }
}

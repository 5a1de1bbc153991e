//! A session's output: the live log (server-sent events, resumable with
//! `Last-Event-ID`), the API's raw stream, and downloads.
//!
//! However many readers follow one session, one task per session reads
//! its new chunks from the store and hands them to every reader (a
//! broadcast channel). A reader that falls behind the channel, or joins
//! between two reads, fills the gap from the store: no reader misses a
//! chunk, and nothing is read from the store per reader but its backlog.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use store::{OutputChunk, SessionStore};
use tokio::sync::broadcast;

use crate::AppState;
use crate::ansi::Ansi;
use crate::auth::Principal;
use crate::error::WebError;

/// How often a followed session's new output is read from the store
/// (SQLite, which has no notices).
const POLL: Duration = Duration::from_millis(25);
/// How often with Postgres, whose notices wake the reader at once.
const POLL_NOTIFIED: Duration = Duration::from_secs(1);
/// How often the reader task asks whether the session has ended.
const STATUS_POLL: Duration = Duration::from_millis(500);
/// The most one read of the store takes.
const READ: usize = 1 << 20;

/// What the reader task hands out.
#[derive(Debug)]
pub enum Item {
    Chunk(OutputChunk),
    /// The session has ended (its status) and every chunk was handed out.
    End(String),
}

/// How a session's reader is woken: new output, or an event that may be
/// its end (then it looks at the session's status at once).
#[derive(Default)]
struct Wake {
    notify: tokio::sync::Notify,
    maybe_ended: std::sync::atomic::AtomicBool,
}

/// One reader task per followed session.
#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<String, broadcast::Sender<Arc<Item>>>>,
    /// Wakes a session's reader when Postgres says it has new output.
    wake: Arc<Mutex<HashMap<String, Arc<Wake>>>>,
    /// The one listener for the whole server: started with the first
    /// reader, Postgres only.
    listening: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>,
}

impl Hub {
    /// Follows session `id`: the first reader starts its task.
    fn subscribe(
        self: &Arc<Self>,
        store: Arc<SessionStore>,
        id: &str,
    ) -> broadcast::Receiver<Arc<Item>> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(id) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(1024);
        map.insert(id.to_string(), tx.clone());
        let notified = self
            .listening
            .get_or_init(|| {
                let on = Arc::new(std::sync::atomic::AtomicBool::new(false));
                tokio::spawn(listen(store.clone(), self.wake.clone(), on.clone()));
                tokio::spawn(listen_ends(store.clone(), self.wake.clone()));
                on
            })
            .clone();
        let wake = Arc::new(Wake::default());
        if let Ok(mut w) = self.wake.lock() {
            w.insert(id.to_string(), wake.clone());
        }
        let (hub, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            read_session(&store, &id, &tx, &wake, &notified).await;
            if let Ok(mut w) = hub.wake.lock() {
                w.remove(&id);
            }
            // Gone from the map first, so that no new reader joins a
            // channel nobody sends on any more.
            let mut map = hub.sessions.lock().unwrap_or_else(|p| p.into_inner());
            map.remove(&id);
        });
        rx
    }
}

/// Postgres' notices of new output, each waking its session's reader.
/// `on` says whether they come (if not, readers poll fast).
async fn listen(
    store: Arc<SessionStore>,
    wake: Arc<Mutex<HashMap<String, Arc<Wake>>>>,
    on: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    loop {
        let Ok(Some(mut listener)) = store.listen(store::OUTPUT_CHANNEL).await else {
            // SQLite, or no connection now: readers poll.
            on.store(false, Ordering::Relaxed);
            if store.kind() != store::DbKind::Postgres {
                return;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        on.store(true, Ordering::Relaxed);
        while let Ok(id) = listener.recv().await {
            let w = wake.lock().ok().and_then(|w| w.get(&id).cloned());
            if let Some(w) = w {
                w.notify.notify_one();
            }
        }
        on.store(false, Ordering::Relaxed);
    }
}

/// Postgres' notices of events (`<id> <kind>,…`): one that may end a
/// session wakes its reader to look at the status at once, so that a
/// follower learns of the end when it is written, not at the next poll.
async fn listen_ends(store: Arc<SessionStore>, wake: Arc<Mutex<HashMap<String, Arc<Wake>>>>) {
    loop {
        let Ok(Some(mut listener)) = store.listen(store::EVENTS_CHANNEL).await else {
            if store.kind() != store::DbKind::Postgres {
                return;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        while let Ok(payload) = listener.recv().await {
            let Some((id, kinds)) = payload.split_once(' ') else {
                continue;
            };
            if !kinds
                .split(',')
                .any(|k| matches!(k, "exited" | "failed" | "stopped" | "lost"))
            {
                continue;
            }
            let w = wake.lock().ok().and_then(|w| w.get(id).cloned());
            if let Some(w) = w {
                w.maybe_ended
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                w.notify.notify_one();
            }
        }
    }
}

/// Reads session `id`'s new output until it has ended or nobody follows.
async fn read_session(
    store: &SessionStore,
    id: &str,
    tx: &broadcast::Sender<Arc<Item>>,
    wake: &Wake,
    notified: &std::sync::atomic::AtomicBool,
) {
    let mut last = match store.output_state(id).await {
        Ok(s) => s.last_seq,
        Err(_) => return,
    };
    let mut status_checked: Option<std::time::Instant> = None;
    loop {
        if tx.receiver_count() == 0 {
            return;
        }
        let Ok(chunks) = store.output_after(id, last, READ).await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let pause = if notified.load(std::sync::atomic::Ordering::Relaxed) {
            POLL_NOTIFIED
        } else {
            POLL
        };
        let got = !chunks.is_empty();
        for c in chunks {
            last = c.seq;
            let _ = tx.send(Arc::new(Item::Chunk(c)));
        }
        if got {
            continue;
        }
        let hinted = wake
            .maybe_ended
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if hinted || status_checked.is_none_or(|t| t.elapsed() >= STATUS_POLL) {
            status_checked = Some(std::time::Instant::now());
            match store.get(id).await {
                Ok(s) if !s.status.is_live() => {
                    // One last read: the end may have come with output.
                    if let Ok(chunks) = store.output_after(id, last, READ).await {
                        for c in chunks {
                            let _ = tx.send(Arc::new(Item::Chunk(c)));
                        }
                    }
                    let _ = tx.send(Arc::new(Item::End(s.status.to_string())));
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
        tokio::select! {
            _ = wake.notify.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct From {
    /// The last chunk the reader has (its sequence number).
    /// An i64, as the document says (0 to 2^63 - 1).
    pub after: Option<i64>,
    /// Keep the response open for new output until the session ends.
    pub follow: Option<bool>,
}

/// Where a reader starts: `Last-Event-ID` (a browser resuming) first,
/// then `?after=`.
fn start(headers: &HeaderMap, q: &From) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.after.and_then(|a| u64::try_from(a).ok()))
        .unwrap_or(0)
}

/// A reader's position and what it must still be sent.
struct Reader {
    store: Arc<SessionStore>,
    id: String,
    rx: broadcast::Receiver<Arc<Item>>,
    sent: u64,
    /// Read from the store and not yet sent.
    queue: std::collections::VecDeque<Arc<Item>>,
    /// The backlog is read: from here on the channel brings what is new.
    caught_up: bool,
    done: bool,
}

impl Reader {
    async fn new(st: &AppState, id: &str, after: u64) -> Reader {
        // Subscribe before reading the backlog: what comes meanwhile is
        // in the channel, and anything older is skipped by its number.
        let rx = st.output.subscribe(st.store.clone(), id);
        Reader {
            store: st.store.clone(),
            id: id.to_string(),
            rx,
            sent: after,
            queue: Default::default(),
            caught_up: false,
            done: false,
        }
    }

    /// The next item, in order, none missed.
    async fn next(&mut self) -> Option<Arc<Item>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                if let Item::Chunk(c) = &*item {
                    self.sent = c.seq;
                }
                return Some(item);
            }
            if self.done {
                return None;
            }
            // The backlog first, from the store.
            if !self.caught_up {
                if self.backlog().await {
                    continue;
                }
                self.caught_up = true;
            }
            match self.rx.recv().await {
                Ok(item) => match &*item {
                    Item::Chunk(c) if c.seq <= self.sent => continue,
                    Item::Chunk(c) if c.seq > self.sent + 1 => {
                        // Joined between two reads, or chunks were dropped
                        // by the cap: the store says which.
                        self.fill(c.seq).await;
                        self.queue.push_back(item);
                    }
                    Item::End(_) => {
                        self.done = true;
                        // Whatever the store has that we have not sent.
                        self.fill(u64::MAX).await;
                        self.queue.push_back(item);
                    }
                    Item::Chunk(_) => self.queue.push_back(item),
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the channel: the store has it all.
                    self.fill(u64::MAX).await;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The reader task ended (the session ended, or nobody
                    // else was reading): finish from the store.
                    self.fill(u64::MAX).await;
                    self.done = true;
                    if let Ok(s) = self.store.get(&self.id).await {
                        self.queue
                            .push_back(Arc::new(Item::End(s.status.to_string())));
                    }
                }
            }
        }
    }

    /// Queues the store's chunks after `sent` (up to one read); true if it
    /// found any.
    async fn backlog(&mut self) -> bool {
        let Ok(chunks) = self.store.output_after(&self.id, self.sent, READ).await else {
            return false;
        };
        let found = !chunks.is_empty();
        for c in chunks {
            self.queue.push_back(Arc::new(Item::Chunk(c)));
        }
        found
    }

    /// Queues the store's chunks after `sent` and before `until`.
    async fn fill(&mut self, until: u64) {
        let mut from = self
            .queue
            .back()
            .and_then(|i| match &**i {
                Item::Chunk(c) => Some(c.seq),
                Item::End(_) => None,
            })
            .unwrap_or(self.sent);
        loop {
            let Ok(chunks) = self.store.output_after(&self.id, from, READ).await else {
                return;
            };
            if chunks.is_empty() {
                return;
            }
            for c in chunks {
                if c.seq >= until {
                    return;
                }
                from = c.seq;
                self.queue.push_back(Arc::new(Item::Chunk(c)));
            }
        }
    }
}

/// The live log: `chunk` events (id: the chunk's number; data: its text in
/// segments, `{"s": seq, "g": [[class, text], …]}`), a `dropped` event when
/// the start the reader asked for is gone, and `end` with the status.
pub async fn live(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<From>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let s = crate::visible_session(&st, &who, &id).await?;
    let after = start(&headers, &q);
    let state = st.store.output_state(&s.id).await?;
    let mut first = Vec::new();
    if state.dropped > 0 && after + 1 < state.first_seq {
        first.push(
            Event::default()
                .event("dropped")
                .data(serde_json::json!({"bytes": state.dropped}).to_string()),
        );
    }
    let reader = Reader::new(&st, &s.id, after).await;
    let stream = futures_util::stream::unfold(
        (reader, Ansi::new(), first),
        |(mut reader, mut ansi, mut first)| async move {
            if let Some(e) = first.pop() {
                return Some((Ok(e), (reader, ansi, first)));
            }
            let item = reader.next().await?;
            let event = match &*item {
                Item::Chunk(c) => {
                    let segs: Vec<(String, String)> = ansi
                        .push(&c.data)
                        .into_iter()
                        .map(|s| (s.class, s.text))
                        .collect();
                    Event::default()
                        .event("chunk")
                        .id(c.seq.to_string())
                        .data(serde_json::json!({"s": c.seq, "g": segs}).to_string())
                }
                Item::End(status) => Event::default()
                    .event("end")
                    .data(serde_json::json!({"status": status}).to_string()),
            };
            Some((Ok(event), (reader, ansi, first)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `/api/v1/sessions/{id}/output`: the output as the sandbox wrote it,
/// every byte, from chunk `after`; with `follow=true` the response stays
/// open and ends when the session does.
pub async fn api(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    crate::api::ApiQuery(q): crate::api::ApiQuery<From>,
    headers: HeaderMap,
) -> Response {
    if q.after.is_some_and(|a| a < 0) {
        return WebError::BadRequest("after: give a chunk number, 0 or more".into()).json();
    }
    let s = match crate::visible_session(&st, &who, &id).await {
        Ok(s) => s,
        Err(e) => return e.json(),
    };
    let after = start(&headers, &q);
    if q.follow != Some(true) {
        return match st.store.output_after(&s.id, after, usize::MAX).await {
            Ok(chunks) => raw_response(chunks.into_iter().flat_map(|c| c.data).collect(), None),
            Err(e) => WebError::from(e).json(),
        };
    }
    let reader = Reader::new(&st, &s.id, after).await;
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        loop {
            let item = reader.next().await?;
            if let Item::Chunk(c) = &*item {
                return Some((Ok::<_, Infallible>(Bytes::from(c.data.clone())), reader));
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn raw_response(bytes: Vec<u8>, download: Option<String>) -> Response {
    let mut resp = (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response();
    if let Some(name) = download
        && let Ok(v) = format!("attachment; filename=\"{name}\"").parse()
    {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// `output.raw`: every byte, as an attachment.
pub async fn download_raw(
    st: State<AppState>,
    who: Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    download(st, who, id, "output.raw").await
}

/// `output.txt`: the text only, no escape sequences, as an attachment.
pub async fn download_text(
    st: State<AppState>,
    who: Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    download(st, who, id, "output.txt").await
}

async fn download(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    id: String,
    file: &str,
) -> Result<Response, WebError> {
    let s = crate::visible_session(&st, &who, &id).await?;
    let bytes: Vec<u8> = st
        .store
        .output_after(&s.id, 0, usize::MAX)
        .await?
        .into_iter()
        .flat_map(|c| c.data)
        .collect();
    let short = s.short_id().to_string();
    match file {
        "output.raw" => Ok(raw_response(bytes, Some(format!("{short}.log")))),
        "output.txt" => {
            let mut resp = (
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                crate::ansi::plain(&bytes),
            )
                .into_response();
            if let Ok(v) = format!("attachment; filename=\"{short}.txt\"").parse() {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            Ok(resp)
        }
        _ => Ok((StatusCode::NOT_FOUND, "no such file\n").into_response()),
    }
}

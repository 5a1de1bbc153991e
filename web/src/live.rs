//! Live updates over server-sent events: one task per server reads the
//! sessions from the store twice a second and sends what changed to every
//! page that listens (`/events/sessions`). A page that falls behind gets a
//! `resync` and reloads; nothing is dropped silently.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use store::{ListQuery, SessionStore};
use tokio::sync::broadcast;

use crate::AppState;
use crate::auth::Principal;
use crate::view::Row;

const POLL: Duration = Duration::from_millis(500);

/// The changes every listening page gets.
pub struct Hub {
    /// Each change with the user whose session it is.
    tx: broadcast::Sender<Arc<(String, String)>>,
    started: OnceLock<()>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            tx: broadcast::channel(1024).0,
            started: OnceLock::new(),
        }
    }
}

impl Hub {
    /// Subscribes; the first subscriber starts the reader.
    fn subscribe(&self, store: Arc<SessionStore>) -> broadcast::Receiver<Arc<(String, String)>> {
        let rx = self.tx.subscribe();
        self.started.get_or_init(|| {
            let tx = self.tx.clone();
            tokio::spawn(watch(store, tx));
        });
        rx
    }
}

/// What a page shows of a session that may change.
fn fields(s: &store::Session, now: i64) -> serde_json::Value {
    let row = Row::of(s, now);
    json!({
        "id": s.id,
        "status": row.status,
        "exit": row.exit,
        "duration": row.duration,
        "live": s.status.is_live(),
    })
}

async fn watch(store: Arc<SessionStore>, tx: broadcast::Sender<Arc<(String, String)>>) {
    let mut seen: HashMap<String, (store::Status, Option<i32>, u64, bool)> = HashMap::new();
    let q = ListQuery {
        all: true,
        limit: 200,
        offset: 0,
    };
    loop {
        tokio::time::sleep(POLL).await;
        let Ok(list) = store.list(&q).await else {
            continue;
        };
        let now = store::now_ms();
        for s in &list {
            let key = (
                s.status,
                s.exit_code,
                s.events_count,
                crate::view::stalled(s, now),
            );
            if seen.get(&s.id) != Some(&key) {
                seen.insert(s.id.clone(), key);
                // No receiver is fine: nobody is looking right now.
                let _ = tx.send(Arc::new((s.user.clone(), fields(s, now).to_string())));
            }
        }
    }
}

/// Changes to the sessions `who` may see.
pub async fn sessions(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = st.live.subscribe(st.store.clone());
    let only = who.only_user();
    let stream = futures_util::stream::unfold((rx, only), |(mut rx, only)| async move {
        let event = loop {
            match rx.recv().await {
                Ok(change) => {
                    let (user, data) = &*change;
                    if only.as_ref().is_none_or(|u| u == user) {
                        break Event::default().event("session").data(data);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    break Event::default().event("resync").data("{}");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        };
        Some((Ok(event), (rx, only)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

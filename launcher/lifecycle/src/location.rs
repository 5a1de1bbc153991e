//! Store access: where the session store is, and opening it.

use store::SessionStore;

use crate::error::{Error, Result};

/// Where the store is: `--store`/AGENTCTL_STORE, or the default SQLite
/// file. `none` keeps no record.
#[derive(Clone, Debug)]
pub struct StoreLocation(pub Option<String>);

impl StoreLocation {
    pub fn resolve(flag: Option<String>) -> StoreLocation {
        match flag.as_deref() {
            Some("none") => StoreLocation(None),
            Some(url) => StoreLocation(Some(url.to_string())),
            None => StoreLocation(Some(SessionStore::default_url())),
        }
    }

    /// True when sessions are kept on record.
    pub fn keeps_records(&self) -> bool {
        self.0.is_some()
    }

    pub fn required(&self) -> Result<&str> {
        self.0.as_deref().ok_or_else(|| {
            Error::Refused("this command needs the session store; drop `--store none`".into())
        })
    }

    /// Opens the store with one connection: a launcher does one thing at a
    /// time. The schema is brought up to date by the first open of each
    /// store in this process only; a launch opens the store more than once.
    pub async fn open(&self) -> Result<SessionStore> {
        use std::collections::HashSet;
        use std::sync::{Mutex, OnceLock};
        static MIGRATED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
        let url = self.required()?;
        let migrated = MIGRATED.get_or_init(Default::default);
        let migrate = !migrated.lock().is_ok_and(|m| m.contains(url));
        let store = SessionStore::connect_with(
            url,
            &store::ConnectOptions {
                max_connections: 1,
                migrate,
            },
        )
        .await
        .map_err(Error::OpenStore)?;
        if migrate && let Ok(mut m) = migrated.lock() {
            m.insert(url.to_string());
        }
        Ok(store)
    }

    /// Opens the store, runs `f` on it, closes it: one operation on a
    /// runtime of its own (see [`blocking::block_on`]).
    pub fn with<T>(&self, f: impl AsyncFnOnce(&SessionStore) -> Result<T>) -> Result<T> {
        blocking::block_on(async {
            let store = self.open().await?;
            let out = f(&store).await;
            store.close().await;
            out
        })
    }
}

//! Store URLs: `sqlite://PATH` and `postgres://...`, and the default one.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// Where a URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A database file, relative to the working directory or absolute.
    Sqlite(PathBuf),
    /// The URL as given (`postgres://` or `postgresql://`).
    Postgres(String),
}

pub fn parse(url: &str) -> Result<Target, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        // `sqlite://:memory:` would be a database per connection of the
        // pool; a store is a file.
        if path.is_empty() || path == ":memory:" || path.ends_with('/') {
            return Err(unsupported(url));
        }
        return Ok(Target::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres(url.to_string()));
    }
    Err(unsupported(url))
}

fn unsupported(url: &str) -> StoreError {
    StoreError::UnsupportedUrl { url: redact(url) }
}

/// `url` with the password of its user info, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_string(),
    }
}

/// `sqlite://$XDG_DATA_HOME/agentctl/agentctl.db`, falling back to
/// `~/.local/share/agentctl/agentctl.db`; for root
/// `/var/lib/agentctl/agentctl.db`.
pub fn default_url() -> String {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        });
    let path = default_path(
        nix::unistd::geteuid().is_root(),
        std::env::var_os("XDG_DATA_HOME").as_deref(),
        home.as_deref(),
    );
    format!("sqlite://{}", path.display())
}

pub fn default_path(root: bool, xdg_data_home: Option<&OsStr>, home: Option<&Path>) -> PathBuf {
    if root {
        return PathBuf::from("/var/lib/agentctl/agentctl.db");
    }
    // The XDG spec ignores a relative XDG_DATA_HOME.
    let data = xdg_data_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".local/share")))
        // No home at all: a relative path still names a usable place.
        .unwrap_or_else(|| PathBuf::from(".local/share"));
    data.join("agentctl/agentctl.db")
}

/// What to call a Postgres server in messages: `host:port` or the socket
/// directory.
pub fn pg_host(opts: &sqlx::postgres::PgConnectOptions) -> String {
    match opts.get_socket() {
        Some(dir) => format!("{} (unix socket)", dir.display()),
        None => format!("{}:{}", opts.get_host(), opts.get_port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_and_postgres() {
        assert_eq!(
            parse("sqlite://rel/a.db").unwrap(),
            Target::Sqlite("rel/a.db".into())
        );
        assert_eq!(
            parse("sqlite:///abs/a.db").unwrap(),
            Target::Sqlite("/abs/a.db".into())
        );
        for pg in [
            "postgres://u@h/db",
            "postgresql://u:p@h:5433/db?sslmode=require",
        ] {
            assert_eq!(parse(pg).unwrap(), Target::Postgres(pg.into()));
        }
    }

    #[test]
    fn refuses_other_urls_without_printing_passwords() {
        for bad in [
            "mysql://root:hunter2@db/agentctl",
            "sqlite://",
            "sqlite://:memory:",
            "sqlite://dir/",
            "/var/lib/agentctl.db",
            "",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("unsupported store URL"), "{e}");
            assert!(e.contains("use sqlite://PATH or postgres://"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(
            parse("mysql://root:hunter2@db/x")
                .unwrap_err()
                .to_string()
                .contains("\"mysql://root:***@db/x\"")
        );
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:pw@h:1/d"), "postgres://u:***@h:1/d");
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact("postgres://h/d?x=@"), "postgres://h/d?x=@");
        assert_eq!(redact("postgres://u:p@ss@h/d"), "postgres://u:***@h/d");
    }

    #[test]
    fn default_locations() {
        let home = Path::new("/home/alice");
        assert_eq!(
            default_path(true, Some(OsStr::new("/x")), Some(home)),
            Path::new("/var/lib/agentctl/agentctl.db")
        );
        assert_eq!(
            default_path(false, Some(OsStr::new("/data")), Some(home)),
            Path::new("/data/agentctl/agentctl.db")
        );
        for xdg in [None, Some(OsStr::new("")), Some(OsStr::new("relative"))] {
            assert_eq!(
                default_path(false, xdg, Some(home)),
                Path::new("/home/alice/.local/share/agentctl/agentctl.db")
            );
        }
    }
}

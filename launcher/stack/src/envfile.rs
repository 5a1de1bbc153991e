//! The stack's `.env`: the settings and secrets every `docker compose` call
//! of the stack reads. The first `agentctl up` makes it (mode 0600) with a
//! random Postgres password and the first admin's password and token, and
//! takes settings from `AGENTCTL_*` variables of its environment; after
//! that the file is the user's: read, checked, never rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::StackError;

/// Keys a first `up` takes from its environment (the defaults are in
/// compose.yaml), so that a test or a user can pick ports, images and
/// places before the file exists.
pub const SEEDED: &[&str] = &[
    "AGENTCTL_BIND_ADDRESS",
    "AGENTCTL_DASHBOARD_PORT",
    "AGENTCTL_POSTGRES_PORT",
    "AGENTCTL_PROMETHEUS_PORT",
    "AGENTCTL_BASE_IMAGE",
    "AGENTCTL_IMAGE",
    "AGENTCTL_AGENT_IMAGE",
    "POSTGRES_IMAGE",
    "PROMETHEUS_IMAGE",
    "ALLOY_IMAGE",
    "LOG_STANDIN_IMAGE",
    "LOKI_URL",
    "AGENTCTL_LOG_COLLECTOR",
    "AGENTCTL_WORKER_CAPACITY",
    "AGENTCTL_WORKER_NAME",
    "AGENTCTL_WORKSPACES",
];

/// Secrets made by the caller for a new file.
pub struct Secrets {
    pub postgres_password: String,
    pub admin_password: String,
    /// `agt_<id>_<secret>`, as the dashboard's tokens are.
    pub admin_token: String,
}

#[derive(Clone, Debug)]
pub struct StackEnv {
    pub path: PathBuf,
    vars: BTreeMap<String, String>,
}

impl StackEnv {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, key: &str) -> Result<&str, StackError> {
        self.get(key).ok_or_else(|| StackError::Config {
            file: self.path.clone(),
            message: format!(
                "{key} is missing or empty; put it back, or move the file away and run agentctl up to make a new one (with new secrets)"
            ),
        })
    }

    pub fn or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    pub fn port(&self, key: &str, default: u16) -> Result<u16, StackError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| StackError::Config {
                    file: self.path.clone(),
                    message: format!("{key}={v} is not a port; give a number from 1 to 65535"),
                }),
        }
    }

    /// The project name every compose call of this stack uses.
    pub fn project(&self) -> &str {
        self.or("COMPOSE_PROJECT_NAME", "agentctl")
    }
}

/// Reads `path`. Lines are `KEY=VALUE`; blank lines and `#` comments are
/// skipped. Anything else is an error naming the line.
pub fn read(path: &Path) -> Result<StackEnv, StackError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StackError::io(format!("cannot read {}", path.display()), e))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<StackEnv, StackError> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| StackError::Config {
            file: path.to_path_buf(),
            message: format!("line {}: {why}", i + 1),
        };
        let (k, v) = line.split_once('=').ok_or_else(|| bad("not KEY=VALUE"))?;
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad(&format!("{k:?} is not a variable name")));
        }
        check_value(v).map_err(|why| bad(&format!("{k}: {why}")))?;
        vars.insert(k.to_string(), v.to_string());
    }
    Ok(StackEnv {
        path: path.to_path_buf(),
        vars,
    })
}

/// Values are kept to what both Compose versions read the same way: no
/// quotes, `$`, `#` or whitespace at either end, which v1 and v2 treat
/// differently.
fn check_value(v: &str) -> Result<(), String> {
    if let Some(c) = v
        .chars()
        .find(|c| matches!(c, '"' | '\'' | '$' | '#' | '\\' | '`') || c.is_control())
    {
        return Err(format!(
            "the value holds {c:?}, which Compose v1 and v2 read differently; leave it out"
        ));
    }
    if v.trim() != v {
        return Err("the value starts or ends with whitespace".into());
    }
    Ok(())
}

/// What a new `.env` says: the stack's places and the owner of its
/// workspaces, the secrets, and the seeded settings.
pub fn render(
    dir: &Path,
    uid: u32,
    gid: u32,
    secrets: &Secrets,
    seed: &BTreeMap<String, String>,
) -> String {
    let mut out = String::from(
        "# agentctl's stack: made by the first `agentctl up`, never rewritten by it.\n\
         # Secrets: keep this file to yourself (mode 0600). Defaults of what is\n\
         # not set here are in compose/compose.yaml.\n",
    );
    let workspaces = seed
        .get("AGENTCTL_WORKSPACES")
        .cloned()
        .unwrap_or_else(|| dir.join("workspaces").display().to_string());
    let mut put = |k: &str, v: &str| out.push_str(&format!("{k}={v}\n"));
    put(
        "COMPOSE_PROJECT_NAME",
        seed.get("COMPOSE_PROJECT_NAME")
            .map(String::as_str)
            .unwrap_or("agentctl"),
    );
    put("AGENTCTL_STACK_DIR", &dir.display().to_string());
    put("AGENTCTL_WORKSPACES", &workspaces);
    put("AGENTCTL_UID", &uid.to_string());
    put("AGENTCTL_GID", &gid.to_string());
    put("POSTGRES_PASSWORD", &secrets.postgres_password);
    put("AGENTCTL_ADMIN_USER", "admin");
    put("AGENTCTL_ADMIN_PASSWORD", &secrets.admin_password);
    put("AGENTCTL_TOKEN", &secrets.admin_token);
    for k in SEEDED {
        if *k == "AGENTCTL_WORKSPACES" {
            continue;
        }
        if let Some(v) = seed.get(*k) {
            put(k, v);
        }
    }
    out
}

/// The stack's `.env` in `dir`: read when it is there, otherwise made
/// (mode 0600, never over an existing file) from `secrets` and `seed`.
/// The boolean says it was made now.
pub fn load_or_create(
    dir: &Path,
    uid: u32,
    gid: u32,
    secrets: impl FnOnce() -> Result<Secrets, StackError>,
    seed: &BTreeMap<String, String>,
) -> Result<(StackEnv, bool), StackError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(".env");
    if path.exists() {
        return Ok((read(&path)?, false));
    }
    for (k, v) in seed {
        check_value(v).map_err(|why| StackError::Tool(format!("{k} in the environment: {why}")))?;
    }
    check_value(&dir.display().to_string()).map_err(|why| {
        StackError::Tool(format!(
            "the stack's directory {}: {why}; choose another with AGENTCTL_STACK_DIR",
            dir.display()
        ))
    })?;
    let text = render(dir, uid, gid, &secrets()?, seed);
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => f,
        // Another `up` made it first: theirs stands.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok((read(&path)?, false));
        }
        Err(e) => {
            return Err(StackError::io(
                format!("cannot create {}", path.display()),
                e,
            ));
        }
    };
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StackError::io(format!("cannot write {}", path.display()), e))?;
    Ok((parse(&path, &text)?, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Result<Secrets, StackError> {
        Ok(Secrets {
            postgres_password: "p".repeat(32),
            admin_password: "a".repeat(24),
            admin_token: "agt_0123456789ab_cd".into(),
        })
    }

    #[test]
    fn a_new_file_is_private_and_is_never_rewritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut seed = BTreeMap::new();
        seed.insert("AGENTCTL_DASHBOARD_PORT".to_string(), "17878".to_string());
        let (env, made) = load_or_create(dir.path(), 1000, 1000, secrets, &seed).unwrap();
        assert!(made);
        assert_eq!(env.require("POSTGRES_PASSWORD").unwrap(), "p".repeat(32));
        assert_eq!(env.port("AGENTCTL_DASHBOARD_PORT", 7878).unwrap(), 17878);
        assert_eq!(env.port("AGENTCTL_POSTGRES_PORT", 7879).unwrap(), 7879);
        let mode = std::fs::metadata(dir.path().join(".env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = std::fs::read(dir.path().join(".env")).unwrap();
        let (again, made) = load_or_create(
            dir.path(),
            0,
            0,
            || panic!("no new secrets for an existing file"),
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(!made);
        assert_eq!(again.require("AGENTCTL_UID").unwrap(), "1000");
        assert_eq!(std::fs::read(dir.path().join(".env")).unwrap(), before);
    }

    #[test]
    fn bad_lines_are_named() {
        let p = Path::new("/s/.env");
        let e = parse(p, "A=1\nnonsense\n").unwrap_err().to_string();
        assert!(e.contains("/s/.env: line 2"), "{e}");
        let e = parse(p, "A=$HOME\n").unwrap_err().to_string();
        assert!(e.contains("line 1: A:"), "{e}");
        let e = parse(p, "A=1\n")
            .unwrap()
            .require("B")
            .unwrap_err()
            .to_string();
        assert!(e.contains("B is missing"), "{e}");
        let e = parse(p, "P=70000\n")
            .unwrap()
            .port("P", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("P=70000 is not a port"), "{e}");
    }
}

//! The compose project and the images' build files, as this binary knows
//! them. `agentctl up` writes them out each time, so the stack runs what
//! this version of agentctl expects; the `.env` beside them is the user's
//! and never rewritten (see `envfile`).

use std::path::Path;

use crate::StackError;

/// (path under the stack directory, contents, mode).
pub const FILES: &[(&str, &str, u32)] = &[
    (
        "compose/compose.yaml",
        include_str!("../../../compose/compose.yaml"),
        0o644,
    ),
    (
        "compose/prometheus.yml",
        include_str!("../../../compose/prometheus.yml"),
        0o644,
    ),
    (
        "compose/alloy/config.alloy",
        include_str!("../../../compose/alloy/config.alloy"),
        0o644,
    ),
    (
        "images/agentctl/Dockerfile",
        include_str!("../../../images/agentctl/Dockerfile"),
        0o644,
    ),
    (
        "images/postgres/Dockerfile",
        include_str!("../../../images/postgres/Dockerfile"),
        0o644,
    ),
    (
        "images/postgres/entrypoint.sh",
        include_str!("../../../images/postgres/entrypoint.sh"),
        0o755,
    ),
    (
        "images/prometheus/Dockerfile",
        include_str!("../../../images/prometheus/Dockerfile"),
        0o644,
    ),
    (
        "images/log-standin/Dockerfile",
        include_str!("../../../images/log-standin/Dockerfile"),
        0o644,
    ),
    (
        "images/log-standin/collect.sh",
        include_str!("../../../images/log-standin/collect.sh"),
        0o755,
    ),
];

/// Writes every file under `dir` (each one new and renamed over the old,
/// so a reader never sees half of one).
pub fn write_all(dir: &Path) -> Result<(), StackError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    for (rel, text, mode) in FILES {
        let path = dir.join(rel);
        let parent = path.parent().expect("every file is under a directory");
        std::fs::create_dir_all(parent)
            .map_err(|e| StackError::io(format!("cannot create {}", parent.display()), e))?;
        let tmp = parent.join(format!(
            ".{}.new",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(&tmp)
            .map_err(|e| StackError::io(format!("cannot create {}", tmp.display()), e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| StackError::io(format!("cannot write {}", tmp.display()), e))?;
        // The umask may have taken bits the scripts need.
        f.set_permissions(std::fs::Permissions::from_mode(*mode))
            .map_err(|e| StackError::io(format!("cannot chmod {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| StackError::io(format!("cannot write {}", path.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_is_written_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        super::write_all(dir.path()).unwrap();
        for (rel, text, mode) in super::FILES {
            let p = dir.path().join(rel);
            assert_eq!(std::fs::read_to_string(&p).unwrap(), *text, "{rel}");
            let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, *mode, "{rel}");
        }
        // Again over the first: the same result, no leftovers.
        super::write_all(dir.path()).unwrap();
        let stray: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(".new"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}

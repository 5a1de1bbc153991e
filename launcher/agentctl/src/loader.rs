//! Reads user profiles from disk for the policy crate, which does no I/O.

use std::path::{Path, PathBuf};

use policy::{ProfileError, ProfileLoader};

/// Loads `--profile ./file.yaml` and named profiles from
/// `$XDG_CONFIG_HOME/agentctl/profiles/NAME.yaml`.
pub struct FsLoader {
    pub user_dir: Option<PathBuf>,
}

impl FsLoader {
    pub fn new() -> FsLoader {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        FsLoader {
            user_dir: config.map(|c| c.join("agentctl").join("profiles")),
        }
    }
}

fn read(path: &Path, shown: &str) -> Result<(String, String), ProfileError> {
    std::fs::read_to_string(path)
        .map(|text| (shown.to_string(), text))
        .map_err(|e| ProfileError::Read {
            path: shown.to_string(),
            reason: e.to_string(),
        })
}

impl ProfileLoader for FsLoader {
    fn named(&self, name: &str) -> Result<Option<(String, String)>, ProfileError> {
        let Some(dir) = &self.user_dir else {
            return Ok(None);
        };
        for ext in ["yaml", "yml"] {
            let p = dir.join(format!("{name}.{ext}"));
            if p.is_file() {
                return read(&p, &p.display().to_string()).map(Some);
            }
        }
        Ok(None)
    }

    fn names(&self) -> Vec<String> {
        let Some(dir) = &self.user_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".yaml")
                    .or_else(|| name.strip_suffix(".yml"))
                    .map(str::to_string)
            })
            .collect()
    }

    fn file(
        &self,
        path: &str,
        relative_to: Option<&str>,
    ) -> Result<(String, String), ProfileError> {
        let p = Path::new(path);
        let resolved = match relative_to {
            Some(parent) if p.is_relative() && !parent.starts_with("builtin:") => Path::new(parent)
                .parent()
                .map(|d| d.join(p))
                .unwrap_or_else(|| p.to_path_buf()),
            _ => p.to_path_buf(),
        };
        read(&resolved, &resolved.display().to_string())
    }
}

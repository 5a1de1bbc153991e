//! Reads user profiles from disk for the policy crate, which does no I/O.

use std::path::{Path, PathBuf};

use policy::{ProfileError, ProfileLoader};

/// Loads `--profile ./file.yaml` and named profiles from
/// `$XDG_CONFIG_HOME/agentctl/profiles/NAME.yaml`.
pub struct FsLoader {
    pub user_dir: Option<PathBuf>,
}

impl Default for FsLoader {
    fn default() -> FsLoader {
        FsLoader::new()
    }
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

/// Reads a profile, at most one byte more than the parser accepts (a
/// multi-gigabyte "profile" is not read into memory to be refused).
fn read(path: &Path, shown: &str) -> Result<(String, String), ProfileError> {
    use std::io::Read;
    let fail = |e: std::io::Error| ProfileError::Read {
        path: shown.to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut bytes = Vec::new();
    file.take(policy::profile::MAX_PROFILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| fail(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    Ok((shown.to_string(), text))
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

//! Pinned directories: which directories a sandbox binds onto themselves so
//! that the paths of its masked secrets cannot change under it. Pure path
//! arithmetic, shared by the planner (which pins them in the sandbox) and
//! the Docker proxy (which pins them in the agent's containers and checks
//! them again when a container starts). See `sandbox::pins` for why.

use std::path::{Path, PathBuf};

/// The directories strictly between `root` and each of `masked` that lie
/// inside it, parents first, each once.
pub fn ancestors_to_pin(root: &Path, masked: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for m in masked {
        let Ok(rel) = m.strip_prefix(root) else {
            continue;
        };
        let mut dir = root.to_path_buf();
        let components: Vec<_> = rel.components().collect();
        // Every component but the last (the masked path itself, which its
        // own mask already makes a mount point).
        for c in components.iter().take(components.len().saturating_sub(1)) {
            dir.push(c);
            if !out.contains(&dir) {
                out.push(dir.clone());
            }
        }
    }
    out.sort_by_key(|p| p.components().count());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_of_masks_inside_the_root_once_parents_first() {
        let root = Path::new("/ws");
        let masked = [
            PathBuf::from("/ws/a/b/.env"),
            PathBuf::from("/ws/.env"),
            PathBuf::from("/ws/a/c/key.pem"),
            PathBuf::from("/ws/a/b/id_rsa"),
            PathBuf::from("/elsewhere/x/.env"),
        ];
        assert_eq!(
            ancestors_to_pin(root, &masked),
            [
                PathBuf::from("/ws/a"),
                PathBuf::from("/ws/a/b"),
                PathBuf::from("/ws/a/c"),
            ]
        );
    }

    #[test]
    fn nothing_to_pin_at_the_root() {
        assert!(ancestors_to_pin(Path::new("/ws"), &[PathBuf::from("/ws/.env")]).is_empty());
        assert!(ancestors_to_pin(Path::new("/ws"), &[]).is_empty());
    }
}

//! The guest's initramfs, written by agentctl itself: a `newc` cpio archive
//! (what the kernel unpacks into its first root) of the files and kernel
//! modules the guest needs. Debian's kernels build virtio, 9p and the
//! virtio console as modules, so they go in, dependencies first.

use std::collections::HashMap;

/// One entry of the archive.
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
}

/// The archive's bytes (uncompressed: the kernel reads it as is).
pub fn cpio(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1u32;
    let put = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8], ino: u32| {
        let namesize = name.len() + 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
        // devminor, rdevmajor, rdevminor, namesize, check
        out.extend_from_slice(
            format!(
                "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
                0, 0, 1, 0, data.len(), 0, 0, 0, 0, 0
            )
            .as_bytes(),
        );
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    for e in entries {
        match e {
            Entry::Dir { path, mode } => put(&mut out, path, 0o040000 | mode, &[], ino),
            Entry::File { path, mode, data } => put(&mut out, path, 0o100000 | mode, data, ino),
        }
        ino += 1;
    }
    put(&mut out, "TRAILER!!!", 0, &[], 0);
    out
}

/// A kernel's modules as a package ships them (`lib/modules/<version>`):
/// no `modules.dep` (depmod writes it at install time), so each module's
/// dependencies are read from its own `.modinfo` (`depends=a,b`).
pub struct ModuleTree {
    /// Name (`9pnet_virtio`) to path relative to the tree.
    by_name: HashMap<String, String>,
    root: std::path::PathBuf,
}

impl ModuleTree {
    pub fn open(root: &std::path::Path) -> std::io::Result<ModuleTree> {
        let mut by_name = HashMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)?.flatten() {
                let path = e.path();
                if e.file_type()?.is_dir() {
                    stack.push(path);
                } else if let Some(name) = path.to_str().filter(|p| p.ends_with(".ko")) {
                    let rel = path
                        .strip_prefix(root)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| name.to_string());
                    by_name.insert(module_name(&rel), rel);
                }
            }
        }
        Ok(ModuleTree {
            by_name,
            root: root.to_path_buf(),
        })
    }

    /// Whether the tree has the module as a file, or the kernel has it
    /// built in (`modules.builtin`).
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name) || self.builtin(name)
    }

    /// Built into the kernel: nothing to load.
    pub fn builtin(&self, name: &str) -> bool {
        std::fs::read_to_string(self.root.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .any(|l| module_name(l) == name)
    }

    /// The modules `wanted` and everything they depend on, dependencies
    /// first, each once: the order `insmod` needs. Paths relative to the
    /// tree.
    pub fn in_order(&self, wanted: &[&str]) -> Result<Vec<String>, String> {
        let wanted: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !self.builtin(w))
            .collect();
        let wanted = &wanted[..];
        let deps = |name: &str| -> Result<(String, Vec<String>), String> {
            let rel = self
                .by_name
                .get(name)
                .ok_or_else(|| format!("module {name} is not in {}", self.root.display()))?;
            let bytes = std::fs::read(self.root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
            let needs = module_depends(&bytes)
                .into_iter()
                .filter(|d| !self.builtin(d))
                .collect();
            Ok((rel.clone(), needs))
        };
        order(wanted, deps)
    }
}

/// A module's path and the names it depends on, or why not.
type Deps<'a> = dyn Fn(&str) -> Result<(String, Vec<String>), String> + 'a;

/// Dependencies first, each once, from a function giving a module's path
/// and the names it depends on.
fn order(
    wanted: &[&str],
    deps: impl Fn(&str) -> Result<(String, Vec<String>), String>,
) -> Result<Vec<String>, String> {
    fn visit(
        name: &str,
        deps: &Deps<'_>,
        out: &mut Vec<String>,
        seen: &mut Vec<String>,
    ) -> Result<(), String> {
        if seen.iter().any(|s| s == name) {
            return Ok(());
        }
        seen.push(name.to_string());
        let (path, needs) = deps(name)?;
        for d in &needs {
            visit(d, deps, out, seen)?;
        }
        out.push(path);
        Ok(())
    }
    let (mut out, mut seen) = (Vec::new(), Vec::new());
    for w in wanted {
        visit(w, &deps, &mut out, &mut seen)?;
    }
    Ok(out)
}

/// The names in a module's `depends=` entry (`.modinfo` strings are
/// NUL-separated `key=value`).
pub fn module_depends(module: &[u8]) -> Vec<String> {
    let key = b"depends=";
    for (i, w) in module.windows(key.len()).enumerate() {
        if w == key && (i == 0 || module[i - 1] == 0) {
            let rest = &module[i + key.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            return String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect();
        }
    }
    Vec::new()
}

/// `kernel/fs/9p/9p.ko` -> `9p`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_once() {
        let table: HashMap<&str, Vec<&str>> = HashMap::from([
            ("9p", vec!["netfs", "9pnet", "fscache"]),
            ("fscache", vec!["netfs"]),
            ("netfs", vec![]),
            ("9pnet", vec![]),
            ("9pnet_virtio", vec!["9pnet", "virtio_ring", "virtio"]),
            ("virtio", vec![]),
            ("virtio_ring", vec![]),
        ]);
        let deps = |n: &str| {
            table
                .get(n)
                .map(|d| (format!("{n}.ko"), d.iter().map(|s| s.to_string()).collect()))
                .ok_or_else(|| format!("no {n}"))
        };
        let got = order(&["9p", "9pnet_virtio"], deps).unwrap();
        let pos = |m: &str| got.iter().position(|g| g == m).unwrap();
        assert!(pos("netfs.ko") < pos("fscache.ko"));
        assert!(pos("fscache.ko") < pos("9p.ko"));
        assert!(pos("9pnet.ko") < pos("9pnet_virtio.ko"));
        assert_eq!(got.iter().filter(|g| *g == "9pnet.ko").count(), 1);
        assert!(order(&["nope"], deps).is_err());
    }

    #[test]
    fn modinfo_depends_are_read_from_the_strings() {
        let m = b"\x7fELF....\0license=GPL\0depends=9pnet,virtio-ring,virtio\0retpoline=Y\0";
        assert_eq!(module_depends(m), ["9pnet", "virtio_ring", "virtio"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"xdepends=a\0").is_empty());
    }

    #[test]
    fn the_archive_ends_with_its_trailer_and_is_aligned() {
        let a = cpio(&[
            Entry::Dir {
                path: "bin".into(),
                mode: 0o755,
            },
            Entry::File {
                path: "init".into(),
                mode: 0o755,
                data: b"#!/bin/sh\n".to_vec(),
            },
        ]);
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let s = String::from_utf8_lossy(&a);
        assert!(s.contains("init\0") && s.contains("TRAILER!!!\0"));
    }
}

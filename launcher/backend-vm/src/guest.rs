//! What the guest boots: a kernel found on this host, and an initramfs
//! agentctl writes for each session (the static guest agent as /init and
//! the kernel's virtio, console and 9p modules in load order).

use std::path::{Path, PathBuf};

use vmm::initramfs::{Entry, ModuleTree, cpio};

/// The static guest agent, built by this crate's build script.
pub const GUEST_AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/agentctl-vm-guest"));

/// Modules the guest needs; Debian builds them as modules.
const MODULES: &[&str] = &["virtio_pci", "virtio_console", "9pnet_virtio", "9p"];

/// The network card's modules, loaded when the VM has one.
const NET_MODULES: &[&str] = &["virtio_net"];

/// Whether `kernel` can drive the user-mode network's card.
pub fn check_net_modules(kernel: &Kernel) -> Result<(), String> {
    let tree = ModuleTree::open(&kernel.modules)
        .map_err(|e| format!("{}: {e}", kernel.modules.display()))?;
    match NET_MODULES.iter().find(|m| !tree.has(m)) {
        None => Ok(()),
        Some(m) => Err(format!(
            "{} has no {m} module, which the guest's network card needs",
            kernel.vmlinuz.display()
        )),
    }
}

/// A kernel and its modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
    pub version: String,
}

/// Why no kernel was found, with what to do.
pub fn no_kernel_fix() -> String {
    "install Debian's generic kernel package (`apt-get install linux-image-amd64`; the cloud kernel lacks 9p), \
     or unpack one where you can read it: `apt-get download linux-image-6.1.0-<N>-amd64 && dpkg -x linux-image-*.deb DIR`, \
     then set AGENTCTL_VM_KERNEL_DIR=DIR"
        .to_string()
}

/// Where kernels are looked for, first match wins: AGENTCTL_VM_KERNEL_DIR
/// (an unpacked kernel package), agentctl's own directories, then the
/// host's installed kernels.
pub fn search_roots() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("AGENTCTL_VM_KERNEL_DIR") {
        // Named explicitly: only there, so a wrong path is an error, not a
        // quiet fallback to some other kernel.
        return vec![PathBuf::from(dir)];
    }
    let mut v = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".local/share/agentctl/vm-kernel"));
    }
    v.push(PathBuf::from("/var/lib/agentctl/vm-kernel"));
    v.push(PathBuf::from("/"));
    v
}

/// The newest kernel under `roots` that has every module the guest needs
/// and that this user can read.
pub fn find_kernel(roots: &[PathBuf]) -> Result<Kernel, String> {
    let mut seen = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join("boot")) else {
            continue;
        };
        let mut versions: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                    .map(str::to_string)
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(version_key(v)));
        for v in versions {
            let vmlinuz = root.join("boot").join(format!("vmlinuz-{v}"));
            let modules = ["lib/modules", "usr/lib/modules"]
                .iter()
                .map(|m| root.join(m).join(&v))
                .find(|m| m.is_dir());
            let Some(modules) = modules else {
                seen.push(format!("{}: no modules directory", vmlinuz.display()));
                continue;
            };
            if let Err(e) = std::fs::File::open(&vmlinuz) {
                seen.push(format!("{}: {e}", vmlinuz.display()));
                continue;
            }
            match ModuleTree::open(&modules) {
                Ok(t) if MODULES.iter().all(|m| t.has(m)) => {
                    return Ok(Kernel {
                        vmlinuz,
                        modules,
                        version: v,
                    });
                }
                Ok(_) => seen.push(format!(
                    "{}: lacks one of {} (a cloud kernel?)",
                    vmlinuz.display(),
                    MODULES.join(", ")
                )),
                Err(e) => seen.push(format!("{}: {e}", modules.display())),
            }
        }
    }
    let looked: Vec<String> = roots
        .iter()
        .map(|r| r.join("boot").display().to_string())
        .collect();
    Err(if seen.is_empty() {
        format!("no guest kernel in {}", looked.join(", "))
    } else {
        format!("no usable guest kernel ({})", seen.join("; "))
    })
}

/// `6.1.0-57-amd64` sorts after `6.1.0-9-amd64`.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Writes the initramfs for `kernel` to `path` (mode 0600), with the
/// network card's modules when `network`.
pub fn write_initramfs(kernel: &Kernel, path: &Path, network: bool) -> Result<(), String> {
    let tree = ModuleTree::open(&kernel.modules)
        .map_err(|e| format!("{}: {e}", kernel.modules.display()))?;
    let mut wanted: Vec<&str> = MODULES.to_vec();
    if network {
        wanted.extend_from_slice(NET_MODULES);
    }
    let order = tree.in_order(&wanted)?;
    let mut entries = Vec::new();
    for d in ["proc", "sys", "dev", "sandbox", "m"] {
        entries.push(Entry::Dir {
            path: d.into(),
            mode: 0o755,
        });
    }
    let mut made_dirs: Vec<String> = Vec::new();
    let mut listed = String::new();
    for rel in &order {
        let inside = format!("m/{rel}");
        let mut dir = String::from("m");
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, d)| d.to_vec())
            .unwrap_or_default()
        {
            dir = format!("{dir}/{part}");
            if !made_dirs.contains(&dir) {
                made_dirs.push(dir.clone());
                entries.push(Entry::Dir {
                    path: dir.clone(),
                    mode: 0o755,
                });
            }
        }
        let data = std::fs::read(kernel.modules.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
        entries.push(Entry::File {
            path: inside.clone(),
            mode: 0o644,
            data,
        });
        listed.push_str(&inside);
        listed.push('\n');
    }
    entries.push(Entry::File {
        path: "modules.order".into(),
        mode: 0o644,
        data: listed.into_bytes(),
    });
    entries.push(Entry::File {
        path: "init".into(),
        mode: 0o755,
        data: GUEST_AGENT.to_vec(),
    });
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(&cpio(&entries))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_kernels_sort_first() {
        let mut v = vec!["6.1.0-9-amd64", "6.1.0-57-amd64", "5.10.0-30-amd64"];
        v.sort_by_key(|v| std::cmp::Reverse(version_key(v)));
        assert_eq!(v, ["6.1.0-57-amd64", "6.1.0-9-amd64", "5.10.0-30-amd64"]);
    }

    #[test]
    fn a_missing_kernel_says_where_it_looked() {
        let d = tempfile::tempdir().unwrap();
        let e = find_kernel(&[d.path().to_path_buf()]).unwrap_err();
        assert!(
            e.contains(&d.path().join("boot").display().to_string()),
            "{e}"
        );
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        std::fs::write(d.path().join("boot/vmlinuz-6.1.0-1-cloud-amd64"), b"k").unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-1-cloud-amd64/kernel")).unwrap();
        let e = find_kernel(&[d.path().to_path_buf()]).unwrap_err();
        assert!(e.contains("lacks one of"), "{e}");
    }

    #[test]
    fn the_guest_agent_is_static() {
        // No program interpreter: it runs in an initramfs without a C library.
        assert_eq!(&GUEST_AGENT[..4], b"\x7fELF");
        let at = |o: usize, n: usize| {
            GUEST_AGENT[o..o + n]
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b)) as usize
        };
        let (phoff, phentsize, phnum) = (at(0x20, 8), at(0x36, 2), at(0x38, 2));
        assert!(phnum > 0);
        const PT_INTERP: usize = 3;
        for i in 0..phnum {
            let p_type = at(phoff + i * phentsize, 4);
            assert_ne!(
                p_type, PT_INTERP,
                "the guest agent asks for a dynamic loader"
            );
        }
    }
}

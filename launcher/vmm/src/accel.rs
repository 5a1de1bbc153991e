//! Which acceleration this host really has. `/dev/kvm` alone says little:
//! these machines have a paravirtual KVM (`kvm_pvm`) that runs ordinary
//! guests one instruction at a time, thousands of times too slowly
//! (../shared/research/spike-vm.md). Only the hardware modules count.

use std::path::Path;

use crate::VmmError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// QEMU's software emulation: slower, but it needs nothing of the host.
    Tcg,
}

/// `--accel kvm|tcg|auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// What the host says about KVM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `kvm_intel` or `kvm_amd` is loaded: hardware virtualisation.
    pub hardware_module: Option<String>,
    /// `kvm_pvm` is loaded: a paravirtual KVM, no use for ordinary guests.
    pub paravirtual: bool,
    /// `/dev/kvm` opens for reading and writing for this user.
    pub dev_kvm: Result<(), String>,
}

impl Probe {
    /// Reads this host.
    pub fn host() -> Probe {
        Probe::at(Path::new("/sys/module"), Path::new("/dev/kvm"))
    }

    /// Reads `modules` (a /sys/module) and opens `dev_kvm`.
    pub fn at(modules: &Path, dev_kvm: &Path) -> Probe {
        let hardware_module = ["kvm_intel", "kvm_amd"]
            .into_iter()
            .find(|m| modules.join(m).exists())
            .map(str::to_string);
        Probe {
            hardware_module,
            paravirtual: modules.join("kvm_pvm").exists(),
            dev_kvm: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dev_kvm)
                .map(drop)
                .map_err(|e| format!("{}: {e}", dev_kvm.display())),
        }
    }

    /// Why KVM cannot be used here, or None when it can.
    pub fn kvm_unusable(&self) -> Option<String> {
        match (&self.hardware_module, &self.dev_kvm) {
            (Some(_), Ok(())) => None,
            (Some(m), Err(e)) => Some(format!("{m} is loaded but {e}")),
            (None, _) if self.paravirtual => Some(
                "this host's KVM is paravirtual (kvm_pvm): it runs ordinary guests thousands of \
                 times too slowly"
                    .into(),
            ),
            (None, _) => {
                Some("this host has no hardware virtualisation (no kvm_intel or kvm_amd)".into())
            }
        }
    }

    /// The acceleration for `asked`, and a one-line notice when it is not
    /// what a user would expect (TCG chosen for them).
    pub fn choose(&self, asked: AccelChoice) -> Result<(Accel, Option<String>), VmmError> {
        match (asked, self.kvm_unusable()) {
            (AccelChoice::Tcg, _) => Ok((Accel::Tcg, None)),
            (AccelChoice::Kvm | AccelChoice::Auto, None) => Ok((Accel::Kvm, None)),
            (AccelChoice::Kvm, Some(why)) => Err(VmmError::Accel {
                reason: format!("--accel kvm: {why}"),
                fix: "use --accel tcg (slower), or a host with hardware virtualisation".into(),
            }),
            (AccelChoice::Auto, Some(why)) => Ok((
                Accel::Tcg,
                Some(format!(
                    "the VM runs under software emulation (TCG), several times slower: {why}"
                )),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(modules: &[&str], dev: bool) -> Probe {
        let d = tempfile::tempdir().unwrap();
        for m in modules {
            std::fs::create_dir(d.path().join(m)).unwrap();
        }
        let kvm = d.path().join("kvm-dev");
        if dev {
            std::fs::write(&kvm, "").unwrap();
        }
        Probe::at(d.path(), &kvm)
    }

    #[test]
    fn only_hardware_kvm_that_opens_is_kvm() {
        assert_eq!(
            probe(&["kvm", "kvm_intel"], true)
                .choose(AccelChoice::Auto)
                .unwrap()
                .0,
            Accel::Kvm
        );
        let (a, notice) = probe(&["kvm", "kvm_pvm"], true)
            .choose(AccelChoice::Auto)
            .unwrap();
        assert_eq!(a, Accel::Tcg);
        assert!(notice.unwrap().contains("paravirtual"));
        let (a, notice) = probe(&["kvm_amd"], false)
            .choose(AccelChoice::Auto)
            .unwrap();
        assert_eq!(a, Accel::Tcg);
        assert!(notice.unwrap().contains("kvm_amd is loaded but"));
        let e = probe(&["kvm_pvm"], true)
            .choose(AccelChoice::Kvm)
            .unwrap_err();
        assert!(e.to_string().contains("--accel tcg"), "{e}");
        assert_eq!(
            probe(&["kvm_intel"], true)
                .choose(AccelChoice::Tcg)
                .unwrap(),
            (Accel::Tcg, None)
        );
    }
}

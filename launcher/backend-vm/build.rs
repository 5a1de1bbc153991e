//! Builds the guest agent (launcher/vm-guest) as a static executable and
//! leaves it in OUT_DIR for `include_bytes!`: it is PID 1 of an initramfs
//! that holds no C library, and agentctl carries it so that one binary is
//! all a user installs.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let guest = manifest.join("../vm-guest");
    for p in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", guest.join(p).display());
    }
    let target = std::env::var("TARGET").expect("TARGET");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out.join("guest-target");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "vm-guest",
            "--bin",
            "agentctl-vm-guest",
        ])
        .args(["--target", &target])
        .arg("--target-dir")
        .arg(&target_dir)
        // Static, without symbols or debug information: it is copied into
        // every guest's initramfs.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "-Ctarget-feature=+crt-static",
                "-Cstrip=symbols",
                "-Cdebuginfo=0",
            ]
            .join("\x1f"),
        );
    // What the outer build set for itself must not leak into this one
    // (clippy's wrapper, a target directory, another target's flags).
    for v in [
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(v);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest agent");
    assert!(
        status.success(),
        "building the static guest agent (launcher/vm-guest) failed"
    );
    let built = target_dir.join(&target).join("release/agentctl-vm-guest");
    std::fs::copy(&built, out.join("agentctl-vm-guest")).expect("copying the guest agent");
}

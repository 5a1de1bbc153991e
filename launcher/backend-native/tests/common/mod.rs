//! Test helpers: the shared fixed plan and the OCI schema's location.

#![allow(dead_code)]

use std::path::PathBuf;

pub use sandbox::fixtures::spec;

/// The OCI runtime-spec JSON schema: `AGENTCTL_OCI_SCHEMA`, or
/// `shared/oci-runtime-spec-schema` next to (or above) the checkout.
pub fn schema_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("AGENTCTL_OCI_SCHEMA") {
        return Some(PathBuf::from(d));
    }
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        for candidate in [
            dir.join("shared/oci-runtime-spec-schema"),
            dir.join("../shared/oci-runtime-spec-schema"),
        ] {
            if candidate.join("config-schema.json").is_file() {
                return candidate.canonicalize().ok();
            }
        }
        if !dir.pop() {
            break;
        }
    }
    let fixed = PathBuf::from("/work/shared/oci-runtime-spec-schema");
    fixed.join("config-schema.json").is_file().then_some(fixed)
}

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if ci() {
        panic!("CI=true but this test needs {what}");
    }
    eprintln!("\n*** SKIPPED: this test needs {what} (it would fail under CI=true) ***\n");
    false
}

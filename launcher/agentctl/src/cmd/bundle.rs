use anyhow::{Context, Result};

use crate::cli::BundleArgs;

/// Writes the bundle a session would run, so that runc and crun can run
/// exactly what agentctl runs.
pub fn bundle(args: BundleArgs) -> Result<u8> {
    let spec = super::plan(&args.policy, args.command)?;
    // The bundle mounts them read-only, so they must exist; they stay, as
    // the bundle outlives this command (git reads them as "none").
    for p in sandbox::hostrun::create_placeholders(&spec.host_run)? {
        eprintln!(
            "agentctl: created {} for the bundle to mount read-only",
            p.display()
        );
    }
    backend_native::export_bundle(&spec, &args.out, args.tty, &args.cgroups_path)
        .with_context(|| format!("cannot write the bundle to {}", args.out.display()))?;
    println!("{}", args.out.display());
    Ok(0)
}

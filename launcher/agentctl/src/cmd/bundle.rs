use anyhow::{Context, Result};

use crate::cli::BundleArgs;

/// Writes the bundle a session would run, so that runc and crun can run
/// exactly what agentctl runs.
pub fn bundle(args: BundleArgs) -> Result<u8> {
    let spec = super::plan(&args.policy, args.command)?;
    backend_native::export_bundle(&spec, &args.out, args.tty, &args.cgroups_path)
        .with_context(|| format!("cannot write the bundle to {}", args.out.display()))?;
    println!("{}", args.out.display());
    Ok(0)
}

use anyhow::{Context, Result};

use super::wiring::request;
use crate::cli::BundleArgs;

/// Writes the bundle a session would run, so that runc and crun can run
/// exactly what agentctl runs.
pub fn bundle(args: BundleArgs, lc: &lifecycle::Lifecycle) -> Result<u8> {
    let spec = lc.plan(&request(&args.policy, args.command))?;
    // What the plan needs on the host (agentctl's own directories, home
    // entries the profile creates) must exist for a runtime to mount it.
    for prep in spec.prepare.iter().filter(|p| !p.path().exists()) {
        eprintln!(
            "agentctl: creating {} for the bundle to mount",
            prep.path().display()
        );
    }
    sandbox::prepare::apply(&spec)?;
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

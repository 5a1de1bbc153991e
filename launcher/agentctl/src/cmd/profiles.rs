use anyhow::Result;

use crate::cli::ProfilesArgs;
use lifecycle::profiles::FsLoader;

pub fn profiles(args: ProfilesArgs) -> Result<u8> {
    let loader = FsLoader::new();
    let mut rows = Vec::new();
    for name in policy::available(&loader) {
        let p = policy::resolve(&name, &loader)?;
        let builtin = policy::BUILTIN_PROFILES.iter().any(|(n, _)| *n == name);
        rows.push((name, p, builtin));
    }
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(name, p, builtin)| {
                serde_json::json!({
                    "name": name,
                    "builtin": builtin,
                    "description": p.description,
                    "network": p.network,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for (name, p, builtin) in rows {
            let origin = if builtin { "" } else { " (user)" };
            println!(
                "{name:<12} network {:<6} {}{origin}",
                p.network.to_string(),
                p.description
            );
        }
    }
    Ok(0)
}

use anyhow::{Context, Result};

use crate::cli::ImageCommand;

pub fn image(cmd: ImageCommand) -> Result<u8> {
    if let ImageCommand::Build {
        name,
        base,
        rebuild_deps,
    } = &cmd
    {
        let tag = super::wiring::host_backends().docker().build_image(
            name,
            base.as_deref(),
            *rebuild_deps,
        )?;
        println!("{tag}");
        return Ok(0);
    }
    let root = lifecycle::backends::image_root();
    let store = image_store::ImageCache::open(&root)
        .with_context(|| format!("cannot open the image cache at {}", root.display()))?;
    match cmd {
        ImageCommand::Build { .. } => unreachable!("handled above"),
        ImageCommand::Pull { source } => {
            let parsed: image_store::ImageSource = source.parse()?;
            let progress = crate::progress::Bars::for_stderr();
            let image = store.pull(&parsed, progress.as_ref())?;
            println!("{} {}", image.reference, image.config_digest);
        }
        ImageCommand::Ls { json } => {
            let images = store.list()?;
            if json {
                let list: Vec<_> = images
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "reference": i.reference,
                            "id": i.config_digest,
                            "size": i.size,
                            "created": i.created,
                            "rootfs": i.rootfs,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<50} {:<14} {:>10}", "REFERENCE", "ID", "SIZE");
                for i in images {
                    let id = i.config_digest.trim_start_matches("sha256:");
                    println!(
                        "{:<50} {:<14} {:>10}",
                        i.reference,
                        &id[..id.len().min(12)],
                        human(i.size)
                    );
                }
            }
        }
        ImageCommand::Rm { reference } => {
            store.remove(&reference)?;
            println!("removed {reference} (run `agentctl image prune` to free its space)");
        }
        ImageCommand::Prune => {
            let report = store.prune()?;
            println!(
                "removed {} layers and {} root filesystems, freed {}",
                report.blobs_removed,
                report.rootfs_removed,
                human(report.bytes_freed)
            );
        }
    }
    Ok(0)
}

fn human(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

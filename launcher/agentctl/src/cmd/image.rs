use anyhow::Result;

use crate::cli::ImageCommand;

pub fn image(cmd: ImageCommand) -> Result<u8> {
    match cmd {
        ImageCommand::Build {
            name,
            base,
            rebuild_deps,
        } => {
            let tag = backend_docker::DockerBackend::new(super::self_path()).build_image(
                &name,
                base.as_deref(),
                rebuild_deps,
            )?;
            println!("{tag}");
            Ok(0)
        }
        other => store(other),
    }
}

fn store(_cmd: ImageCommand) -> Result<u8> {
    anyhow::bail!("the image cache is not available yet")
}

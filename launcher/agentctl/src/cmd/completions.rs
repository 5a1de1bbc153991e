//! `agentctl completions SHELL` and `agentctl man`: shell completion and
//! man pages generated from the same clap definitions the parser uses, so
//! they cannot drift from what the binary accepts. Internal commands
//! (hidden) appear in neither.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "agentctl", &mut out);
    match std::io::stdout().lock().write_all(&out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

pub fn man(dir: &Path) -> Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("agentctl") && n.ends_with(".1"))
        .collect();
    pages.sort();
    eprintln!("wrote {} man pages to {}", pages.len(), dir.display());
    Ok(0)
}

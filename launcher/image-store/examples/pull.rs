//! `cargo run -p image-store --example pull -- SOURCE [STORE_DIR]`
//!
//! Pulls SOURCE (`debian:bookworm`, `localhost:5000/x:1`, `oci:DIR[:TAG]`,
//! `docker-archive:FILE[:TAG]`) into STORE_DIR (default: the user's store)
//! and prints the image. `RUST_LOG`-style logs are not set up here; the
//! progress lines go to stderr.

use std::cell::Cell;

use image_store::{ImageCache, ImageSource, Phase, Progress};

struct Printer {
    phase: Cell<Phase>,
    bytes: Cell<u64>,
}

impl Progress for Printer {
    fn layer_started(&self, digest: &str, bytes: Option<u64>) {
        self.bytes.set(0);
        eprintln!(
            "{} {digest} ({} bytes)",
            self.phase.get(),
            bytes.map_or("?".into(), |b| b.to_string())
        );
    }
    fn advanced(&self, _digest: &str, bytes: u64) {
        self.bytes.set(self.bytes.get() + bytes);
    }
    fn layer_done(&self, digest: &str) {
        eprintln!("  done {digest}: {} bytes", self.bytes.get());
    }
    fn message(&self, text: &str) {
        eprintln!("{text}");
    }
    fn phase(&self, phase: Phase) {
        self.phase.set(phase);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let source: ImageSource = args
        .next()
        .ok_or("usage: pull SOURCE [STORE_DIR]")?
        .parse()?;
    let root = args
        .next()
        .map_or_else(ImageCache::default_root, Into::into);
    let store = ImageCache::open(root)?;
    let printer = Printer {
        phase: Cell::new(Phase::Fetching),
        bytes: Cell::new(0),
    };
    let image = store.pull(&source, &printer)?;
    println!("{image:#?}");
    Ok(())
}

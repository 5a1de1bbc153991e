//! A daemonless OCI image store: pulls images from registries (Docker
//! Registry HTTP API v2), OCI image layouts and `docker save` archives, and
//! unpacks them into a content-addressed cache. No container runtime, no
//! daemon and no async runtime: blocking HTTP and plain file-system calls.
//!
//! Layout of a store (see [`ImageCache`]):
//!
//! ```text
//! <root>/index.json              tags: reference -> config digest, manifest, layers, size
//! <root>/blobs/sha256/<hex>      manifests, configs and compressed layers, verified
//! <root>/rootfs/<config-hex>/    the flattened rootfs of an image, built once
//! <root>/rootfs/.<hex>-…/        an unpack in progress
//! <root>/tmp/                    downloads in progress
//! <root>/locks/                  flock files that let processes share the store
//! ```
//!
//! Everything that enters the store is checked against its digest, when it
//! is downloaded or copied and again when it is unpacked (the uncompressed
//! layers against the config's `diff_ids` too). Layers are applied by
//! [`Unpacker`], which never writes outside the rootfs (see [`unpack`]).

mod digest;
mod error;
mod fsutil;
mod local;
mod manifest;
mod reference;
mod registry;
mod store;
pub mod unpack;

pub use error::ImageError;
pub use reference::{DEFAULT_REGISTRY, ImageSource, Reference};
pub use store::{Image, ImageCache, ImageConfig, PruneReport};
pub use unpack::{LayerStats, SkippedEntry, Unpacker, unpack_layer};

use std::fmt;

/// The step of a pull that the following layer events belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Downloading (or copying from a layout or archive) the blobs that are
    /// not in the store yet; `advanced` counts bytes transferred.
    Fetching,
    /// Applying the layers to a new rootfs; `advanced` counts compressed
    /// bytes of the layer consumed.
    Unpacking,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Fetching => "fetching",
            Phase::Unpacking => "unpacking",
        })
    }
}

/// Receives the progress of a pull, per layer. Each layer is reported once
/// per [`Phase`] that has work for it: `layer_started`, any number of
/// `advanced` (bytes since the previous call), `layer_done`. A layer
/// already in the store is not fetched, and an image whose rootfs exists is
/// not unpacked; `message` says so.
pub trait Progress {
    /// `digest` names the layer (`sha256:…`; while a legacy `docker save`
    /// archive, whose files are named by id, is copied: the layer's path in
    /// the archive). `bytes` is the layer's (compressed) size when known.
    fn layer_started(&self, digest: &str, bytes: Option<u64>);
    fn advanced(&self, digest: &str, bytes: u64);
    fn layer_done(&self, digest: &str);
    /// A line for the user ("already in the store", "skipped a device node", …).
    fn message(&self, text: &str);
    /// The layer events that follow belong to `phase`.
    fn phase(&self, phase: Phase) {
        let _ = phase;
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn layer_started(&self, _digest: &str, _bytes: Option<u64>) {}
    fn advanced(&self, _digest: &str, _bytes: u64) {}
    fn layer_done(&self, _digest: &str) {}
    fn message(&self, _text: &str) {}
}

//! The one error type of the image store. Every message says what went wrong
//! and what to do next, because the reader is a user who asked for an image.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A registry reference that does not follow the reference grammar.
    #[error(
        "invalid image reference '{reference}': {reason}; use a name like debian:bookworm, \
         localhost:5000/agent-base:latest or repo@sha256:<64 hex digits>"
    )]
    InvalidReference { reference: String, reason: String },

    /// An `oci:` or `docker-archive:` source that cannot be understood.
    #[error(
        "invalid image source '{text}': {reason}; use oci:PATH[:TAG], docker-archive:PATH[:TAG] \
         or a registry reference"
    )]
    InvalidSource { text: String, reason: String },

    /// The registry (or the local layout or archive) has no such image.
    #[error("image '{reference}' was not found in {location}; check the repository name and tag")]
    NotFound { reference: String, location: String },

    /// No connection to the registry could be made.
    #[error(
        "cannot reach registry {host}: {detail}; check the host name and the network, and if the \
         registry serves plain http add its host:port to AGENTCTL_INSECURE_REGISTRIES"
    )]
    RegistryUnreachable { host: String, detail: String },

    /// The registry wants credentials (anonymous access was refused).
    #[error(
        "registry {host} refused anonymous access to '{reference}'{detail}; the image does not \
         exist or is private (logging in to registries is not supported yet)"
    )]
    Unauthorized {
        host: String,
        reference: String,
        detail: String,
    },

    /// Any other unexpected answer from a registry.
    #[error(
        "registry {host} answered {status} to {request}{detail}; try again later or check the registry"
    )]
    Registry {
        host: String,
        status: u16,
        request: String,
        detail: String,
    },

    /// Content that does not hash to the digest that names it.
    #[error(
        "{what} {expected} is corrupted or was tampered with: its content hashes to {actual}; \
         the bad copy was not kept, pull the image again (and distrust its source if this repeats)"
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A manifest, layer or digest kind this store does not handle.
    #[error("unsupported {what}: {detail}")]
    Unsupported { what: String, detail: String },
    /// A layer past the unpacker's caps (`unpack::Limits`).
    #[error("refusing layer {layer}: {reason}")]
    TooLarge { layer: String, reason: String },

    /// An index without an image for this machine.
    #[error(
        "image '{reference}' has no variant for {wanted} (it has: {available}); use an image \
         built for this platform"
    )]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: String,
    },

    /// A malformed manifest, config, layout or archive.
    #[error("invalid image {what}: {reason}; the image is malformed, rebuild or export it again")]
    InvalidImage { what: String, reason: String },

    /// A layer entry that would escape the rootfs or cannot be applied.
    #[error(
        "refusing layer {layer}: entry '{entry}' {reason}; the image is malformed or malicious, \
         do not run it"
    )]
    UnsafeLayerEntry {
        layer: String,
        entry: String,
        reason: String,
    },

    /// The file system refused while a layer was applied.
    #[error(
        "cannot unpack '{entry}' of layer {layer}: {source}; check free space and permissions \
         under the store"
    )]
    Unpack {
        layer: String,
        entry: String,
        source: io::Error,
    },

    /// `remove` (or a lookup that must succeed) named nothing in the store.
    #[error("no image '{reference}' in the store; `list` shows what it has, `pull` adds an image")]
    NotInStore { reference: String },

    /// An image-id prefix that matches more than one image.
    #[error("image id prefix '{prefix}' is ambiguous: it matches {matches}; give more digits")]
    Ambiguous { prefix: String, matches: String },

    /// A tag whose blobs or rootfs went missing from the store.
    #[error("image '{reference}' is incomplete in the store ({detail}); pull it again")]
    Incomplete { reference: String, detail: String },

    /// The tag index cannot be read.
    #[error(
        "the store index {path} is unreadable: {reason}; move it away and pull the images again"
    )]
    CorruptIndex { path: PathBuf, reason: String },

    /// Any other I/O failure, with the path and the action it concerned.
    #[error("cannot {action} {path}: {source}; check that it exists and that you may write there")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::InvalidImage {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// `.map_err(io_err("read", &path))`
pub(crate) fn io_err<P: Into<PathBuf>>(
    action: &'static str,
    path: P,
) -> impl FnOnce(io::Error) -> ImageError {
    move |e| ImageError::io(action, path, e)
}

//! Image references (`debian:bookworm`, `localhost:5000/agent-base:latest`,
//! `repo@sha256:…`) and image sources (`oci:PATH[:TAG]`,
//! `docker-archive:PATH[:TAG]`).
//!
//! Names are normalised the way docker does: a first component without a
//! `.` or `:` that is not `localhost` is not a registry, so `debian` means
//! `docker.io/library/debian:latest`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::ImageError;

/// The registry that names without a host refer to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Where the default registry's API really lives.
const DEFAULT_REGISTRY_API: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised registry reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `ghcr.io`, …
    pub registry: String,
    /// `library/debian`, `agent-base`, …
    pub repository: String,
    /// `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// `sha256:…` when pinned.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.chars().any(char::is_whitespace) {
            return Err(bad("it contains white space"));
        }
        let (rest, digest) = match text.rsplit_once('@') {
            Some((rest, d)) => {
                let d = Digest::parse(d).map_err(|r| bad(&r))?;
                (rest, Some(d.as_str().to_owned()))
            }
            None => (text, None),
        };
        // A tag is a `:` after the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| bad(&r))?;
        }
        if name.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad("the name is longer than 255 characters"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, path)
            }
            _ => (DEFAULT_REGISTRY, name),
        };
        check_registry(registry).map_err(|r| bad(&r))?;
        let registry = match registry {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY,
            other => other,
        };
        for component in path.split('/') {
            check_component(component).map_err(|r| bad(&r))?;
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host (and port) the registry API is served from.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DEFAULT_REGISTRY_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok_first = tag
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok_first
        || tag.len() > MAX_TAG_LEN
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "tag '{tag}' is invalid (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')"
        ));
    }
    Ok(())
}

fn check_registry(host: &str) -> Result<(), String> {
    let bad = || format!("registry '{host}' is not a valid host[:port]");
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        // [ipv6]:port
        let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        match after {
            "" => return Ok(()),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(h) = h {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !h.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    Ok(())
}

/// One path component: `[a-z0-9]+` joined by `.`, `_`, `__` or `-`+.
fn check_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("the repository name has an empty path component".to_owned());
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "repository names must be lower-case ('{c}' is not)"
        ));
    }
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let invalid = || {
        format!(
            "'{c}' is not a valid repository name component (lower-case letters and digits, \
             separated by '.', '_', '__' or dashes)"
        )
    };
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(invalid());
        }
        if i == bytes.len() {
            return Ok(());
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return Err(invalid()),
        }
    }
}

/// Where [`crate::Store::pull`] takes an image from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A registry reference: `debian:bookworm` (docker.io/library is the
    /// default), `localhost:5000/agent-base:latest`, `repo@sha256:…`.
    Registry { reference: String },
    /// An OCI image layout directory; `tag` picks the manifest whose
    /// `org.opencontainers.image.ref.name` annotation is that tag.
    OciLayout { path: PathBuf, tag: Option<String> },
    /// A `docker save` tarball; `tag` picks the image with that RepoTag.
    DockerArchive { path: PathBuf, tag: Option<String> },
}

impl FromStr for ImageSource {
    type Err = ImageError;

    /// `oci:PATH[:TAG]`, `docker-archive:PATH[:TAG]`, anything else (with an
    /// optional `docker://` in front) is a registry reference. The first `:`
    /// after the path ends it, so a TAG may itself be a full reference
    /// (`docker-archive:img.tar:localhost:5000/x:1`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let local = |rest: &str| -> Result<(PathBuf, Option<String>), ImageError> {
            let bad = |reason: &str| ImageError::InvalidSource {
                text: text.to_owned(),
                reason: reason.to_owned(),
            };
            let (path, tag) = match rest.split_once(':') {
                Some((p, t)) => (p, Some(t)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(bad("the path is empty"));
            }
            if tag.is_some_and(str::is_empty) {
                return Err(bad("the tag after ':' is empty"));
            }
            Ok((PathBuf::from(path), tag.map(str::to_owned)))
        };
        if let Some(rest) = text.strip_prefix("oci:") {
            let (path, tag) = local(rest)?;
            Ok(ImageSource::OciLayout { path, tag })
        } else if let Some(rest) = text.strip_prefix("docker-archive:") {
            let (path, tag) = local(rest)?;
            Ok(ImageSource::DockerArchive { path, tag })
        } else {
            let reference = text.strip_prefix("docker://").unwrap_or(text);
            Reference::parse(reference)?;
            Ok(ImageSource::Registry {
                reference: reference.to_owned(),
            })
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = |f: &mut fmt::Formatter<'_>, kind, path: &PathBuf, tag: &Option<String>| {
            write!(f, "{kind}:{}", path.display())?;
            match tag {
                Some(t) => write!(f, ":{t}"),
                None => Ok(()),
            }
        };
        match self {
            ImageSource::Registry { reference } => f.write_str(reference),
            ImageSource::OciLayout { path, tag } => local(f, "oci", path, tag),
            ImageSource::DockerArchive { path, tag } => local(f, "docker-archive", path, tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("debian"), "docker.io/library/debian:latest");
        assert_eq!(full("debian:bookworm"), "docker.io/library/debian:bookworm");
        assert_eq!(full("library/debian:12"), "docker.io/library/debian:12");
        assert_eq!(full("docker.io/debian"), "docker.io/library/debian:latest");
        assert_eq!(full("index.docker.io/foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(full("someuser/tool:v1.2"), "docker.io/someuser/tool:v1.2");
        assert_eq!(
            full("localhost:5000/agent-base:latest"),
            "localhost:5000/agent-base:latest"
        );
        assert_eq!(full("localhost/agent-base"), "localhost/agent-base:latest");
        assert_eq!(full("ghcr.io/a/b/c:x"), "ghcr.io/a/b/c:x");
        assert_eq!(
            full("127.0.0.1:5000/a_b__c-d--e.f"),
            "127.0.0.1:5000/a_b__c-d--e.f:latest"
        );
        assert_eq!(full("[::1]:5000/x:y"), "[::1]:5000/x:y");
    }

    #[test]
    fn parts_and_api_host() {
        let r = Reference::parse("debian:bookworm").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/debian");
        assert_eq!(r.tag.as_deref(), Some("bookworm"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_ref(), "bookworm");
        let r = Reference::parse("localhost:5000/a/b:t").unwrap();
        assert_eq!(r.api_host(), "localhost:5000");
        assert_eq!(r.name(), "localhost:5000/a/b");
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let r = Reference::parse(&format!("debian@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.to_string(), format!("docker.io/library/debian@{d}"));
        let r = Reference::parse(&format!("localhost:5000/x:1@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.manifest_ref(), d, "the digest wins over the tag");
        assert!(Reference::parse("debian@sha256:abc").is_err());
        assert!(Reference::parse("debian@md5:abc").is_err());
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "Debian",
            "debian:",
            "debian:-x",
            "debian:a/b",
            "a//b",
            "/debian",
            "debian/",
            "-x",
            "x-",
            "a..b",
            "a b",
            "localhost:port/x",
            "exa_mple.com/x",
            "ex ample",
            &"a".repeat(300),
            &format!("x:{}", "t".repeat(129)),
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert!(
                matches!(err, ImageError::InvalidReference { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().starts_with("invalid image reference"));
        }
        let err = Reference::parse("Debian").unwrap_err().to_string();
        assert!(err.contains("lower-case"), "{err}");
    }

    #[test]
    fn sources() {
        assert_eq!(
            "oci:/tmp/layout".parse::<ImageSource>().unwrap(),
            ImageSource::OciLayout {
                path: "/tmp/layout".into(),
                tag: None
            }
        );
        assert_eq!(
            "oci:./lay:v2".parse::<ImageSource>().unwrap(),
            ImageSource::OciLayout {
                path: "./lay".into(),
                tag: Some("v2".into())
            }
        );
        assert_eq!(
            "docker-archive:img.tar:localhost:5000/x:1"
                .parse::<ImageSource>()
                .unwrap(),
            ImageSource::DockerArchive {
                path: "img.tar".into(),
                tag: Some("localhost:5000/x:1".into())
            }
        );
        assert_eq!(
            "docker://debian:bookworm".parse::<ImageSource>().unwrap(),
            ImageSource::Registry {
                reference: "debian:bookworm".into()
            }
        );
        assert_eq!(
            "localhost:5000/agent-base:latest"
                .parse::<ImageSource>()
                .unwrap(),
            ImageSource::Registry {
                reference: "localhost:5000/agent-base:latest".into()
            }
        );
        assert!("oci:".parse::<ImageSource>().is_err());
        assert!("oci:/x:".parse::<ImageSource>().is_err());
        assert!("docker-archive::t".parse::<ImageSource>().is_err());
        assert!("NotARef".parse::<ImageSource>().is_err());
        let s = "docker-archive:/a/b.tar:x:1";
        assert_eq!(s.parse::<ImageSource>().unwrap().to_string(), s);
    }
}

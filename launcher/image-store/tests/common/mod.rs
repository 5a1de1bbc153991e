//! Helpers shared by the integration tests: tar layers built byte by byte
//! (so they can hold what a well-behaved tar tool refuses to write), OCI
//! layouts, a recording `Progress`, a real local registry and the rule for
//! tests whose tools are missing.
#![allow(dead_code)]

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image_store::{Phase, Progress};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Whether this run must not skip anything (CI sets CI=true).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `Ok` runs the test. `Err(why)` skips it loudly, or fails it under CI.
pub fn require(test: &str, check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(why) if in_ci() => panic!("{test}: {why} (CI=true: this test may not be skipped)"),
        Err(why) => {
            // Straight to fd 2: the test harness captures eprintln! of
            // passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** SKIPPED {test}: {why} ***\n"
            );
            false
        }
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

pub const MTIME: u64 = 1_600_000_000;

/// A tar layer written entry by entry, names and link targets taken as raw
/// bytes (no `..` check, no path cleanup).
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn entry(
        mut self,
        kind: tar::EntryType,
        path: &str,
        mode: u32,
        link: Option<&str>,
        data: &[u8],
    ) -> Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        {
            let old = h.as_old_mut();
            assert!(path.len() < 100, "test paths stay short");
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(tar::EntryType::Directory, path, mode, None, b"")
    }
    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(tar::EntryType::Regular, path, mode, None, data)
    }
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(tar::EntryType::Symlink, path, 0o777, Some(target), b"")
    }
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(tar::EntryType::Link, path, 0o644, Some(target), b"")
    }
    pub fn fifo(self, path: &str) -> Self {
        self.entry(tar::EntryType::Fifo, path, 0o600, None, b"")
    }
    pub fn char_device(self, path: &str) -> Self {
        self.entry(tar::EntryType::Char, path, 0o666, None, b"")
    }
    /// A PAX extended header for the next entry.
    pub fn pax(self, records: &[(&str, &str)]) -> Self {
        let mut data = String::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            data.push_str(&format!("{len}{body}"));
        }
        self.entry(
            tar::EntryType::XHeader,
            "PaxHeaders/next",
            0o644,
            None,
            data.as_bytes(),
        )
    }

    /// A file whose content comes from the host.
    pub fn host_file(self, path: &str, mode: u32, host: &Path) -> Self {
        let data = fs::read(host).unwrap();
        self.file(path, mode, &data)
    }

    pub fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// An image in the making: (uncompressed, stored) layer pairs and a config.
pub struct TestImage {
    pub layers: Vec<(Vec<u8>, Vec<u8>, &'static str)>,
    pub config: Value,
}

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl TestImage {
    pub fn new(env: &[&str], cmd: &[&str]) -> TestImage {
        TestImage {
            layers: Vec::new(),
            config: json!({
                "architecture": host_arch(),
                "os": "linux",
                "created": "2024-01-02T03:04:05Z",
                "config": { "Env": env, "Cmd": cmd, "WorkingDir": "/work", "User": "1000:1000",
                            "Labels": { "org.example": "yes" } },
                "rootfs": { "type": "layers", "diff_ids": [] },
            }),
        }
    }

    pub fn layer(mut self, tar: Vec<u8>, media_type: &'static str) -> Self {
        let stored = match media_type {
            GZIP => gzip(&tar),
            ZSTD => zstd(&tar),
            _ => tar.clone(),
        };
        self.config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(sha256(&tar)));
        self.layers.push((tar, stored, media_type));
        self
    }

    pub fn config_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.config).unwrap()
    }

    pub fn manifest_bytes(&self) -> Vec<u8> {
        let config = self.config_bytes();
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|(_, stored, mt)| json!({"mediaType": mt, "digest": sha256(stored), "size": stored.len()}))
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(&config), "size": config.len()},
            "layers": layers,
        }))
        .unwrap()
    }

    /// Every blob: config, layers, manifest.
    pub fn blobs(&self) -> Vec<Vec<u8>> {
        let mut v = vec![self.config_bytes(), self.manifest_bytes()];
        v.extend(self.layers.iter().map(|(_, s, _)| s.clone()));
        v
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes an OCI layout holding `images` (each with a ref.name annotation).
pub fn write_layout(dir: &Path, images: &[(&str, &TestImage)]) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifests = Vec::new();
    for (name, image) in images {
        for blob in image.blobs() {
            write_blob(dir, &blob);
        }
        let m = image.manifest_bytes();
        manifests.push(json!({
            "mediaType": OCI_MANIFEST, "digest": sha256(&m), "size": m.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

pub fn write_blob(layout: &Path, bytes: &[u8]) -> PathBuf {
    let d = sha256(bytes);
    let p = layout.join("blobs/sha256").join(&d["sha256:".len()..]);
    fs::write(&p, bytes).unwrap();
    p
}

/// Records every progress event.
#[derive(Default)]
pub struct Recorder {
    pub events: RefCell<Vec<String>>,
}

impl Recorder {
    pub fn count(&self, prefix: &str) -> usize {
        self.events
            .borrow()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .count()
    }
    pub fn bytes(&self) -> u64 {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| e.strip_prefix("advanced "))
            .map(|e| e.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
    pub fn dump(&self) -> String {
        self.events.borrow().join("\n")
    }
}

impl Progress for Recorder {
    fn layer_started(&self, digest: &str, bytes: Option<u64>) {
        self.events
            .borrow_mut()
            .push(format!("started {digest} {bytes:?}"));
    }
    fn advanced(&self, digest: &str, bytes: u64) {
        self.events
            .borrow_mut()
            .push(format!("advanced {digest} {bytes}"));
    }
    fn layer_done(&self, digest: &str) {
        self.events.borrow_mut().push(format!("done {digest}"));
    }
    fn message(&self, text: &str) {
        self.events.borrow_mut().push(format!("message {text}"));
    }
    fn phase(&self, phase: Phase) {
        self.events.borrow_mut().push(format!("phase {phase}"));
    }
}

// ----- a real registry (Debian's docker-registry) -----

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn available() -> Result<(), String> {
        if Path::new(REGISTRY_BIN).exists() {
            Ok(())
        } else {
            Err(format!(
                "{REGISTRY_BIN} is missing (apt-get install -y docker-registry)"
            ))
        }
    }

    /// Starts a registry on a free loopback port, storing in a temp dir.
    pub fn start() -> Registry {
        Self::start_with(None, "")
    }

    /// Starts a registry storing in `data` (default: its own temp dir),
    /// with `extra` appended to its configuration (an `auth:` section).
    pub fn start_with(data: Option<&Path>, extra: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        let data = data.map_or_else(|| dir.path().join("data"), Path::to_owned);
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                data.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent = ureq::Agent::new_with_defaults();
        loop {
            match agent.get(&format!("{}/v2/", reg.url())).call() {
                Ok(r) if r.status() == 200 => break,
                Err(ureq::Error::StatusCode(401)) => break, // up, wants a token
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not come up: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where this registry keeps its content.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Uploads a blob (monolithic upload: POST then PUT).
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) {
        let agent = ureq::Agent::new_with_defaults();
        let r = agent
            .post(&format!("{}/v2/{repo}/blobs/uploads/", self.url()))
            .send_empty()
            .unwrap();
        assert_eq!(r.status(), 202);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.url())
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = agent
            .put(&format!("{location}{sep}digest={}", sha256(bytes)))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        assert_eq!(r.status(), 201, "blob upload");
    }

    pub fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let agent = ureq::Agent::new_with_defaults();
        let mut r = agent
            .put(&format!("{}/v2/{repo}/manifests/{reference}", self.url()))
            .header("Content-Type", media_type)
            .send(bytes)
            .unwrap();
        let status = r.status();
        assert_eq!(
            status,
            201,
            "manifest upload: {}",
            r.body_mut().read_to_string().unwrap_or_default()
        );
    }

    /// Pushes every blob and the manifest of `image` as `repo:tag`.
    pub fn push_image(&self, repo: &str, tag: &str, image: &TestImage) -> String {
        let config = image.config_bytes();
        self.push_blob(repo, &config);
        for (_, stored, _) in &image.layers {
            self.push_blob(repo, stored);
        }
        let m = image.manifest_bytes();
        self.push_manifest(repo, tag, OCI_MANIFEST, &m);
        sha256(&m)
    }
}

// ----- docker -----

pub fn docker_available() -> Result<(), String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err("the docker daemon is not running (start dockerd)".into()),
        Err(_) => Err("the docker CLI is missing (apt-get install -y docker.io)".into()),
    }
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub const BUSYBOX: &str = "/bin/busybox";

pub fn busybox_static() -> Result<(), String> {
    let out = Command::new("file").arg("-L").arg(BUSYBOX).output();
    let is_static = match out {
        Ok(o) => {
            let t = String::from_utf8_lossy(&o.stdout);
            t.contains("statically linked") || t.contains("static-pie")
        }
        // No `file`: trust the package.
        Err(_) => Path::new("/usr/share/doc/busybox-static").exists(),
    };
    if Path::new(BUSYBOX).exists() && is_static {
        Ok(())
    } else {
        Err(format!(
            "{BUSYBOX} is not a static busybox (apt-get install -y busybox-static)"
        ))
    }
}

/// A tiny root file system: /bin/busybox and links to it, /etc with a few
/// files, /tmp.
pub fn busybox_rootfs_tar() -> Vec<u8> {
    let mut l = Layer::new()
        .dir("bin/", 0o755)
        .host_file("bin/busybox", 0o755, Path::new(BUSYBOX));
    for applet in ["sh", "ls", "echo", "cat", "id", "true"] {
        l = l.symlink(&format!("bin/{applet}"), "busybox");
    }
    l.dir("etc/", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/group", 0o644, b"root:x:0:\n")
        .file("etc/hostname", 0o644, b"busybox\n")
        .dir("tmp/", 0o1777)
        .tar()
}

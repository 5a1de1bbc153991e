//! Pulls from a real registry (Debian's `docker-registry` on a loopback
//! port) and from what a real docker engine makes: `docker import` +
//! `docker push`, `docker save`, and an OCI layout built from the saved
//! image plus a whiteout layer.
//!
//! Needs `/usr/bin/docker-registry` (apt-get install -y docker-registry);
//! the docker test also needs a running docker engine and busybox-static.
//! Without them the tests print `*** SKIPPED … ***`, and fail under CI=true.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::{
    GZIP, Layer, OCI_INDEX, OCI_MANIFEST, Recorder, Registry, TAR, TestImage, ZSTD,
    busybox_rootfs_tar, docker, sha256,
};
use image_store::{ImageCache, ImageError, ImageSource, NoProgress};
use serde_json::{Value, json};

fn registry(reference: String) -> ImageSource {
    ImageSource::Registry { reference }
}

fn small_image(marker: &str) -> TestImage {
    TestImage::new(&[&format!("MARK={marker}")], &["/bin/true"])
        .layer(
            Layer::new()
                .dir("etc/", 0o755)
                .file("etc/mark", 0o644, marker.as_bytes())
                .file("etc/gone", 0o644, b"x")
                .tar(),
            GZIP,
        )
        .layer(
            Layer::new()
                .file("etc/.wh.gone", 0o644, b"")
                .file(&format!("{marker}.txt"), 0o644, b"m")
                .tar(),
            ZSTD,
        )
}

/// The same image with Docker's media types (schema 2).
fn docker_manifest(image: &TestImage) -> Vec<u8> {
    let config = image.config_bytes();
    let layers: Vec<Value> = image
        .layers
        .iter()
        .map(|(_, stored, _)| {
            json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                   "digest": sha256(stored), "size": stored.len()})
        })
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": layers,
    }))
    .unwrap()
}

#[test]
fn registry_pulls_by_tag_digest_and_platform() {
    if !common::require(
        "registry_pulls_by_tag_digest_and_platform",
        Registry::available(),
    ) {
        return;
    }
    let reg = Registry::start();
    let host = reg.host();
    let t = tempfile::tempdir().unwrap();
    let store = ImageCache::open(t.path().join("store")).unwrap();

    // By tag.
    let image = small_image("one");
    let manifest_digest = reg.push_image("agentctl/one", "v1", &image);
    let rec = Recorder::default();
    let img = store
        .pull(&registry(format!("{host}/agentctl/one:v1")), &rec)
        .unwrap();
    assert_eq!(img.reference, format!("{host}/agentctl/one:v1"));
    assert_eq!(
        img.manifest_digest.as_deref(),
        Some(manifest_digest.as_str())
    );
    assert_eq!(img.config_digest, sha256(&image.config_bytes()));
    assert_eq!(
        fs::read_to_string(img.rootfs.join("etc/mark")).unwrap(),
        "one"
    );
    assert!(!img.rootfs.join("etc/gone").exists());
    assert!(img.rootfs.join("one.txt").exists());
    assert_eq!(img.config.env, ["MARK=one"]);
    let stored: u64 = image.layers.iter().map(|(_, s, _)| s.len() as u64).sum();
    assert_eq!(
        rec.bytes(),
        2 * stored,
        "downloaded, then unpacked: {}",
        rec.dump()
    );
    assert_eq!(rec.count("phase fetching"), 1);

    // Again: the tag is resolved, nothing is downloaded or unpacked.
    let rec = Recorder::default();
    let again = store
        .pull(&registry(format!("{host}/agentctl/one:v1")), &rec)
        .unwrap();
    assert_eq!(again, img);
    assert_eq!(rec.count("started"), 0, "{}", rec.dump());
    assert_eq!(rec.count("phase"), 0, "{}", rec.dump());

    // By digest: its own tag in the store, same image.
    let pinned = format!("{host}/agentctl/one@{manifest_digest}");
    let by_digest = store.pull(&registry(pinned.clone()), &NoProgress).unwrap();
    assert_eq!(by_digest.reference, pinned);
    assert_eq!(by_digest.rootfs, img.rootfs);
    assert_eq!(store.list().unwrap().len(), 2);

    // Unknown tag and repository: not found, naming what was asked.
    let err = store
        .pull(&registry(format!("{host}/agentctl/one:nope")), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("'{host}/agentctl/one:nope'")),
        "{text}"
    );
    assert!(text.contains(&format!("registry {host}")), "{text}");
    let err = store
        .pull(&registry(format!("{host}/no/such-repo")), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");

    // A Docker schema 2 manifest and a Docker manifest list.
    let two = small_image("two");
    for blob in [two.config_bytes()]
        .iter()
        .chain(two.layers.iter().map(|(_, s, _)| s))
    {
        reg.push_blob("agentctl/two", blob);
    }
    // (zstd layers do not exist in Docker's media types: re-label as gzip
    // still unpacks, since compression is detected from the bytes.)
    let m = docker_manifest(&two);
    reg.push_manifest(
        "agentctl/two",
        "docker",
        "application/vnd.docker.distribution.manifest.v2+json",
        &m,
    );
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "digest": sha256(&m), "size": m.len(),
                       "platform": {"os": "linux", "architecture": common::host_arch()}}],
    }))
    .unwrap();
    reg.push_manifest(
        "agentctl/two",
        "list",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &list,
    );
    let img = store
        .pull(
            &registry(format!("{host}/agentctl/two:docker")),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(img.config.env, ["MARK=two"]);
    let from_list = store
        .pull(&registry(format!("{host}/agentctl/two:list")), &NoProgress)
        .unwrap();
    assert_eq!(from_list.config_digest, img.config_digest);
    assert_eq!(
        from_list.manifest_digest.as_deref(),
        Some(sha256(&m).as_str())
    );

    // An OCI index with two platforms: the host's is chosen.
    let mut other = small_image("other");
    other.config["architecture"] = json!("s390x");
    let host_img = small_image("host");
    let mut entries = Vec::new();
    for (img, arch) in [(&other, "s390x"), (&host_img, common::host_arch())] {
        let d = reg.push_image("agentctl/multi", &format!("only-{arch}"), img);
        entries.push(json!({"mediaType": OCI_MANIFEST, "digest": d,
                            "size": img.manifest_bytes().len(),
                            "platform": {"os": "linux", "architecture": arch}}));
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    )
    .unwrap();
    reg.push_manifest("agentctl/multi", "both", OCI_INDEX, &index);
    let img = store
        .pull(
            &registry(format!("{host}/agentctl/multi:both")),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(img.config.env, ["MARK=host"]);
    let only_other = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entries[0]]}),
    )
    .unwrap();
    reg.push_manifest("agentctl/multi", "s390x-only", OCI_INDEX, &only_other);
    let err = store
        .pull(
            &registry(format!("{host}/agentctl/multi:s390x-only")),
            &NoProgress,
        )
        .unwrap_err();
    assert!(
        matches!(err, ImageError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("linux/s390x"), "{err}");

    // Pinned by digest, everything present: works with the registry gone.
    let index_pinned = format!("{host}/agentctl/multi@{}", sha256(&index));
    store
        .pull(&registry(index_pinned.clone()), &NoProgress)
        .unwrap();
    drop(reg);
    let offline = store.pull(&registry(index_pinned), &NoProgress).unwrap();
    assert_eq!(offline.config.env, ["MARK=host"]);
    // A tag needs the registry: the error names the host.
    let err = store
        .pull(&registry(format!("{host}/agentctl/one:v1")), &NoProgress)
        .unwrap_err();
    assert!(
        matches!(err, ImageError::RegistryUnreachable { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("cannot reach registry {host}")),
        "{err}"
    );

    // Everything removed, prune leaves an empty store.
    for image in store.list().unwrap() {
        store.remove(&image.reference).unwrap();
    }
    let report = store.prune().unwrap();
    assert!(
        report.rootfs_removed >= 3 && report.blobs_removed > 10,
        "{report:?}"
    );
    assert_eq!(
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

/// Removes the images this test tagged in docker, even when it fails.
struct DockerImages(Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", name]).output();
        }
    }
}

#[test]
fn docker_import_push_save_and_an_oci_layout() {
    let test = "docker_import_push_save_and_an_oci_layout";
    if !common::require(test, Registry::available())
        || !common::require(test, common::docker_available())
        || !common::require(test, common::busybox_static())
    {
        return;
    }
    let reg = Registry::start();
    let host = reg.host();
    let t = tempfile::tempdir().unwrap();
    let name = format!("{host}/agentctl-test/busybox:v1");
    let _cleanup = DockerImages(vec![name.clone()]);

    // A busybox image made by docker itself.
    let rootfs_tar = t.path().join("rootfs.tar");
    fs::write(&rootfs_tar, busybox_rootfs_tar()).unwrap();
    docker(&[
        "import",
        "--change",
        "ENV FOO=bar",
        "--change",
        "WORKDIR /tmp",
        "--change",
        r#"CMD ["/bin/sh"]"#,
        rootfs_tar.to_str().unwrap(),
        &name,
    ]);
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &name]);
    docker(&["push", &name]);

    // Pull it from the registry and run it.
    let store = ImageCache::open(t.path().join("store")).unwrap();
    let rec = Recorder::default();
    let img = store.pull(&registry(name.clone()), &rec).unwrap();
    assert_eq!(img.reference, name);
    assert_eq!(img.config_digest, id, "the image id survives push and pull");
    assert_eq!(img.config.cmd, ["/bin/sh"]);
    assert!(
        img.config.env.contains(&"FOO=bar".to_owned()),
        "{:?}",
        img.config.env
    );
    assert_eq!(img.config.working_dir.as_deref(), Some("/tmp"));
    assert!(img.size >= fs::metadata(common::BUSYBOX).unwrap().len());
    assert_busybox_runs(&img.rootfs);
    assert_eq!(rec.count("phase fetching"), 1);

    // A second pull reuses the blobs and the rootfs.
    let blobs_before = fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count();
    let rec = Recorder::default();
    let again = store.pull(&registry(name.clone()), &rec).unwrap();
    assert_eq!(again, img);
    assert_eq!(rec.count("started"), 0, "{}", rec.dump());
    assert_eq!(
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        blobs_before
    );

    // get / list / remove / prune.
    assert_eq!(store.get(&name).unwrap().as_ref(), Some(&img));
    assert_eq!(store.get(&id[7..19]).unwrap().as_ref(), Some(&img));
    assert_eq!(store.list().unwrap(), vec![img.clone()]);
    store.remove(&name).unwrap();
    assert_eq!(store.get(&name).unwrap(), None);
    assert!(img.rootfs.exists(), "remove keeps the rootfs until prune");
    let report = store.prune().unwrap();
    assert_eq!(report.rootfs_removed, 1);
    assert_eq!(report.blobs_removed, blobs_before);
    assert!(report.bytes_freed >= img.size);
    assert!(!img.rootfs.exists());

    // docker save -> a docker-archive source, in a fresh store.
    let archive = t.path().join("saved.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), &name]);
    let store2 = ImageCache::open(t.path().join("store2")).unwrap();
    let source: ImageSource = format!("docker-archive:{}", archive.display())
        .parse()
        .unwrap();
    let rec = Recorder::default();
    let from_archive = store2.pull(&source, &rec).unwrap();
    assert_eq!(from_archive.reference, format!("local:{name}"));
    assert_eq!(from_archive.config_digest, id);
    assert_eq!(from_archive.manifest_digest, None);
    assert_busybox_runs(&from_archive.rootfs);
    assert_eq!(
        rec.count("done"),
        2,
        "one layer copied and unpacked: {}",
        rec.dump()
    );
    let tagged: ImageSource = format!("docker-archive:{}:{name}", archive.display())
        .parse()
        .unwrap();
    assert_eq!(store2.pull(&tagged, &NoProgress).unwrap(), from_archive);
    let wrong: ImageSource = format!("docker-archive:{}:other:tag", archive.display())
        .parse()
        .unwrap();
    let err = store2.pull(&wrong, &NoProgress).unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&name),
        "lists what the archive has: {err}"
    );

    // An OCI layout made from the saved image plus a layer of whiteouts.
    let (config, layer) = read_saved_image(&archive);
    let mut config: Value = serde_json::from_slice(&config).unwrap();
    config["rootfs"]["diff_ids"] = json!([]);
    let whiteouts = Layer::new()
        .file("bin/.wh.ls", 0o644, b"")
        .dir("etc/", 0o755)
        .file("etc/.wh..wh..opq", 0o644, b"")
        .file("etc/motd", 0o644, b"whiteouts applied\n")
        .tar();
    let image = TestImage {
        layers: Vec::new(),
        config,
    }
    .layer(layer, TAR)
    .layer(whiteouts, GZIP);
    let layout = t.path().join("layout");
    common::write_layout(&layout, &[("with-whiteouts", &image)]);
    let source: ImageSource = format!("oci:{}:with-whiteouts", layout.display())
        .parse()
        .unwrap();
    let from_layout = store2.pull(&source, &NoProgress).unwrap();
    assert_eq!(
        from_layout.reference,
        "local:docker.io/library/layout:with-whiteouts"
    );
    let r = &from_layout.rootfs;
    assert!(!r.join("bin/ls").exists() && fs::symlink_metadata(r.join("bin/ls")).is_err());
    assert!(r.join("bin/echo").exists());
    let etc: Vec<_> = fs::read_dir(r.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(etc, ["motd"]);
    assert_busybox_runs(r);
    // The layer shared with the archive image was not copied twice.
    assert_eq!(
        from_layout.layers[0], from_archive.layers[0],
        "same uncompressed layer, same blob"
    );
    drop(reg);
}

fn assert_busybox_runs(rootfs: &Path) {
    let out = Command::new(rootfs.join("bin/busybox"))
        .args(["echo", "ok"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let out = Command::new(rootfs.join("bin/sh"))
        .args(["-c", "echo via-sh"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-sh\n");
}

/// The config and the single layer of a one-image `docker save` archive.
fn read_saved_image(archive: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut tar = tar::Archive::new(fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if entry.header().entry_type().is_symlink() {
            let target = entry
                .link_name()
                .unwrap()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            links.insert(path, target);
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config = files[manifest[0]["Config"].as_str().unwrap()].clone();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer_path = layers[0].as_str().unwrap();
    let layer = files.get(layer_path).cloned().unwrap_or_else(|| {
        let target = &links[layer_path];
        let dir = Path::new(layer_path).parent().unwrap();
        let resolved = dir.join(target);
        files[resolved.to_str().unwrap()].clone()
    });
    (config, layer)
}

// ----- anonymous bearer tokens -----

const SERVICE: &str = "agentctl-test-registry";
const ISSUER: &str = "agentctl-test-issuer";

fn base64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(table[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A token service in the style of Docker Hub's: anyone gets a signed
/// JWT granting `pull` on the repository asked for, except repositories
/// whose name contains "private", which get a token granting nothing.
struct TokenServer {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    fn start(key: std::path::PathBuf, cert_der: Vec<u8>) -> TokenServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                reqs.lock().unwrap().push(target.clone());
                let query: HashMap<String, String> = target
                    .split_once('?')
                    .map_or("", |(_, q)| q)
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                    .collect();
                let scope = query.get("scope").cloned().unwrap_or_default();
                let name = scope
                    .strip_prefix("repository:")
                    .and_then(|s| s.rsplit_once(':'))
                    .map_or("", |(n, _)| n);
                let access = if name.contains("private") || name.is_empty() {
                    json!([])
                } else {
                    json!([{"type": "repository", "name": name, "actions": ["pull"]}])
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header =
                    json!({"alg": "RS256", "typ": "JWT", "x5c": [base64(&cert_der, false)]});
                let claims = json!({"iss": ISSUER, "sub": "", "aud": query.get("service"),
                                    "exp": now + 300, "nbf": now - 60, "iat": now,
                                    "jti": format!("{now}-{}", reqs.lock().unwrap().len()),
                                    "access": access});
                let input = format!(
                    "{}.{}",
                    base64(&serde_json::to_vec(&header).unwrap(), true),
                    base64(&serde_json::to_vec(&claims).unwrap(), true)
                );
                let mut child = Command::new("openssl")
                    .args(["dgst", "-sha256", "-binary", "-sign"])
                    .arg(&key)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                let sig = child.wait_with_output().unwrap().stdout;
                let body = serde_json::to_vec(
                    &json!({"token": format!("{input}.{}", base64(&sig, true))}),
                )
                .unwrap();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
            }
        });
        TokenServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn openssl_available() -> Result<(), String> {
    match Command::new("openssl").arg("version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("openssl is missing (apt-get install -y openssl)".into()),
    }
}

#[test]
fn anonymous_bearer_tokens() {
    let test = "anonymous_bearer_tokens";
    if !common::require(test, Registry::available()) || !common::require(test, openssl_available())
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("key.pem");
    let cert = t.path().join("cert.pem");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=token-issuer",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(&cert)
        .output()
        .unwrap()
        .stdout;

    // Push to an open registry, then serve the same storage from one that
    // wants bearer tokens.
    let open = Registry::start();
    let image = small_image("token");
    open.push_image("agentctl/tok", "v1", &image);
    open.push_image("agentctl/private", "v1", &image);
    let tokens = TokenServer::start(key, der);
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        tokens.port,
        cert.display()
    );
    let guarded = Registry::start_with(Some(&open.data()), &auth);
    let host = guarded.host();

    let store = ImageCache::open(t.path().join("store")).unwrap();
    let img = store
        .pull(&registry(format!("{host}/agentctl/tok:v1")), &NoProgress)
        .unwrap_or_else(|e| panic!("{e}\nregistry log:\n{}", guarded.log()));
    assert_eq!(img.config.env, ["MARK=token"]);
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(!requests.is_empty(), "no token was requested");
    assert!(
        requests[0].contains("agentctl%2Ftok%3Apull") || requests[0].contains("agentctl/tok:pull"),
        "{requests:?}"
    );
    assert!(requests[0].contains(SERVICE), "{requests:?}");

    let err = store
        .pull(
            &registry(format!("{host}/agentctl/private:v1")),
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("registry {host} refused anonymous access")),
        "{text}"
    );
    assert!(text.contains("agentctl/private:v1"), "{text}");
    eprintln!("{text}");
}

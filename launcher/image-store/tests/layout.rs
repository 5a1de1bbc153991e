//! The store end to end with OCI layouts written by the tests (no docker,
//! no registry): pull, reuse, get/list/remove/prune, tampering, platform
//! selection, concurrent pulls.

mod common;

use std::fs;
use std::path::Path;

use common::{
    GZIP, Layer, OCI_INDEX, Recorder, TAR, TestImage, ZSTD, sha256, write_blob, write_layout,
};
use image_store::{ImageCache, ImageError, ImageSource, NoProgress};
use serde_json::json;

fn two_layer_image() -> TestImage {
    let lower = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/os-release", 0o644, b"ID=test\n")
        .file("etc/remove-me", 0o644, b"x")
        .dir("opt/app/", 0o755)
        .file("opt/app/old", 0o644, b"old")
        .tar();
    let upper = Layer::new()
        .file("etc/.wh.remove-me", 0o644, b"")
        .dir("opt/app/", 0o755)
        .file("opt/app/.wh..wh..opq", 0o644, b"")
        .file("opt/app/new", 0o755, b"new")
        .tar();
    TestImage::new(
        &["PATH=/usr/bin:/bin", "FOO=bar"],
        &["/bin/sh", "-c", "true"],
    )
    .layer(lower, GZIP)
    .layer(upper, ZSTD)
}

fn source(path: &Path, tag: Option<&str>) -> ImageSource {
    ImageSource::OciLayout {
        path: path.to_owned(),
        tag: tag.map(str::to_owned),
    }
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn pull_get_list_remove_prune() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("agent-base");
    let image = two_layer_image();
    write_layout(&layout, &[("v1", &image)]);
    let store = ImageCache::open(t.path().join("store")).unwrap();

    let rec = Recorder::default();
    let img = store.pull(&source(&layout, Some("v1")), &rec).unwrap();
    assert_eq!(img.reference, "local:docker.io/library/agent-base:v1");
    assert_eq!(img.config_digest, sha256(&image.config_bytes()));
    assert_eq!(
        img.manifest_digest.as_deref(),
        Some(sha256(&image.manifest_bytes()).as_str())
    );
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    assert_eq!(img.config.env, ["PATH=/usr/bin:/bin", "FOO=bar"]);
    assert_eq!(img.config.cmd, ["/bin/sh", "-c", "true"]);
    assert!(img.config.entrypoint.is_empty());
    assert_eq!(img.config.working_dir.as_deref(), Some("/work"));
    assert_eq!(img.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(img.config.labels["org.example"], "yes");
    assert_eq!(img.config.os, "linux");
    assert!(img.size > 0);
    assert_eq!(
        img.rootfs,
        store.root().join("rootfs").join(&img.config_digest[7..])
    );

    // The layers applied in order, whiteouts included.
    let r = &img.rootfs;
    assert_eq!(
        fs::read_to_string(r.join("etc/os-release")).unwrap(),
        "ID=test\n"
    );
    assert!(!r.join("etc/remove-me").exists());
    assert!(!r.join("opt/app/old").exists());
    assert_eq!(fs::read_to_string(r.join("opt/app/new")).unwrap(), "new");

    // Progress: both layers fetched (copied), then both unpacked.
    let events = rec.dump();
    assert_eq!(rec.count("phase fetching"), 1, "{events}");
    assert_eq!(rec.count("phase unpacking"), 1, "{events}");
    assert_eq!(rec.count("started"), 4, "{events}");
    assert_eq!(rec.count("done"), 4, "{events}");
    let stored: u64 = image.layers.iter().map(|(_, s, _)| s.len() as u64).sum();
    assert_eq!(rec.bytes(), 2 * stored, "bytes copied plus bytes unpacked");

    // A second pull reuses everything.
    let rec2 = Recorder::default();
    let again = store.pull(&source(&layout, Some("v1")), &rec2).unwrap();
    assert_eq!(again, img);
    assert_eq!(rec2.count("started"), 0, "{}", rec2.dump());
    assert!(
        rec2.dump().contains("rootfs already unpacked"),
        "{}",
        rec2.dump()
    );

    // get: by the name as pulled, short or long, by id and id prefix.
    for name in [
        "local:agent-base:v1",
        "local:docker.io/library/agent-base:v1",
        img.config_digest.as_str(),
        &img.config_digest[7..],
        &img.config_digest[7..19],
        &img.config_digest[..15],
    ] {
        assert_eq!(store.get(name).unwrap().as_ref(), Some(&img), "{name}");
    }
    assert_eq!(store.get("agent-base:v2").unwrap(), None);
    // Regression (issue 10, item 7): an import does not answer to the
    // registry's name, which would make a later `--image agent-base:v1`
    // run whatever a file said it was.
    for registry_name in ["agent-base:v1", "docker.io/library/agent-base:v1"] {
        assert_eq!(store.get(registry_name).unwrap(), None, "{registry_name}");
    }
    assert_eq!(store.get("ffffffffffff").unwrap(), None);
    assert_eq!(store.list().unwrap(), vec![img.clone()]);

    // A second tag of the same image shares blobs and rootfs.
    let img2 = store
        .pull(&source(&layout, Some("v1")), &NoProgress)
        .unwrap();
    assert_eq!(img2.rootfs, img.rootfs);
    write_layout(&layout, &[("v1", &image), ("latest", &image)]);
    let latest = store
        .pull(&source(&layout, Some("latest")), &NoProgress)
        .unwrap();
    assert_eq!(
        latest.reference,
        "local:docker.io/library/agent-base:latest"
    );
    assert_eq!(latest.rootfs, img.rootfs);
    assert_eq!(store.list().unwrap().len(), 2);

    // remove drops the tag only; prune then frees nothing while a tag
    // still uses the image.
    store.remove("local:agent-base:v1").unwrap();
    assert_eq!(store.get("local:agent-base:v1").unwrap(), None);
    let report = store.prune().unwrap();
    assert_eq!((report.blobs_removed, report.rootfs_removed), (0, 0));
    assert!(img.rootfs.is_dir());
    let err = store.remove("local:agent-base:v1").unwrap_err();
    assert!(matches!(err, ImageError::NotInStore { .. }), "{err}");
    assert!(err.to_string().contains("`list` shows"), "{err}");

    // Removing by id removes every tag; prune deletes it all.
    store.remove(&img.config_digest[7..19]).unwrap();
    assert!(store.list().unwrap().is_empty());
    let report = store.prune().unwrap();
    assert_eq!(report.blobs_removed, 4, "config, manifest, 2 layers");
    assert_eq!(report.rootfs_removed, 1);
    assert!(report.bytes_freed >= img.size, "{report:?} vs {}", img.size);
    assert!(!img.rootfs.exists());
    assert_eq!(count(&store.root().join("blobs/sha256")), 0);
    assert_eq!(count(&store.root().join("rootfs")), 0);
    assert_eq!(count(&store.root().join("tmp")), 0);
    assert_eq!(store.prune().unwrap(), Default::default());
}

#[test]
fn ambiguous_id_prefixes_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("many");
    // Find two images whose config digests share a first hex digit.
    let mut images = Vec::new();
    let mut first: Option<char> = None;
    for i in 0.. {
        let img = TestImage::new(&[&format!("N={i}")], &[])
            .layer(Layer::new().file("f", 0o644, b"x").tar(), TAR);
        let c = sha256(&img.config_bytes()).chars().nth(7).unwrap();
        match first {
            None => {
                first = Some(c);
                images.push(img);
            }
            Some(f) if f == c => {
                images.push(img);
                break;
            }
            _ => {}
        }
    }
    write_layout(&layout, &[("a", &images[0]), ("b", &images[1])]);
    let store = ImageCache::open(t.path().join("store")).unwrap();
    store
        .pull(&source(&layout, Some("a")), &NoProgress)
        .unwrap();
    store
        .pull(&source(&layout, Some("b")), &NoProgress)
        .unwrap();
    let prefix = first.unwrap().to_string();
    let err = store.get(&prefix).unwrap_err();
    assert!(matches!(err, ImageError::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains("give more digits"), "{err}");
    assert!(store.remove(&prefix).is_err());
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn choosing_an_image_in_a_layout() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("lay");
    let a = TestImage::new(&["A=1"], &[]).layer(Layer::new().file("a", 0o644, b"a").tar(), GZIP);
    let b = TestImage::new(&["B=1"], &[]).layer(Layer::new().file("b", 0o644, b"b").tar(), GZIP);
    write_layout(&layout, &[("one", &a), ("localhost:5000/team/b:2", &b)]);
    let store = ImageCache::open(t.path().join("store")).unwrap();

    let err = store.pull(&source(&layout, None), &NoProgress).unwrap_err();
    assert!(matches!(err, ImageError::InvalidSource { .. }), "{err}");
    assert!(err.to_string().contains("oci:PATH:TAG"), "{err}");
    assert!(
        err.to_string().contains("one, localhost:5000/team/b:2"),
        "{err}"
    );

    let err = store
        .pull(&source(&layout, Some("three")), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("'three'"), "{err}");

    let img = store
        .pull(
            &source(&layout, Some("localhost:5000/team/b:2")),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(img.reference, "local:localhost:5000/team/b:2");
    assert!(img.rootfs.join("b").exists());
    let parsed: ImageSource = format!("oci:{}:one", layout.display()).parse().unwrap();
    let img = store.pull(&parsed, &NoProgress).unwrap();
    assert_eq!(img.reference, "local:docker.io/library/lay:one");
    assert_eq!(img.config.env, ["A=1"]);

    // Not a layout at all.
    let err = store
        .pull(&source(t.path(), None), &NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");
}

#[test]
fn a_multi_platform_layout_yields_the_host_image() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("multi");
    let host = TestImage::new(&["ARCH=host"], &[])
        .layer(Layer::new().file("host", 0o644, b"h").tar(), GZIP);
    let mut other = TestImage::new(&["ARCH=other"], &[])
        .layer(Layer::new().file("other", 0o644, b"o").tar(), GZIP);
    other.config["architecture"] = json!("s390x");
    write_layout(&layout, &[]);
    let mut manifests = Vec::new();
    for (img, arch) in [(&other, "s390x"), (&host, common::host_arch())] {
        for blob in img.blobs() {
            write_blob(&layout, &blob);
        }
        let m = img.manifest_bytes();
        manifests.push(
            json!({"mediaType": common::OCI_MANIFEST, "digest": sha256(&m), "size": m.len(),
                              "platform": {"os": "linux", "architecture": arch}}),
        );
    }
    let inner = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .unwrap();
    write_blob(&layout, &inner);
    let index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": sha256(&inner), "size": inner.len(),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let store = ImageCache::open(t.path().join("store")).unwrap();
    let img = store.pull(&source(&layout, None), &NoProgress).unwrap();
    assert_eq!(img.config.env, ["ARCH=host"]);
    assert!(img.rootfs.join("host").exists());
    assert!(!img.rootfs.join("other").exists());
    assert_eq!(img.reference, "local:docker.io/library/multi:multi");
    // The index is kept too, so prune keeps it while the tag exists.
    store.prune().unwrap();
    assert!(
        store
            .root()
            .join("blobs/sha256")
            .join(&sha256(&inner)[7..])
            .exists()
    );
}

#[test]
fn tampered_layout_blobs_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("lay");
    let image = two_layer_image();
    write_layout(&layout, &[("v1", &image)]);
    // Swap the content of the first layer blob.
    let layer_digest = sha256(&image.layers[0].1);
    let path = layout.join("blobs/sha256").join(&layer_digest[7..]);
    fs::write(
        &path,
        common::gzip(&Layer::new().file("evil", 0o644, b"x").tar()),
    )
    .unwrap();

    let store = ImageCache::open(t.path().join("store")).unwrap();
    let err = store
        .pull(&source(&layout, Some("v1")), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&layer_digest) && text.contains("tampered"),
        "{text}"
    );
    assert!(
        !store
            .root()
            .join("blobs/sha256")
            .join(&layer_digest[7..])
            .exists()
    );
    assert_eq!(count(&store.root().join("rootfs")), 0);
    assert_eq!(count(&store.root().join("tmp")), 0);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn corrupted_store_blobs_are_detected_when_unpacking() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("lay");
    let image = two_layer_image();
    write_layout(&layout, &[("v1", &image)]);
    let store = ImageCache::open(t.path().join("store")).unwrap();
    let img = store
        .pull(&source(&layout, Some("v1")), &NoProgress)
        .unwrap();

    // Flip a byte of a stored layer and force a new unpack (the blob is
    // in the store, so it is not copied again).
    let blob = store.root().join("blobs/sha256").join(&img.layers[1][7..]);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    fs::rename(&img.rootfs, t.path().join("old-rootfs")).unwrap();

    let err = store
        .pull(&source(&layout, Some("v1")), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("stored layer"), "{err}");
    assert!(!blob.exists(), "the corrupted blob is deleted");
    assert_eq!(
        count(&store.root().join("rootfs")) + count(&store.root().join("tmp")),
        0,
        "the partial rootfs is cleaned up"
    );
    // The next pull fetches it again and succeeds.
    let img = store
        .pull(&source(&layout, Some("v1")), &NoProgress)
        .unwrap();
    assert_eq!(
        fs::read_to_string(img.rootfs.join("opt/app/new")).unwrap(),
        "new"
    );
}

#[test]
fn a_config_that_disagrees_with_the_layers_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("lay");
    let mut image = two_layer_image();
    // The config promises other uncompressed content for layer 2.
    image.config["rootfs"]["diff_ids"][1] = json!(sha256(b"something else"));
    write_layout(&layout, &[("v1", &image)]);
    let store = ImageCache::open(t.path().join("store")).unwrap();
    let err = store
        .pull(&source(&layout, Some("v1")), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("listed in the config"), "{err}");
    assert_eq!(count(&store.root().join("rootfs")), 0);

    let mut image = two_layer_image();
    image.config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .pop();
    write_layout(&layout, &[("v1", &image)]);
    let err = store
        .pull(&source(&layout, Some("v1")), &NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("lists 1 layers"), "{err}");
}

#[test]
fn concurrent_pulls_share_the_work() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("lay");
    let big = Layer::new().file("big", 0o644, &vec![1u8; 8 << 20]).tar();
    let image = two_layer_image().layer(big, GZIP);
    write_layout(&layout, &[("v1", &image)]);
    let root = t.path().join("store");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    // Each thread opens the store itself, as a separate
                    // process would: the locks are per open file.
                    let store = ImageCache::open(&root).unwrap();
                    store.pull(&source(&layout, Some("v1")), &NoProgress)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = results[0].as_ref().unwrap().clone();
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &first);
    }
    let store = ImageCache::open(&root).unwrap();
    assert_eq!(count(&root.join("rootfs")), 1);
    assert_eq!(count(&root.join("tmp")), 0);
    assert_eq!(count(&root.join("blobs/sha256")), 5);
    assert_eq!(
        fs::metadata(first.rootfs.join("big")).unwrap().len(),
        8 << 20
    );
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn default_root_follows_the_user() {
    let root = ImageCache::default_root();
    if rustix::process::geteuid().is_root() {
        assert_eq!(root, Path::new("/var/lib/agentctl/images"));
    } else {
        assert!(root.ends_with("agentctl/images"), "{}", root.display());
    }
}

/// A `docker save` archive written by hand: the legacy layout (`<id>/layer.tar`,
/// `<config-hex>.json`, repeated layers linked to the first copy) or the
/// newer one (`blobs/sha256/<hex>`).
fn docker_archive(images: &[(&TestImage, &[&str])], new_style: bool) -> Vec<u8> {
    fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut written: Vec<(Vec<u8>, String)> = Vec::new();
    let mut manifest = Vec::new();
    for (n, (image, tags)) in images.iter().enumerate() {
        let mut layer_paths: Vec<String> = Vec::new();
        for (i, (tar, _, _)) in image.layers.iter().enumerate() {
            let p = if new_style {
                format!("blobs/sha256/{}", &sha256(tar)[7..])
            } else {
                format!("layer{n}-{i}/layer.tar")
            };
            match written.iter().find(|(t, _)| t == tar) {
                Some((_, first)) if new_style => layer_paths.push(first.clone()),
                Some((_, first)) => {
                    let mut h = tar::Header::new_ustar();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &p, format!("../{first}")).unwrap();
                    layer_paths.push(p);
                }
                None => {
                    add(&mut b, &p, tar);
                    written.push((tar.clone(), p.clone()));
                    layer_paths.push(p);
                }
            }
        }
        let config = image.config_bytes();
        let hex = &sha256(&config)[7..];
        let config_path = if new_style {
            format!("blobs/sha256/{hex}")
        } else {
            format!("{hex}.json")
        };
        add(&mut b, &config_path, &config);
        manifest.push(json!({"Config": config_path, "RepoTags": tags, "Layers": layer_paths}));
    }
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.into_inner().unwrap()
}

#[test]
fn hand_made_docker_archives() {
    let t = tempfile::tempdir().unwrap();
    let l1 = Layer::new()
        .file("one", 0o644, b"1")
        .file("again", 0o644, b"first")
        .tar();
    let l2 = Layer::new()
        .file("two", 0o644, b"2")
        .file("again", 0o644, b"second")
        .tar();
    let image = TestImage::new(&["X=1"], &["/x"])
        .layer(l1.clone(), TAR)
        .layer(l2, TAR)
        .layer(l1.clone(), TAR);
    let store = ImageCache::open(t.path().join("store")).unwrap();
    let archive = |name: &str, bytes: Vec<u8>, tag: Option<&str>| {
        let p = t.path().join(name);
        fs::write(&p, bytes).unwrap();
        ImageSource::DockerArchive {
            path: p,
            tag: tag.map(str::to_owned),
        }
    };

    let legacy = docker_archive(&[(&image, &["hand/made:1"])], false);
    let img = store
        .pull(&archive("legacy.tar", legacy.clone(), None), &NoProgress)
        .unwrap();
    assert_eq!(img.reference, "local:docker.io/hand/made:1");
    assert_eq!(img.config_digest, sha256(&image.config_bytes()));
    assert_eq!(img.manifest_digest, None);
    assert_eq!(img.layers.len(), 3);
    assert_eq!(
        img.layers[0], img.layers[2],
        "the linked layer is the same blob"
    );
    assert_eq!(
        fs::read_to_string(img.rootfs.join("again")).unwrap(),
        "first"
    );
    assert!(img.rootfs.join("two").exists());

    // Compressed with gzip, and the newer blobs/ layout: the same image.
    let gz = archive("legacy.tar.gz", common::gzip(&legacy), None);
    let fresh = ImageCache::open(t.path().join("store2")).unwrap();
    assert_eq!(
        fresh.pull(&gz, &NoProgress).unwrap().config_digest,
        img.config_digest
    );
    let new_style = docker_archive(&[(&image, &[])], true);
    let fresh = ImageCache::open(t.path().join("store3")).unwrap();
    let untagged = fresh
        .pull(&archive("new.tar", new_style, None), &NoProgress)
        .unwrap();
    assert_eq!(untagged.config_digest, img.config_digest);
    assert_eq!(
        untagged.reference, img.config_digest,
        "an untagged image is named by its id"
    );
    assert_eq!(
        fresh.get(&img.config_digest[7..17]).unwrap().unwrap(),
        untagged
    );

    // Several images: one must be named.
    let other = TestImage::new(&["Y=1"], &[]).layer(l1, TAR);
    let both = docker_archive(&[(&image, &["hand/made:1"]), (&other, &["other:2"])], false);
    let err = store
        .pull(&archive("both.tar", both.clone(), None), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::InvalidSource { .. }), "{err}");
    assert!(err.to_string().contains("hand/made:1, other:2"), "{err}");
    let img2 = store
        .pull(
            &archive("both.tar", both.clone(), Some("docker.io/library/other:2")),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(img2.config.env, ["Y=1"]);
    assert_eq!(img2.reference, "local:docker.io/library/other:2");
    let err = store
        .pull(&archive("both.tar", both, Some("third:3")), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");

    // A blob whose content does not match the digest in its name.
    let honest = Layer::new().file("one", 0o644, b"1").tar();
    let evil = Layer::new().file("evil", 0o644, b"x").tar();
    let tampered = TestImage::new(&["X=1"], &["/x"]).layer(honest.clone(), TAR);
    let bytes = docker_archive(&[(&tampered, &[])], true);
    let honest_path = format!("blobs/sha256/{}", &sha256(&honest)[7..]);
    let mut out = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(&bytes[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if path == honest_path {
            data = evil.clone();
        }
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        out.append_data(&mut h, &path, &data[..]).unwrap();
    }
    let fresh = ImageCache::open(t.path().join("store4")).unwrap();
    let err = fresh
        .pull(
            &archive("tampered.tar", out.into_inner().unwrap(), None),
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&sha256(&honest)), "{err}");
    assert_eq!(
        fs::read_dir(fresh.root().join("rootfs")).unwrap().count(),
        0
    );
}

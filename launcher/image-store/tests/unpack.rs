//! Layer unpacking on real files: whiteouts, metadata, compression, and
//! the attacks a hostile layer can try (path escapes through `..`, links
//! from earlier entries or layers, hard links, whiteouts through links).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Layer, MTIME, gzip, sha256, zstd};
use image_store::{ImageError, Unpacker, unpack_layer};

/// A rootfs next to an `outside` directory the layers must never touch.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), "original").unwrap();
        Sandbox {
            _dir: dir,
            root,
            outside,
        }
    }

    fn outside_str(&self) -> String {
        self.outside.display().to_string()
    }

    /// Applies layers in order; returns the first error.
    fn apply(&self, layers: Vec<Vec<u8>>) -> Result<(), ImageError> {
        let mut u = Unpacker::new(&self.root)?;
        for (i, l) in layers.iter().enumerate() {
            u.apply_layer(&l[..], &format!("layer{i}"))?;
        }
        u.finish()
    }

    /// The outside directory holds exactly the victim, unchanged.
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["victim"],
            "something was written outside the rootfs"
        );
        assert_eq!(
            fs::read_to_string(self.outside.join("victim")).unwrap(),
            "original"
        );
        assert_eq!(
            fs::metadata(self.outside.join("victim")).unwrap().nlink(),
            1
        );
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn assert_refused(result: Result<(), ImageError>, needle: &str) {
    let err = result.expect_err("the layer must be refused");
    assert!(
        matches!(err, ImageError::UnsafeLayerEntry { .. }),
        "wrong error kind: {err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(needle), "message {text:?} lacks {needle:?}");
    assert!(text.contains("do not run it"), "{text}");
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

#[test]
fn applies_files_dirs_links_and_metadata() {
    let s = Sandbox::new();
    let layer = Layer::new()
        .dir("./", 0o755)
        .dir("etc/", 0o750)
        .file("etc/conf", 0o640, b"hello")
        .file("usr/bin/tool", 0o4755, b"#!/bin/sh\n") // parent dirs implied
        .file("usr/bin/sgid", 0o2711, b"x")
        .symlink("etc/link", "/etc/conf")
        .hardlink("etc/hard", "etc/conf")
        .fifo("run/fifo")
        .dir("ro/", 0o555)
        .file("ro/inside", 0o444, b"ro")
        .tar();
    let stats = unpack_layer(&layer[..], &s.root).unwrap();
    assert_eq!(stats.diff_id, sha256(&layer));
    assert_eq!(stats.tar_bytes, layer.len() as u64);
    assert_eq!(stats.files, 4);
    assert!(stats.skipped.is_empty());

    let meta = |p: &str| fs::symlink_metadata(s.p(p)).unwrap();
    assert_eq!(fs::read_to_string(s.p("etc/conf")).unwrap(), "hello");
    assert_eq!(meta("etc/conf").permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta("etc/conf").mtime(), MTIME as i64);
    assert_eq!(meta("etc").permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        meta("etc").mtime(),
        MTIME as i64,
        "directory times are set last"
    );
    assert_eq!(
        meta("usr/bin/tool").permissions().mode() & 0o7777,
        0o755,
        "setuid cleared"
    );
    assert_eq!(
        meta("usr/bin/sgid").permissions().mode() & 0o7777,
        0o711,
        "setgid cleared"
    );
    assert_eq!(
        meta("usr").permissions().mode() & 0o777,
        0o755,
        "implied dirs are 0755"
    );
    assert_eq!(
        fs::read_link(s.p("etc/link")).unwrap(),
        Path::new("/etc/conf")
    );
    assert_eq!(meta("etc/link").mtime(), MTIME as i64);
    assert_eq!(meta("etc/hard").ino(), meta("etc/conf").ino());
    assert!(meta("run/fifo").file_type().is_fifo());
    assert_eq!(meta("ro").permissions().mode() & 0o7777, 0o555);
    assert_eq!(fs::read_to_string(s.p("ro/inside")).unwrap(), "ro");
    if rustix::process::geteuid().is_root() {
        assert_eq!(meta("etc/conf").uid(), 0);
    }
    s.assert_outside_untouched();
}

#[test]
fn pax_records_and_long_names() {
    let s = Sandbox::new();
    let long = format!("{}/{}", "d".repeat(150), "f".repeat(120));
    let long_target = format!("{}/{}", "d".repeat(150), "t".repeat(120));
    let layer = Layer::new()
        .pax(&[
            ("path", &long),
            ("mtime", "1234567890.75"),
            ("uid", "3000000"),
            ("gid", "3000001"),
        ])
        .file("short-name-ignored", 0o640, b"long")
        .pax(&[("path", "link"), ("linkpath", &long_target)])
        .symlink("ignored", "ignored")
        .tar();
    let stats = unpack_layer(&layer[..], &s.root).unwrap();
    assert_eq!(stats.entries, 2, "PAX headers are not entries of their own");
    let meta = fs::symlink_metadata(s.p(&long)).unwrap();
    assert_eq!(fs::read_to_string(s.p(&long)).unwrap(), "long");
    assert_eq!(meta.mtime(), 1_234_567_890);
    if rustix::process::geteuid().is_root() {
        assert_eq!((meta.uid(), meta.gid()), (3_000_000, 3_000_001));
    }
    assert!(!exists(&s.p("short-name-ignored")));
    assert_eq!(fs::read_link(s.p("link")).unwrap(), Path::new(&long_target));
}

#[test]
fn gzip_and_zstd_layers_unpack_the_same() {
    let tar = Layer::new()
        .dir("a/", 0o755)
        .file("a/big", 0o644, &vec![7u8; 3 << 20])
        .file("a/small", 0o600, b"s")
        .tar();
    for (name, bytes) in [
        ("plain", tar.clone()),
        ("gzip", gzip(&tar)),
        ("zstd", zstd(&tar)),
    ] {
        let s = Sandbox::new();
        let stats = unpack_layer(&bytes[..], &s.root).unwrap();
        assert_eq!(
            stats.diff_id,
            sha256(&tar),
            "{name}: the diff id is the uncompressed tar's"
        );
        assert_eq!(fs::read(s.p("a/big")).unwrap().len(), 3 << 20, "{name}");
        assert_eq!(fs::read(s.p("a/small")).unwrap(), b"s", "{name}");
    }
}

#[test]
fn whiteouts_delete_lower_layer_files() {
    let s = Sandbox::new();
    let lower = Layer::new()
        .file("a/x", 0o644, b"x")
        .file("a/y", 0o644, b"y")
        .file("b/z", 0o644, b"z")
        .file("b/deep/er", 0o644, b"z")
        .file("keep", 0o644, b"k")
        .tar();
    let upper = Layer::new()
        .file("a/.wh.x", 0o644, b"")
        .file(".wh.b", 0o644, b"")
        .file(".wh.not-there", 0o644, b"")
        .file("c/.wh.missing-parent", 0o644, b"")
        .tar();
    s.apply(vec![lower, upper]).unwrap();
    assert!(!exists(&s.p("a/x")));
    assert!(exists(&s.p("a/y")));
    assert!(
        !exists(&s.p("b")),
        "a whiteout of a directory removes it whole"
    );
    assert!(exists(&s.p("keep")));
    assert!(
        !exists(&s.p("c")),
        "a whiteout does not create its directory"
    );
    assert!(!exists(&s.p("a/.wh.x")), "whiteout files are not written");
}

#[test]
fn opaque_whiteouts_empty_a_directory_of_lower_content() {
    for opaque_first in [true, false] {
        let s = Sandbox::new();
        let lower = Layer::new()
            .file("d/old", 0o644, b"o")
            .file("d/sub/old2", 0o644, b"o")
            .file("d/sub/kept-name", 0o644, b"lower")
            .file("other/stay", 0o644, b"s")
            .tar();
        let mut upper = Layer::new().dir("d/", 0o755);
        if opaque_first {
            upper = upper.file("d/.wh..wh..opq", 0o644, b"");
        }
        upper = upper
            .file("d/new", 0o644, b"n")
            .file("d/sub/kept-name", 0o644, b"upper");
        if !opaque_first {
            // Entries before the marker belong to this layer and stay.
            upper = upper.file("d/.wh..wh..opq", 0o644, b"");
        }
        s.apply(vec![lower, upper.tar()]).unwrap();
        let mut names: Vec<String> = fs::read_dir(s.p("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["new", "sub"], "opaque first: {opaque_first}");
        let sub: Vec<_> = fs::read_dir(s.p("d/sub")).unwrap().collect();
        assert_eq!(sub.len(), 1, "opaque first: {opaque_first}");
        assert_eq!(fs::read_to_string(s.p("d/sub/kept-name")).unwrap(), "upper");
        assert!(exists(&s.p("other/stay")));
    }
}

#[test]
fn a_whiteout_does_not_delete_what_its_own_layer_added() {
    let s = Sandbox::new();
    let layer = Layer::new()
        .file("f", 0o644, b"new")
        .file(".wh.f", 0o644, b"")
        .tar();
    s.apply(vec![layer]).unwrap();
    assert_eq!(fs::read_to_string(s.p("f")).unwrap(), "new");
}

#[test]
fn later_entries_replace_earlier_ones_of_another_type() {
    let s = Sandbox::new();
    let lower = Layer::new()
        .file("was-file", 0o644, b"f")
        .file("was-dir/inner", 0o644, b"i")
        .symlink("was-link", "target")
        .tar();
    let upper = Layer::new()
        .dir("was-file/", 0o755)
        .file("was-dir", 0o644, b"now a file")
        .file("was-link", 0o644, b"now a file too")
        .tar();
    s.apply(vec![lower, upper]).unwrap();
    assert!(fs::metadata(s.p("was-file")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(s.p("was-dir")).unwrap(), "now a file");
    assert!(fs::symlink_metadata(s.p("was-link")).unwrap().is_file());
}

#[test]
fn device_nodes_are_skipped_and_reported() {
    let s = Sandbox::new();
    let layer = Layer::new()
        .char_device("dev/mem")
        .file("dev/ok", 0o644, b"ok")
        .tar();
    let stats = unpack_layer(&layer[..], &s.root).unwrap();
    assert!(!exists(&s.p("dev/mem")));
    assert!(exists(&s.p("dev/ok")));
    assert_eq!(stats.skipped.len(), 1);
    assert_eq!(stats.skipped[0].path, "dev/mem");
    assert!(
        stats.skipped[0].reason.contains("device"),
        "{:?}",
        stats.skipped
    );
}

// ----- attacks -----

#[test]
fn dot_dot_paths_are_refused() {
    for path in [
        "../outside/pwned",
        "a/../../outside/pwned",
        "./../outside/victim",
    ] {
        let s = Sandbox::new();
        let layer = Layer::new().file(path, 0o644, b"pwned").tar();
        assert_refused(s.apply(vec![layer]), "'..'");
        s.assert_outside_untouched();
    }
}

#[test]
fn absolute_paths_stay_inside_the_rootfs() {
    let s = Sandbox::new();
    let abs = format!("{}/victim", s.outside_str());
    let layer = Layer::new().file(&abs, 0o644, b"pwned").tar();
    s.apply(vec![layer]).unwrap();
    s.assert_outside_untouched();
    let inside = s.root.join(abs.trim_start_matches('/'));
    assert_eq!(fs::read_to_string(inside).unwrap(), "pwned");
}

#[test]
fn a_link_from_an_earlier_layer_is_never_followed() {
    let s = Sandbox::new();
    let lower = Layer::new().symlink("evil", &s.outside_str()).tar();
    let upper = Layer::new().file("evil/pwned", 0o644, b"pwned").tar();
    assert_refused(s.apply(vec![lower, upper]), "symbolic link 'evil'");
    s.assert_outside_untouched();
}

#[test]
fn a_link_from_an_earlier_entry_of_the_same_layer_is_never_followed() {
    let s = Sandbox::new();
    let layer = Layer::new()
        .symlink("evil", &s.outside_str())
        .file("evil/victim", 0o644, b"pwned")
        .tar();
    assert_refused(s.apply(vec![layer]), "symbolic link 'evil'");
    s.assert_outside_untouched();
}

#[test]
fn relative_links_and_link_chains_are_never_followed() {
    let s = Sandbox::new();
    let layer = Layer::new()
        .dir("a/", 0o755)
        .symlink("a/up", "../../outside")
        .file("a/up/pwned", 0o644, b"pwned")
        .tar();
    assert_refused(s.apply(vec![layer]), "symbolic link 'a/up'");
    s.assert_outside_untouched();

    let s = Sandbox::new();
    let layer = Layer::new()
        .symlink("hop2", &s.outside_str())
        .symlink("hop1", "hop2")
        .dir("hop1/", 0o755) // replaces the link with a real directory
        .file("hop1/fine", 0o644, b"inside")
        .file("hop2/pwned", 0o644, b"pwned")
        .tar();
    assert_refused(s.apply(vec![layer]), "symbolic link 'hop2'");
    s.assert_outside_untouched();
    assert_eq!(fs::read_to_string(s.p("hop1/fine")).unwrap(), "inside");
}

#[test]
fn a_link_in_the_last_component_is_replaced_not_written_through() {
    let s = Sandbox::new();
    let victim = format!("{}/victim", s.outside_str());
    let lower = Layer::new()
        .symlink("file-link", &victim)
        .symlink("dir-link", &s.outside_str())
        .tar();
    let upper = Layer::new()
        .file("file-link", 0o644, b"pwned")
        .dir("dir-link/", 0o755)
        .file("dir-link/new", 0o644, b"inside")
        .hardlink("hard-to-link", "dir-link/new")
        .tar();
    s.apply(vec![lower, upper]).unwrap();
    s.assert_outside_untouched();
    assert_eq!(fs::read_to_string(s.p("file-link")).unwrap(), "pwned");
    assert!(fs::symlink_metadata(s.p("dir-link")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(s.p("dir-link/new")).unwrap(), "inside");
}

#[test]
fn hard_links_cannot_reach_outside_the_rootfs() {
    // Through `..`.
    let s = Sandbox::new();
    let layer = Layer::new().hardlink("grab", "../outside/victim").tar();
    assert_refused(s.apply(vec![layer]), "hard link");
    s.assert_outside_untouched();

    // Through a link made by the same layer.
    let s = Sandbox::new();
    let layer = Layer::new()
        .symlink("evil", &s.outside_str())
        .hardlink("grab", "evil/victim")
        .tar();
    assert_refused(s.apply(vec![layer]), "symbolic link 'evil'");
    s.assert_outside_untouched();

    // An absolute target names a path in the rootfs, which does not exist.
    let s = Sandbox::new();
    let abs = format!("{}/victim", s.outside_str());
    let layer = Layer::new().hardlink("grab", &abs).tar();
    assert_refused(s.apply(vec![layer]), "does not exist");
    s.assert_outside_untouched();

    // A hard link to a symlink links the symlink, not what it points to.
    let s = Sandbox::new();
    let layer = Layer::new()
        .symlink("evil", &abs)
        .hardlink("grab", "evil")
        .tar();
    s.apply(vec![layer]).unwrap();
    s.assert_outside_untouched();
    assert!(
        fs::symlink_metadata(s.p("grab"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn whiteouts_cannot_delete_through_links() {
    let s = Sandbox::new();
    let lower = Layer::new().symlink("evil", &s.outside_str()).tar();
    let upper = Layer::new().file("evil/.wh.victim", 0o644, b"").tar();
    assert_refused(
        s.apply(vec![lower.clone(), upper]),
        "whiteout through the symbolic link 'evil'",
    );
    s.assert_outside_untouched();

    let s = Sandbox::new();
    let lower = Layer::new().symlink("evil", &s.outside_str()).tar();
    let upper = Layer::new().file("evil/.wh..wh..opq", 0o644, b"").tar();
    assert_refused(s.apply(vec![lower, upper]), "symbolic link 'evil'");
    s.assert_outside_untouched();

    // A whiteout of the link itself removes the link only.
    let s = Sandbox::new();
    let lower = Layer::new().symlink("evil", &s.outside_str()).tar();
    let upper = Layer::new().file(".wh.evil", 0o644, b"").tar();
    s.apply(vec![lower, upper]).unwrap();
    assert!(!exists(&s.p("evil")));
    s.assert_outside_untouched();

    let s = Sandbox::new();
    let layer = Layer::new().file("a/.wh...", 0o644, b"").tar();
    assert_refused(s.apply(vec![layer]), "whiteout");
}

#[test]
fn a_file_where_a_directory_is_needed_is_refused() {
    let s = Sandbox::new();
    let layer = Layer::new()
        .file("f", 0o644, b"f")
        .file("f/child", 0o644, b"c")
        .tar();
    assert_refused(s.apply(vec![layer]), "not a directory");
}

#[test]
fn garbage_is_not_a_layer() {
    let s = Sandbox::new();
    let err = unpack_layer(&b"BZh91AY&SY"[..], &s.root).unwrap_err();
    assert!(err.to_string().contains("bzip2"), "{err}");
    let mut truncated = gzip(&Layer::new().file("a", 0o644, &[1u8; 100_000]).tar());
    truncated.truncate(truncated.len() / 2);
    let err = unpack_layer(&truncated[..], &s.root).unwrap_err();
    assert!(matches!(err, ImageError::InvalidImage { .. }), "{err:?}");
}

/// Runs the unpacker as an unprivileged user (as agentctl does rootless):
/// read-only directories in a lower layer must not stop the next layer,
/// ownership is not applied, and the tree can be removed again.
#[test]
fn unprivileged_unpack_handles_read_only_directories() {
    const CHILD: &str = "IMAGE_STORE_UNPRIVILEGED_DIR";
    if let Some(dir) = std::env::var_os(CHILD) {
        return unprivileged_body(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    if !rustix::process::geteuid().is_root() {
        return unprivileged_body(dir.path());
    }
    // As root, run this test again in a child as nobody.
    let nobody = 65534;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    // This test binary, or a copy in the (world-readable) temp dir when
    // the checkout it was built in is closed to other users.
    let copy = dir.path().join("unpack-test");
    fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    use std::os::unix::process::CommandExt;
    let mut out = None;
    let mut errors = Vec::new();
    for exe in [std::env::current_exe().unwrap(), copy] {
        match std::process::Command::new(&exe)
            .args([
                "--exact",
                "unprivileged_unpack_handles_read_only_directories",
                "--nocapture",
            ])
            .env(CHILD, dir.path())
            .uid(nobody)
            .gid(nobody)
            .output()
        {
            Ok(o) => {
                out = Some(o);
                break;
            }
            Err(e) => errors.push(format!("{}: {e}", exe.display())),
        }
    }
    let Some(out) = out else {
        common::require(
            "unprivileged_unpack_handles_read_only_directories",
            Err(format!("cannot run this test as uid {nobody}: {errors:?}")),
        );
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
}

fn unprivileged_body(base: &Path) {
    assert!(!rustix::process::geteuid().is_root());
    let root = base.join("rootfs");
    fs::create_dir(&root).unwrap();
    let lower = Layer::new()
        .dir("ro/", 0o555)
        .file("ro/a", 0o444, b"a")
        .dir("ro/locked/", 0o000)
        .file("ro/locked/secret", 0o000, b"s")
        .tar();
    let upper = Layer::new()
        .file("ro/b", 0o644, b"b")
        .file("ro/.wh.a", 0o644, b"")
        .file("ro/locked/more", 0o600, b"m")
        .tar();
    let mut u = Unpacker::new(&root).unwrap();
    u.apply_layer(&lower[..], "lower").unwrap();
    u.apply_layer(&upper[..], "upper").unwrap();
    u.finish().unwrap();
    let mode = |p: &str| {
        fs::symlink_metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("ro/locked"), 0o000);
    assert!(!root.join("ro/a").exists());
    assert_eq!(fs::read_to_string(root.join("ro/b")).unwrap(), "b");
    let me = rustix::process::geteuid().as_raw();
    assert_eq!(fs::symlink_metadata(root.join("ro/b")).unwrap().uid(), me);

    // The store can delete what it unpacked (prune), read-only or not.
    remove_tree(&root);

    // A whole pull whose image makes its root directory read-only: the
    // unpacked tree is still moved into place, and pruned again.
    let image = common::TestImage::new(&[], &[])
        .layer(
            Layer::new()
                .dir("./", 0o555)
                .dir("ro/", 0o500)
                .file("ro/f", 0o400, b"f")
                .tar(),
            common::GZIP,
        )
        .layer(Layer::new().file("ro/g", 0o400, b"g").tar(), common::TAR);
    let layout = base.join("layout");
    common::write_layout(&layout, &[("v1", &image)]);
    let store = image_store::ImageCache::open(base.join("store")).unwrap();
    let source = image_store::ImageSource::OciLayout {
        path: layout,
        tag: Some("v1".into()),
    };
    let img = store.pull(&source, &image_store::NoProgress).unwrap();
    assert_eq!(
        fs::metadata(&img.rootfs).unwrap().permissions().mode() & 0o7777,
        0o555
    );
    assert_eq!(fs::read(img.rootfs.join("ro/g")).unwrap(), b"g");
    store.remove("local:layout:v1").unwrap();
    let report = store.prune().unwrap();
    assert_eq!(report.rootfs_removed, 1);
    assert!(!img.rootfs.exists());
}

/// Removes a tree the way the store's prune does (it makes directories
/// writable on the way down); std's remove_dir_all would fail on `ro/`.
fn remove_tree(path: &Path) {
    // Exercised through a store: put the tree where prune looks.
    let store_root = path.parent().unwrap().join("prune-store");
    let store = image_store::ImageCache::open(&store_root).unwrap();
    let target = store_root.join("tmp/leftover");
    fs::rename(path, &target).unwrap();
    let report = store.prune().unwrap();
    assert!(report.bytes_freed > 0);
    assert!(!target.exists());
}

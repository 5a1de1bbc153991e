//! The parallel scanner on its own (`sandbox::scan::scan`): a generated
//! tree of about 5,000 files with secrets planted in it. This checks that
//! the parallel walk visits everything exactly once, not how fast it is.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use common::*;
use policy::secrets::SecretRules;
use sandbox::scan::{RootKind, ScanInput, ScanOutput, ScanRoot, scan};
use sandbox::spec::{MaskKind, MaskReason, SymlinkAlias};

use MaskKind::{Dir, File};

const CONTAINER: &str = "/sandbox/ws";

struct Tree {
    fx: Fx,
    /// Keeps the planted socket bound while scanning.
    _socket: UnixListener,
    expected: BTreeMap<PathBuf, (MaskKind, MaskReason)>,
    aliases: Vec<SymlinkAlias>,
    files: u64,
    dirs: u64,
}

/// Counts regular files and directories (including `dir`) without
/// following symlinks.
fn count(dir: &Path) -> (u64, u64) {
    let (mut files, mut dirs) = (0, 1);
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            let (f, d) = count(&e.path());
            files += f;
            dirs += d;
        } else if ft.is_file() {
            files += 1;
        }
    }
    (files, dirs)
}

fn build() -> Tree {
    let fx = Fx::new();
    let ws = &fx.ws;
    // 20 x 10 directories of 25 files: 5,000 ordinary files.
    for d in 0..20 {
        for s in 0..10 {
            let dir = ws.join(format!("d{d:02}/s{s}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..25 {
                fs::write(dir.join(format!("f{f:03}.txt")), format!("{d} {s} {f}\n")).unwrap();
            }
        }
    }

    let c = |rel: &str| PathBuf::from(CONTAINER).join(rel);
    let mut expected = BTreeMap::new();
    let mut plant = |rel: &str, kind: MaskKind, reason: MaskReason| {
        expected.insert(c(rel), (kind, reason));
    };

    // Secrets by name, at several depths.
    let env = fx.write(ws.join("d03/s4/.env"), "A=1\n");
    plant("d03/s4/.env", File, dotenv());
    fx.write(ws.join("d07/.env.local"), "B=2\n");
    plant("d07/.env.local", File, dotenv());
    fx.write(ws.join("d04/s4/a/b/c/d/e/f/g/h/.env.production"), "C=3\n");
    plant("d04/s4/a/b/c/d/e/f/g/h/.env.production", File, dotenv());
    fx.write(ws.join("d11/s9/id_rsa"), "KEY\n");
    plant("d11/s9/id_rsa", File, builtin("SSH private key", "id_rsa*"));
    fx.write(ws.join("d15/s0/tls.key"), "KEY\n");
    plant("d15/s0/tls.key", File, builtin("private key", "*.key"));
    fx.write(ws.join("d19/s5/prod.tfvars"), "x = 1\n");
    plant(
        "d19/s5/prod.tfvars",
        File,
        builtin("Terraform variables", "*.tfvars"),
    );
    // Not secrets.
    fx.files(
        ws,
        &["d11/s9/id_rsa.pub", "d00/.env.example", "d08/s8/key.txt"],
    );

    // A directory masked by a profile glob; its contents need no masks.
    fx.files(
        ws,
        &[
            "d05/s2/private/one",
            "d05/s2/private/two/three",
            "d05/s2/private/.env",
        ],
    );
    plant("d05/s2/private", Dir, profile_rule("private/"));

    // Hard links: to a secret in the tree, and to a file in a denied tree
    // that is not mounted.
    fs::hard_link(&env, ws.join("d09/s3/copy.txt")).unwrap();
    plant("d09/s3/copy.txt", File, hard_link_of(&env));
    let key = fx.write(fx.home.join(".ssh/id_ed25519"), "KEY\n");
    fs::hard_link(&key, ws.join("d12/s6/k.txt")).unwrap();
    plant("d12/s6/k.txt", File, hard_link_of(&key));
    // A hard link between two ordinary files is nothing.
    fs::hard_link(ws.join("d01/s1/f000.txt"), ws.join("d01/s1/same.txt")).unwrap();

    // A socket.
    let socket = UnixListener::bind(ws.join("d17/s1/app.sock")).unwrap();
    plant("d17/s1/app.sock", File, MaskReason::Socket);

    // A symlink to a secret, and one to an ordinary file.
    symlink("../d03/s4/.env", ws.join("d02/link")).unwrap();
    symlink("s0/f000.txt", ws.join("d02/plain")).unwrap();
    let aliases = vec![SymlinkAlias {
        link: c("d02/link"),
        target: env.clone(),
        target_state: "masked".into(),
    }];

    let (wf, wd) = count(ws);
    let (hf, hd) = count(&fx.home.join(".ssh"));
    assert!(wf > 5_000);
    Tree {
        _socket: socket,
        expected,
        aliases,
        files: wf + hf,
        dirs: wd + hd,
        fx,
    }
}

fn run(tree: &Tree, threads: usize) -> ScanOutput {
    let rules = SecretRules::new(&["private/".to_string()], &[]).unwrap();
    scan(&ScanInput {
        roots: vec![
            ScanRoot {
                host: tree.fx.ws.clone(),
                container: CONTAINER.into(),
                kind: RootKind::Content { name_rules: true },
            },
            ScanRoot {
                host: tree.fx.home.join(".ssh"),
                container: tree.fx.home.join(".ssh"),
                kind: RootKind::DeniedInodes,
            },
        ],
        rules: &rules,
        home: &tree.fx.home,
        granted: &[],
        threads,
    })
}

fn check(tree: &Tree, out: &ScanOutput, threads: usize) {
    let mut actual = Masks::new();
    for m in &out.masked {
        let old = actual.insert(m.path.clone(), (m.kind, m.reason.clone()));
        assert!(
            old.is_none(),
            "threads={threads}: {} twice",
            m.path.display()
        );
    }
    assert_masks(&actual, &tree.expected);
    assert_eq!(out.aliases, tree.aliases, "threads={threads}");
    assert_eq!(out.stats.files, tree.files, "threads={threads}: files");
    assert_eq!(out.stats.dirs, tree.dirs, "threads={threads}: dirs");
    assert_eq!(out.stats.roots, 2);
}

#[test]
fn parallel_walk_finds_exactly_the_planted_secrets() {
    let tree = build();
    // Several runs with two threads, so that different interleavings of the
    // work sharing are exercised.
    for _ in 0..5 {
        check(&tree, &run(&tree, 2), 2);
    }
}

#[test]
fn every_thread_count_gives_the_same_answer() {
    let tree = build();
    for threads in [0, 1, 3, 8, 32] {
        check(&tree, &run(&tree, threads), threads);
    }
}

#[test]
fn missing_roots_and_file_roots() {
    let fx = Fx::new();
    let netrc = fx.write(fx.home.join(".netrc"), "machine x\n");
    let single = fx.write(fx.root.join("single.env"), "x\n");
    fs::hard_link(&netrc, fx.ws.join("n.txt")).unwrap();
    let rules = SecretRules::new(&[], &[]).unwrap();
    let out = scan(&ScanInput {
        roots: vec![
            ScanRoot {
                host: fx.ws.clone(),
                container: "/w".into(),
                kind: RootKind::Content { name_rules: true },
            },
            ScanRoot {
                host: fx.root.join("does-not-exist"),
                container: "/gone".into(),
                kind: RootKind::Content { name_rules: true },
            },
            // A single-file mount is not classified by its own name.
            ScanRoot {
                host: single,
                container: "/single.env".into(),
                kind: RootKind::Content { name_rules: true },
            },
            // A denied single file: its hard links are secrets.
            ScanRoot {
                host: netrc.clone(),
                container: netrc.clone(),
                kind: RootKind::DeniedInodes,
            },
        ],
        rules: &rules,
        home: &fx.home,
        granted: &[],
        threads: 2,
    });
    let paths: Vec<(&Path, &MaskReason)> = out
        .masked
        .iter()
        .map(|m| (m.path.as_path(), &m.reason))
        .collect();
    assert_eq!(paths, [(Path::new("/w/n.txt"), &hard_link_of(&netrc))]);
    assert_eq!(out.stats.roots, 4);
    assert_eq!(out.stats.files, 3);
}

//! What the planner masks inside the workspace and other mounts: name
//! rules, hard links, symlinks and sockets, on a real temporary tree.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use common::*;
use sandbox::spec::{MaskKind, MaskReason, SymlinkAlias};

use MaskKind::{Dir, File};

#[test]
fn dotenv_files_are_masked_at_every_depth_but_examples_are_not() {
    let fx = Fx::new();
    fx.files(
        &fx.ws,
        &[
            ".env",
            ".envrc",
            "app/.env.local",
            "a/b/c/.env.production",
            // Templates that hold no values.
            ".env.example",
            "app/.env.sample",
            "a/b/.env.template",
            "a/b/c/.env.dist",
            // Not dotenv files at all.
            "env",
            "app/env.rs",
            "README.env.md",
        ],
    );
    let spec = fx.plan(generic(), &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            (".env", File, dotenv()),
            (".envrc", File, dotenv()),
            ("a/b/c/.env.production", File, dotenv()),
            ("app/.env.local", File, dotenv()),
        ]),
    );
}

#[test]
fn dotenv_directory_is_a_virtualenv_but_secrets_inside_it_are_masked() {
    let fx = Fx::new();
    fx.files(
        &fx.ws,
        &[
            ".env/pyvenv.cfg",
            ".env/bin/activate",
            ".env/lib/python3.11/site-packages/pkg/__init__.py",
            ".env/credentials.json",
            ".env/lib/.env.local",
        ],
    );
    let spec = fx.plan(generic(), &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            (
                ".env/credentials.json",
                File,
                builtin("cloud credentials", "credentials.json"),
            ),
            (".env/lib/.env.local", File, dotenv()),
        ]),
    );
}

#[test]
fn private_keys_are_masked_public_keys_are_not() {
    let fx = Fx::new();
    fx.files(
        &fx.ws,
        &[
            "id_rsa",
            "id_rsa.pub",
            "keys/id_ed25519",
            "keys/id_ed25519.pub",
            "deploy/id_ecdsa_work",
            "deploy/id_ecdsa_work.pub",
            "id_dsa",
            "tls/server.key",
            "tls/server.pem",
            "tls/bundle.p12",
            "tls/bundle.pfx",
            "src/keyboard.rs",
            "src/keys.rs",
        ],
    );
    let spec = fx.plan(generic(), &fx.ws);
    let ssh = |p| builtin("SSH private key", p);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            ("deploy/id_ecdsa_work", File, ssh("id_ecdsa*")),
            ("id_dsa", File, ssh("id_dsa*")),
            ("id_rsa", File, ssh("id_rsa*")),
            ("keys/id_ed25519", File, ssh("id_ed25519*")),
            (
                "tls/bundle.p12",
                File,
                builtin("PKCS#12 key store", "*.p12"),
            ),
            (
                "tls/bundle.pfx",
                File,
                builtin("PKCS#12 key store", "*.pfx"),
            ),
            ("tls/server.key", File, builtin("private key", "*.key")),
            (
                "tls/server.pem",
                File,
                builtin("PEM key or certificate", "*.pem"),
            ),
        ]),
    );
}

#[test]
fn credential_files_are_masked() {
    let fx = Fx::new();
    fx.files(
        &fx.ws,
        &[
            ".netrc",
            "sub/.npmrc",
            ".pypirc",
            ".pgpass",
            ".git-credentials",
            "gcp/credentials.json",
            "infra/prod.tfvars",
            "infra/terraform.tfstate",
            "infra/terraform.tfstate.backup",
            // Look alike, hold nothing.
            "infra/main.tf",
            "gcp/credentials.md",
            "npmrc.txt",
        ],
    );
    let spec = fx.plan(generic(), &fx.ws);
    let tfstate = "Terraform state (holds resource secrets)";
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            (
                ".git-credentials",
                File,
                builtin("git credential store", ".git-credentials"),
            ),
            (".netrc", File, builtin("netrc credentials", ".netrc")),
            (
                ".pgpass",
                File,
                builtin("PostgreSQL password file", ".pgpass"),
            ),
            (".pypirc", File, builtin("PyPI credentials", ".pypirc")),
            (
                "gcp/credentials.json",
                File,
                builtin("cloud credentials", "credentials.json"),
            ),
            (
                "infra/prod.tfvars",
                File,
                builtin("Terraform variables", "*.tfvars"),
            ),
            (
                "infra/terraform.tfstate",
                File,
                builtin(tfstate, "*.tfstate"),
            ),
            (
                "infra/terraform.tfstate.backup",
                File,
                builtin(tfstate, "*.tfstate.backup"),
            ),
            ("sub/.npmrc", File, builtin("npm credentials", ".npmrc")),
        ]),
    );
}

#[test]
fn gitignored_files_are_still_scanned_and_masked() {
    let fx = Fx::new();
    fx.write(fx.ws.join(".gitignore"), ".env\n*.pem\nbuild/\nsecrets/\n");
    fx.write(fx.ws.join("build/.gitignore"), "*\n");
    fx.files(
        &fx.ws,
        &[
            ".env",
            "certs/dev.pem",
            "build/out/.env.production",
            "build/out/id_ed25519",
            "secrets/token.txt",
            "src/lib.rs",
        ],
    );
    let spec = fx.plan(generic(), &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            (".env", File, dotenv()),
            ("build/out/.env.production", File, dotenv()),
            (
                "build/out/id_ed25519",
                File,
                builtin("SSH private key", "id_ed25519*"),
            ),
            (
                "certs/dev.pem",
                File,
                builtin("PEM key or certificate", "*.pem"),
            ),
        ]),
    );
}

#[test]
fn git_directory_is_never_masked() {
    let fx = Fx::new();
    let git = fx.ws.join(".git");
    fx.write(git.join("HEAD"), "ref: refs/heads/main\n");
    fx.write(
        git.join("config"),
        "[core]\n\trepositoryformatversion = 0\n[credential]\n\thelper = store\n\
         [remote \"origin\"]\n\turl = https://example.invalid/repo.git\n",
    );
    fx.files(
        &git,
        &[
            "description",
            "index",
            "packed-refs",
            "FETCH_HEAD",
            "ORIG_HEAD",
            "COMMIT_EDITMSG",
            "objects/ab/cdef0123456789abcdef0123456789abcdef01",
            "objects/pack/pack-0123456789abcdef.idx",
            "objects/pack/pack-0123456789abcdef.pack",
            "objects/info/packs",
            "refs/heads/main",
            "refs/remotes/origin/HEAD",
            "logs/HEAD",
            "hooks/pre-commit.sample",
            "info/exclude",
        ],
    );
    fx.files(&fx.ws, &[".env", "src/main.rs"]);
    let spec = fx.plan(generic(), &fx.ws);
    assert!(
        !spec.masked.iter().any(|m| m.path.starts_with(&git)),
        "nothing in .git may be masked: {:#?}",
        spec.masked
    );
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![(".env", File, dotenv())]),
    );
}

#[test]
fn hard_link_to_a_workspace_dotenv_is_masked() {
    let fx = Fx::new();
    let env = fx.write(fx.ws.join(".env"), "API_KEY=abc\n");
    fx.mkdir(fx.ws.join("config"));
    fs::hard_link(&env, fx.ws.join("config/settings.txt")).unwrap();
    fx.files(&fx.ws, &["config/other.txt"]);
    let spec = fx.plan(generic(), &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            (".env", File, dotenv()),
            ("config/settings.txt", File, hard_link_of(&env)),
        ]),
    );
}

#[test]
fn hard_links_to_home_deny_list_files_are_masked() {
    let fx = Fx::new();
    let key = fx.write(fx.home.join(".ssh/id_ed25519"), "KEY\n");
    let hosts = fx.write(fx.home.join(".ssh/known_hosts"), "host\n");
    let aws = fx.write(fx.home.join(".aws/credentials"), "[default]\n");
    let netrc = fx.write(fx.home.join(".netrc"), "machine x\n");
    let gcloud = fx.write(fx.home.join(".config/gcloud/adc.json"), "{}\n");
    // A home file that is not on the deny list.
    let plain = fx.write(fx.home.join("notes.txt"), "hello\n");
    fx.mkdir(fx.ws.join("d"));
    for (src, name) in [
        (&key, "d/a.txt"),
        (&hosts, "d/b.txt"),
        (&aws, "d/c.txt"),
        (&netrc, "d/d.txt"),
        (&gcloud, "d/e.txt"),
        (&plain, "d/f.txt"),
    ] {
        fs::hard_link(src, fx.ws.join(name)).unwrap();
    }
    let spec = fx.plan(generic(), &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            ("d/a.txt", File, hard_link_of(&key)),
            ("d/b.txt", File, hard_link_of(&hosts)),
            ("d/c.txt", File, hard_link_of(&aws)),
            ("d/d.txt", File, hard_link_of(&netrc)),
            ("d/e.txt", File, hard_link_of(&gcloud)),
        ]),
    );
    // The home itself is not mounted, so nothing under it is listed.
    assert_masks(&masks_under(&spec, &fx.home), &Masks::new());
}

#[test]
fn hard_link_to_a_file_inside_a_masked_directory_is_masked() {
    let fx = Fx::new();
    let policy = policy_yaml("extends: generic\nsecrets:\n  deny: [\"private/\"]\n");
    let data = fx.write(fx.ws.join("private/deep/data.bin"), "secret\n");
    fx.mkdir(fx.ws.join("public"));
    fs::hard_link(&data, fx.ws.join("public/data-copy.bin")).unwrap();
    fx.files(&fx.ws, &["public/readme.md"]);
    let spec = fx.plan(policy, &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            ("private", Dir, profile_rule("private/")),
            ("public/data-copy.bin", File, hard_link_of(&data)),
        ]),
    );
}

#[test]
fn hard_link_from_another_mount_to_a_workspace_secret_is_masked() {
    let fx = Fx::new();
    let policy = policy_yaml("extends: generic\nhome:\n  - path: ~/.config\n    mode: ro\n");
    let env = fx.write(fx.ws.join(".env"), "TOKEN=1\n");
    fx.mkdir(fx.home.join(".config/app"));
    fs::hard_link(&env, fx.home.join(".config/app/settings")).unwrap();
    fx.files(&fx.home, &[".config/app/other"]);
    let spec = fx.plan(policy, &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![(".env", File, dotenv())]),
    );
    assert_masks(
        &masks_under(&spec, &fx.home),
        &expect(vec![(".config/app/settings", File, hard_link_of(&env))]),
    );
}

#[test]
fn secrets_allow_does_not_exempt_hard_links_to_secrets() {
    let fx = Fx::new();
    let policy = policy_yaml("extends: generic\nsecrets:\n  allow: [\"notes.key\"]\n");
    let env = fx.write(fx.ws.join(".env"), "TOKEN=1\n");
    fx.files(&fx.ws, &["plain/notes.key", "other.key"]);
    fx.mkdir(fx.ws.join("linked"));
    fs::hard_link(&env, fx.ws.join("linked/notes.key")).unwrap();
    let spec = fx.plan(policy, &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            (".env", File, dotenv()),
            ("linked/notes.key", File, hard_link_of(&env)),
            ("other.key", File, builtin("private key", "*.key")),
        ]),
    );
}

#[test]
fn symlinks_to_secrets_are_listed_as_aliases() {
    let fx = Fx::new();
    let env = fx.write(fx.ws.join(".env"), "A=1\n");
    let aws = fx.write(fx.home.join(".aws/credentials"), "[default]\n");
    fx.files(&fx.ws, &["src/main.rs"]);
    symlink(".env", fx.ws.join("link-to-env")).unwrap();
    symlink("../.env", fx.ws.join("src/env-link")).unwrap();
    symlink(&aws, fx.ws.join("aws-creds")).unwrap();
    symlink("/etc/shadow", fx.ws.join("shadow")).unwrap();
    // Links to ordinary files are not listed.
    symlink("src/main.rs", fx.ws.join("main-link")).unwrap();
    let spec = fx.plan(generic(), &fx.ws);

    let aliases: Vec<&SymlinkAlias> = spec
        .symlink_aliases
        .iter()
        .filter(|a| a.link.starts_with(&fx.root))
        .collect();
    let alias = |link: &str, target: PathBuf, state: &str| SymlinkAlias {
        link: fx.ws.join(link),
        target,
        target_state: state.into(),
    };
    let expected = [
        alias("aws-creds", aws.clone(), "not mounted"),
        alias("link-to-env", env.clone(), "masked"),
        alias("shadow", "/etc/shadow".into(), "masked (system)"),
        alias("src/env-link", env.clone(), "masked"),
    ];
    assert_eq!(aliases, expected.iter().collect::<Vec<_>>());
    // The links need no mask of their own; the target is masked.
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![(".env", File, dotenv())]),
    );
}

#[test]
fn symlink_named_like_a_secret_masks_its_target() {
    let fx = Fx::new();
    let prod = fx.write(fx.ws.join("config/prod.txt"), "DB_PASSWORD=x\n");
    fx.files(&fx.ws, &["config/dev.txt"]);
    symlink("config/prod.txt", fx.ws.join(".env")).unwrap();
    let spec = fx.plan(generic(), &fx.ws);
    let link = fx.ws.join(".env");
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![(
            "config/prod.txt",
            File,
            MaskReason::NameRule {
                rule: format!(
                    "target of symlink {} (dotenv file (built-in rule `.env*`))",
                    link.display()
                ),
            },
        )]),
    );
    let aliases: Vec<_> = spec
        .symlink_aliases
        .iter()
        .filter(|a| a.link.starts_with(&fx.root))
        .cloned()
        .collect();
    assert_eq!(
        aliases,
        [SymlinkAlias {
            link,
            target: prod,
            target_state: "masked".into(),
        }]
    );
}

#[test]
fn every_symlink_to_a_file_masked_through_a_named_link_is_listed() {
    let mut fx = Fx::new();
    // One scanner thread: the walk is depth first from the workspace root,
    // so `plain-link` is met before `deep/er/.env`.
    fx.cpus = 1;
    let prod = fx.write(fx.ws.join("config/prod.txt"), "DB_PASSWORD=x\n");
    symlink("config/prod.txt", fx.ws.join("plain-link")).unwrap();
    fx.mkdir(fx.ws.join("deep/er"));
    symlink("../../config/prod.txt", fx.ws.join("deep/er/.env")).unwrap();
    let spec = fx.plan(generic(), &fx.ws);
    assert!(masks_under(&spec, &fx.ws).contains_key(&PathBuf::from("config/prod.txt")));
    let links: Vec<&std::path::Path> = spec
        .symlink_aliases
        .iter()
        .filter(|a| a.target == prod)
        .map(|a| a.link.strip_prefix(&fx.ws).unwrap())
        .collect();
    assert_eq!(
        links,
        [
            std::path::Path::new("deep/er/.env"),
            std::path::Path::new("plain-link")
        ]
    );
}

#[test]
fn hard_link_to_a_symlink_masked_target_is_masked() {
    let fx = Fx::new();
    let prod = fx.write(fx.ws.join("config/prod.txt"), "DB_PASSWORD=x\n");
    fs::hard_link(&prod, fx.ws.join("config/copy.txt")).unwrap();
    symlink("config/prod.txt", fx.ws.join(".env")).unwrap();
    let spec = fx.plan(generic(), &fx.ws);
    let masks = masks_under(&spec, &fx.ws);
    assert!(
        masks.contains_key(&PathBuf::from("config/prod.txt")),
        "{masks:#?}"
    );
    assert_eq!(
        masks.get(&PathBuf::from("config/copy.txt")),
        Some(&(File, hard_link_of(&prod))),
        "{masks:#?}"
    );
}

#[test]
fn unix_socket_in_the_workspace_is_masked() {
    let fx = Fx::new();
    fx.mkdir(fx.ws.join("run"));
    let _listener = UnixListener::bind(fx.ws.join("run/agent.sock")).unwrap();
    fx.files(&fx.ws, &["run/pidfile"]);
    let spec = fx.plan(generic(), &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![("run/agent.sock", File, MaskReason::Socket)]),
    );
}

#[test]
fn profile_deny_globs_mask_files_and_directories_and_allow_exempts() {
    let fx = Fx::new();
    let policy = policy_yaml(
        "extends: generic\nsecrets:\n  deny: [\"*.secret\", \"private/\", \"config/prod/*.json\", \"/top-level.txt\"]\n  allow: [\"i18n.key\"]\n",
    );
    fx.files(
        &fx.ws,
        &[
            "a/b/db.secret",
            "vault.secret/inner.txt",
            "private/notes.md",
            "private/deeper/x",
            "a/private/y",
            // `private/` matches directories only.
            "private.txt",
            "b/private",
            "config/prod/db.json",
            "config/prod/readme.md",
            "config/dev/db.json",
            "other/config/prod/db.json",
            "top-level.txt",
            "sub/top-level.txt",
            "lang/i18n.key",
            "tls/server.key",
        ],
    );
    let spec = fx.plan(policy, &fx.ws);
    assert_masks(
        &masks_under(&spec, &fx.ws),
        &expect(vec![
            ("a/b/db.secret", File, profile_rule("*.secret")),
            ("a/private", Dir, profile_rule("private/")),
            (
                "config/prod/db.json",
                File,
                profile_rule("config/prod/*.json"),
            ),
            ("private", Dir, profile_rule("private/")),
            ("tls/server.key", File, builtin("private key", "*.key")),
            ("top-level.txt", File, profile_rule("/top-level.txt")),
            ("vault.secret", Dir, profile_rule("*.secret")),
        ]),
    );
}

#[test]
fn profile_deny_globs_apply_to_extra_mounts_relative_to_their_root() {
    let fx = Fx::new();
    let data = fx.mkdir(fx.root.join("data"));
    fx.files(
        &data,
        &[
            "config/prod/db.json",
            "x/config/prod/db.json",
            "k.secret",
            ".env",
        ],
    );
    let policy = policy_yaml(&format!(
        "extends: generic\nmounts:\n  - path: \"{}\"\n    target: /data\nsecrets:\n  deny: [\"config/prod/*.json\", \"*.secret\"]\n",
        data.display()
    ));
    let spec = fx.plan(policy, &fx.ws);
    assert_masks(
        &masks_under(&spec, std::path::Path::new("/data")),
        &expect(vec![
            (".env", File, dotenv()),
            (
                "config/prod/db.json",
                File,
                profile_rule("config/prod/*.json"),
            ),
            ("k.secret", File, profile_rule("*.secret")),
        ]),
    );
    // Masks are reported at the sandbox path, not the host one.
    assert_masks(&masks_under(&spec, &data), &Masks::new());
}

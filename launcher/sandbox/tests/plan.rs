//! The planner: the home deny list, refusals, mount order, the environment
//! and the policy hash, on a real temporary tree with a fake home.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;
use policy::env::CliEnv;
use sandbox::spec::{MaskKind, MountPurpose, MountSource};
use sandbox::{PlanError, PlanRequest, SandboxSpec};

use MaskKind::{Dir, File};

/// A home with secrets on the deny list and ordinary files.
fn populate_home(fx: &Fx) {
    fx.files(
        &fx.home,
        &[
            ".ssh/id_ed25519",
            ".ssh/known_hosts",
            ".ssh/config",
            ".aws/credentials",
            ".aws/config",
            ".config/gcloud/credentials.db",
            ".config/gh/hosts.yml",
            ".config/nvim/init.lua",
            ".netrc",
            ".bash_history",
            ".gitconfig",
            "projects/app/src/main.rs",
        ],
    );
}

fn mount_at<'a>(spec: &'a SandboxSpec, dest: &Path) -> Vec<&'a sandbox::spec::MountPlan> {
    spec.mounts
        .iter()
        .filter(|m| m.destination == dest)
        .collect()
}

#[test]
fn workspace_that_is_the_home_masks_the_deny_list() {
    let fx = Fx::new();
    populate_home(&fx);
    fx.mkdir(fx.home.join("notes"));
    let aws = fx.home.join(".aws/credentials");
    fs::hard_link(&aws, fx.home.join("notes/aws-copy.txt")).unwrap();
    let spec = fx.plan(generic(), &fx.home);
    assert_eq!(spec.workspace, fx.home);
    assert_masks(
        &masks_under(&spec, &fx.home),
        &expect(vec![
            (".aws", Dir, home_denied(".aws", "AWS credentials")),
            (
                ".bash_history",
                File,
                home_denied(".bash_history", "shell history"),
            ),
            (
                ".config/gcloud",
                Dir,
                home_denied(".config/gcloud", "Google Cloud credentials"),
            ),
            (
                ".config/gh",
                Dir,
                home_denied(".config/gh", "GitHub CLI token"),
            ),
            (".netrc", File, home_denied(".netrc", "netrc credentials")),
            (".ssh", Dir, home_denied(".ssh", "SSH keys")),
            ("notes/aws-copy.txt", File, hard_link_of(&aws)),
        ]),
    );
    // The fresh home comes first, then the workspace over it.
    let fresh = spec
        .mounts
        .iter()
        .position(|m| m.purpose == MountPurpose::FreshHome)
        .unwrap();
    let ws = spec
        .mounts
        .iter()
        .position(|m| m.purpose == MountPurpose::Workspace)
        .unwrap();
    assert!(fresh < ws, "{:#?}", spec.mounts);
    assert_eq!(spec.mounts[ws].destination, fx.home);
}

#[test]
fn granting_ssh_by_name_mounts_it_unmasked() {
    let fx = Fx::new();
    populate_home(&fx);
    let policy = policy_yaml("extends: generic\nhome:\n  - path: ~/.ssh\n    mode: ro\n");
    let spec = fx.plan(policy, &fx.home);
    let masks = masks_under(&spec, &fx.home);
    // The grant lifts the deny list, not the name rules: the private key
    // is still masked by its name (a profile can `secrets.allow` it), while
    // ~/.ssh itself, config and known_hosts come through.
    let under_ssh: Masks = masks
        .iter()
        .filter(|(p, _)| p.starts_with(".ssh"))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    assert_masks(
        &under_ssh,
        &expect(vec![(
            ".ssh/id_ed25519",
            File,
            builtin("SSH private key", "id_ed25519*"),
        )]),
    );
    // Other deny list entries stay masked.
    assert_eq!(
        masks.get(Path::new(".aws")),
        Some(&(Dir, home_denied(".aws", "AWS credentials")))
    );
    let ssh = fx.home.join(".ssh");
    let grants = mount_at(&spec, &ssh);
    assert_eq!(grants.len(), 1, "{:#?}", spec.mounts);
    assert_eq!(grants[0].purpose, MountPurpose::HomeGrant);
    assert_eq!(
        grants[0].source,
        MountSource::Bind {
            path: ssh.clone(),
            file: false
        }
    );
    assert!(!grants[0].writable);
}

#[test]
fn granting_ssh_by_name_mounts_it_without_a_home_workspace() {
    let fx = Fx::new();
    fx.files(&fx.home, &[".ssh/known_hosts", ".ssh/config"]);
    let policy = policy_yaml("extends: generic\nhome:\n  - path: ~/.ssh\n    mode: ro\n");
    let spec = fx.plan(policy, &fx.ws);
    assert_masks(&masks_under(&spec, &fx.home), &Masks::new());
    assert_eq!(mount_at(&spec, &fx.home.join(".ssh")).len(), 1);
}

#[test]
fn granted_home_directory_masks_deny_list_entries_inside_it() {
    for scan in [true, false] {
        let fx = Fx::new();
        populate_home(&fx);
        fx.files(&fx.home, &[".config/app/.env"]);
        let policy = policy_yaml(&format!(
            "extends: generic\nhome:\n  - path: ~/.config\n    mode: ro\n    scan: {scan}\n"
        ));
        let spec = fx.plan(policy, &fx.ws);
        let mut expected = vec![
            (
                ".config/gcloud",
                Dir,
                home_denied(".config/gcloud", "Google Cloud credentials"),
            ),
            (
                ".config/gh",
                Dir,
                home_denied(".config/gh", "GitHub CLI token"),
            ),
        ];
        if scan {
            // Name rules apply only to scanned trees.
            expected.push((".config/app/.env", File, dotenv()));
        }
        assert_masks(&masks_under(&spec, &fx.home), &expect(expected));
        assert_eq!(
            mount_at(&spec, &fx.home.join(".config"))[0].purpose,
            MountPurpose::HomeGrant,
            "scan: {scan}"
        );
    }
}

/// Plans with `~/.config` a symlink to `real`, which holds gcloud and gh
/// credentials, and returns the names of those that stay readable at
/// `~/.config/<name>` in the sandbox.
fn exposed_through_symlinked_config(place: &str, how: &str, scan: bool) -> Vec<String> {
    let fx = Fx::new();
    let real = match place {
        "inside home" => fx.home.join("dotfiles/config"),
        _ => fx.root.join("dotfiles/config"),
    };
    fx.files(
        &real,
        &["gcloud/credentials.db", "gh/hosts.yml", "nvim/init.lua"],
    );
    symlink(&real, fx.home.join(".config")).unwrap();
    let spec = if how == "grant" {
        let policy = policy_yaml(&format!(
            "extends: generic\nhome:\n  - path: ~/.config\n    mode: ro\n    scan: {scan}\n"
        ));
        fx.plan(policy, &fx.ws)
    } else {
        fx.plan(generic(), &fx.home)
    };
    let masked = |p: &Path| {
        spec.masked
            .iter()
            .any(|m| p.starts_with(&m.path) && (m.kind == Dir || m.path == p))
    };
    // Hidden when masked at ~/.config/<name>, or, when the real directory
    // is itself mounted (inside a home workspace), masked there.
    ["gcloud", "gh"]
        .into_iter()
        .filter(|rel| {
            !(masked(&fx.home.join(".config").join(rel))
                || (how == "workspace is home" && masked(&real.join(rel))))
        })
        .map(|rel| {
            format!(
                "~/.config -> {} ({place}), {how}, scan: {scan}: ~/.config/{rel} is not masked",
                real.display()
            )
        })
        .collect()
}

#[test]
fn home_workspace_with_a_symlinked_config_masks_deny_list_entries() {
    let exposed = exposed_through_symlinked_config("inside home", "workspace is home", true);
    assert!(exposed.is_empty(), "{}", exposed.join("\n"));
}

#[test]
fn granted_symlinked_config_directory_still_masks_deny_list_entries() {
    let mut exposed = Vec::new();
    for (place, scan) in [
        ("inside home", true),
        ("inside home", false),
        ("outside home", true),
        ("outside home", false),
    ] {
        exposed.extend(exposed_through_symlinked_config(place, "grant", scan));
    }
    assert!(exposed.is_empty(), "{}", exposed.join("\n"));
}

#[test]
fn workspace_root_is_refused() {
    let fx = Fx::new();
    let err = fx.plan_err(generic(), Path::new("/"));
    assert!(matches!(err, PlanError::Workspace { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("workspace /: "), "{msg}");
    assert!(msg.contains("contains your home directory"), "{msg}");
    assert!(msg.contains("--workspace"), "{msg}");
}

#[test]
fn workspace_that_contains_the_home_is_refused() {
    let fx = Fx::new();
    let err = fx.plan_err(generic(), &fx.root);
    assert!(
        matches!(&err, PlanError::Workspace { path, .. } if *path == fx.root),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("workspace {}: ", fx.root.display())),
        "{msg}"
    );
    assert!(msg.contains("contains your home directory"), "{msg}");
    assert!(msg.contains("--workspace"), "{msg}");
}

#[test]
fn workspace_inside_ssh_is_refused() {
    let fx = Fx::new();
    let ws = fx.mkdir(fx.home.join(".ssh/proj"));
    let err = fx.plan_err(generic(), &ws);
    assert!(
        matches!(&err, PlanError::Denied { path, .. } if *path == ws),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}: ", ws.display())), "{msg}");
    assert!(
        msg.contains("the workspace is inside ~/.ssh (SSH keys)"),
        "{msg}"
    );
    assert!(msg.contains("home: [{path: ~/.ssh}]"), "{msg}");
}

#[test]
fn workspace_inside_ssh_refusal_fix_works() {
    let fx = Fx::new();
    let ws = fx.mkdir(fx.home.join(".ssh/proj"));
    let first = fx.plan_err(generic(), &ws).to_string();
    assert!(first.contains("home: [{path: ~/.ssh}]"), "{first}");
    // Do what the message says.
    let policy = policy_yaml("extends: generic\nhome:\n  - path: ~/.ssh\n");
    match fx.try_plan(policy, &ws) {
        Ok(spec) => assert_eq!(spec.workspace, ws),
        Err(e) => assert!(
            !e.to_string().contains("home: [{path: ~/.ssh}]"),
            "the fix was applied, yet the same fix is suggested again: {e}"
        ),
    }
}

#[test]
fn workspace_that_is_a_file_or_missing_is_refused() {
    let fx = Fx::new();
    let file = fx.write(fx.ws.join("file.txt"), "x");
    let msg = fx.plan_err(generic(), &file).to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("not a directory"), "{msg}");
    let missing = fx.root.join("nope");
    let msg = fx.plan_err(generic(), &missing).to_string();
    assert!(
        msg.starts_with(&format!("workspace {}: cannot open it", missing.display())),
        "{msg}"
    );
}

#[test]
fn mount_inside_aws_is_refused() {
    let fx = Fx::new();
    let sso = fx.mkdir(fx.home.join(".aws/sso"));
    let policy = policy_yaml("extends: generic\nmounts:\n  - path: ~/.aws/sso\n    target: /aws\n");
    let err = fx.plan_err(policy, &fx.ws);
    assert!(
        matches!(&err, PlanError::Denied { path, .. } if *path == sso),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}: ", sso.display())), "{msg}");
    assert!(
        msg.contains("mount ~/.aws/sso is inside ~/.aws (AWS credentials)"),
        "{msg}"
    );
    assert!(msg.contains("home: [{path: ~/.aws}]"), "{msg}");
}

#[test]
fn mount_that_reaches_aws_through_a_symlink_is_refused() {
    let fx = Fx::new();
    let sso = fx.mkdir(fx.home.join(".aws/sso"));
    let link = fx.root.join("innocent");
    symlink(&sso, &link).unwrap();
    let policy = policy_yaml(&format!(
        "extends: generic\nmounts:\n  - path: \"{}\"\n",
        link.display()
    ));
    let err = fx.plan_err(policy, &fx.ws);
    assert!(
        matches!(&err, PlanError::Denied { path, .. } if *path == sso),
        "{err:?}"
    );
}

#[test]
fn mount_that_contains_the_home_is_refused() {
    let fx = Fx::new();
    let policy = policy_yaml(&format!(
        "extends: generic\nmounts:\n  - path: \"{}\"\n    target: /host\n",
        fx.root.display()
    ));
    let err = fx.plan_err(policy, &fx.ws);
    assert!(
        matches!(&err, PlanError::Mount { path, .. } if *path == fx.root),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("contains your home directory"),
        "{err}"
    );
}

#[test]
fn missing_mount_is_refused_unless_optional() {
    let fx = Fx::new();
    let missing = fx.root.join("missing-tool");
    let policy = policy_yaml(&format!(
        "extends: generic\nmounts:\n  - path: \"{}\"\n",
        missing.display()
    ));
    let err = fx.plan_err(policy, &fx.ws);
    assert!(
        matches!(&err, PlanError::Mount { path, .. } if *path == missing),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot mount it", missing.display())),
        "{msg}"
    );
    assert!(msg.contains("optional: true"), "{msg}");

    let policy = policy_yaml(&format!(
        "extends: generic\nmounts:\n  - path: \"{}\"\n    optional: true\n",
        missing.display()
    ));
    let spec = fx.plan(policy, &fx.ws);
    assert!(
        spec.skipped
            .contains(&format!("{} (not present on the host)", missing.display())),
        "{:?}",
        spec.skipped
    );
    assert!(mount_at(&spec, &missing).is_empty());
}

#[test]
fn missing_home_entries_are_skipped_or_created() {
    let fx = Fx::new();
    let policy = policy_yaml(
        "extends: generic\nhome:\n  - path: ~/.tool-state\n    mode: rw\n    create: true\n",
    );
    let spec = fx.plan(policy, &fx.ws);
    // generic's ~/.gitconfig and ~/.config/git are absent from the fake home.
    let mut skipped = spec.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "~/.config/git (not present on the host)",
            "~/.gitconfig (not present on the host)"
        ]
    );
    let state = fx.home.join(".tool-state");
    // Planning changes nothing; the launch makes it (sandbox::prepare).
    assert!(!state.exists(), "the plan made {}", state.display());
    assert!(
        spec.prepare
            .iter()
            .any(|p| p.path() == std::fs::canonicalize(&fx.home).unwrap().join(".tool-state")),
        "{:?}",
        spec.prepare
    );
    sandbox::prepare::apply(&spec).unwrap();
    assert!(state.is_dir(), "create: true makes the directory");
    let m = mount_at(&spec, &state);
    assert_eq!(m.len(), 1);
    assert!(m[0].writable);
}

#[test]
fn command_line_mount_into_proc_is_refused() {
    let fx = Fx::new();
    let data = fx.mkdir(fx.root.join("data"));
    let err = sandbox::plan(
        PlanRequest {
            policy: generic(),
            workspace: fx.ws.clone(),
            command: Vec::new(),
            network: None,
            allow: Vec::new(),
            mounts: vec![
                policy::resolve::parse_cli_mount(&format!("{}:/proc/x", data.display())).unwrap(),
            ],
            env: Vec::new(),
            image: None,
            allow_home_workspace: false,
            own_state: Default::default(),
        },
        &fx.host(),
    )
    .unwrap_err();
    assert!(matches!(&err, PlanError::Mount { path, .. } if path == Path::new("/proc/x")));
    assert!(err.to_string().contains("mount it somewhere else"), "{err}");
}

#[test]
fn mounts_are_ordered_parents_before_children() {
    let fx = Fx::new();
    populate_home(&fx);
    fx.files(&fx.home, &[".config/git/config"]);
    let tool = fx.mkdir(fx.root.join("opt-tool"));
    let data = fx.mkdir(fx.root.join("data"));
    let ws = fx.home.join("projects/app");
    let policy = policy_yaml(&format!(
        "extends: generic\nmounts:\n  - path: \"{}\"\n    target: /opt/tool\n  - path: \"{}\"\n    target: ~/projects/app/data\n",
        tool.display(),
        data.display()
    ));
    let spec = fx.plan(policy, &ws);
    let depth = |p: &Path| p.components().count();
    let depths: Vec<usize> = spec.mounts.iter().map(|m| depth(&m.destination)).collect();
    assert!(
        depths.windows(2).all(|w| w[0] <= w[1]),
        "destinations must not get shallower: {:#?}",
        spec.mounts
    );
    for (i, a) in spec.mounts.iter().enumerate() {
        for b in &spec.mounts[..i] {
            assert!(
                !(b.destination != a.destination && b.destination.starts_with(&a.destination)),
                "{} is mounted before its parent {}",
                b.destination.display(),
                a.destination.display()
            );
        }
    }
    let pos = |purpose: MountPurpose, dest: &Path| {
        spec.mounts
            .iter()
            .position(|m| m.purpose == purpose && m.destination == dest)
            .unwrap_or_else(|| panic!("no {purpose:?} mount at {}", dest.display()))
    };
    let fresh = pos(MountPurpose::FreshHome, &fx.home);
    let gitconfig = pos(MountPurpose::HomeGrant, &fx.home.join(".gitconfig"));
    let gitdir = pos(MountPurpose::HomeGrant, &fx.home.join(".config/git"));
    let workspace = pos(MountPurpose::Workspace, &ws);
    let data_mount = pos(MountPurpose::ProfileMount, &ws.join("data"));
    let tool_mount = pos(MountPurpose::ProfileMount, Path::new("/opt/tool"));
    assert!(fresh < gitconfig && fresh < gitdir && fresh < workspace);
    assert!(workspace < data_mount);
    assert!(pos(MountPurpose::Tmp, Path::new("/tmp")) < fresh);
    assert_eq!(
        spec.mounts[gitconfig].source,
        MountSource::Bind {
            path: fx.home.join(".gitconfig"),
            file: true
        }
    );
    assert_eq!(
        spec.mounts[tool_mount].source,
        MountSource::Bind {
            path: tool,
            file: false
        }
    );
    assert!(spec.mounts[workspace].writable);
    assert!(!spec.mounts[tool_mount].writable);
}

#[test]
fn workspace_mount_comes_after_fresh_home_when_workspace_is_the_home() {
    let fx = Fx::new();
    let spec = fx.plan(generic(), &fx.home);
    let at_home: Vec<&MountPurpose> = spec
        .mounts
        .iter()
        .filter(|m| m.destination == fx.home)
        .map(|m| &m.purpose)
        .collect();
    assert_eq!(
        at_home,
        [&MountPurpose::FreshHome, &MountPurpose::Workspace]
    );
}

const UNPASSED: &str = "zz-unpassed-8f3a1c77e0d94b2c";
const PASSED: &str = "sk-ant-passed-5d2e9b41a7c0";
const PREFIX_SECRET: &str = "prefix-token-c3b1e8d07f42";
const CLI_SECRET: &str = "cli-set-value-91ab2c";

#[test]
fn environment_holds_only_base_and_profile_names_and_never_prints_values() {
    let mut fx = Fx::new();
    fx.env = [
        ("PATH", "/usr/local/bin:/usr/bin"),
        ("HOME", "/somewhere/else"),
        ("USER", "someone-else"),
        ("TERM", "xterm"),
        ("LANG", "C.UTF-8"),
        ("TZ", "UTC"),
        ("EDITOR", "vim"),
        ("SSH_AUTH_SOCK", "/run/user/0/agent.sock"),
        ("MY_SERVICE_PASSWORD", UNPASSED),
        ("ANTHROPIC_API_KEY", PASSED),
        ("MYTOOL_MODE", "fast"),
        ("MYTOOL_TOKEN", PREFIX_SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let policy = policy_yaml("extends: generic\nenv: [ANTHROPIC_API_KEY, \"MYTOOL_*\"]\n");
    let spec = sandbox::plan(
        PlanRequest {
            policy,
            workspace: fx.ws.clone(),
            command: vec!["sh".into()],
            network: None,
            allow: Vec::new(),
            mounts: Vec::new(),
            env: vec![CliEnv::Set(
                "FROM_CLI".into(),
                policy::env::Redacted(CLI_SECRET.into()),
            )],
            image: None,
            allow_home_workspace: false,
            own_state: Default::default(),
        },
        &fx.host(),
    )
    .unwrap();

    let names: Vec<&str> = spec.env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ANTHROPIC_API_KEY",
            "FROM_CLI",
            "HOME",
            "LANG",
            "MYTOOL_MODE",
            "PATH",
            "TERM",
            "TZ",
            "USER"
        ]
    );
    let value = |n: &str| {
        spec.env_pairs()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(value("HOME"), Some(fx.home.display().to_string()));
    assert_eq!(value("USER").as_deref(), Some("tester"));
    assert_eq!(value("ANTHROPIC_API_KEY").as_deref(), Some(PASSED));
    assert_eq!(
        spec.env_refused
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["MYTOOL_TOKEN"]
    );

    let debug = format!("{spec:?}");
    let pretty = format!("{spec:#?}");
    let json = serde_json::to_string(&spec).unwrap();
    for secret in [UNPASSED, PASSED, PREFIX_SECRET, CLI_SECRET] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug");
        assert!(
            !pretty.contains(secret),
            "{secret} leaked into pretty Debug"
        );
        assert!(!json.contains(secret), "{secret} leaked into JSON");
    }
    assert!(debug.contains("ANTHROPIC_API_KEY"), "names are shown");
}

#[test]
fn policy_hash_is_stable_and_follows_the_limits() {
    let fx = Fx::new();
    let a = fx.plan(generic(), &fx.ws);
    let b = fx.plan(generic(), &fx.ws);
    assert_eq!(a.policy_sha256, b.policy_sha256);
    assert_ne!(a.session, b.session, "each plan is a new session");
    assert_eq!(a.policy_sha256.len(), 64);
    assert!(a.policy_sha256.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a.policy_sha256, sandbox::policy_hash(&generic()));

    // The same policy written as a user file that only extends generic
    // differs in its name and chain, and so in its hash.
    let mut pids = generic();
    pids.limits.pids = 100;
    let c = fx.plan(pids.clone(), &fx.ws);
    assert_ne!(a.policy_sha256, c.policy_sha256);
    assert_eq!(c.limits.pids, 100);

    let mut memory = generic();
    memory.limits.memory = policy::ByteSize(1 << 30);
    assert_ne!(sandbox::policy_hash(&memory), a.policy_sha256);
    assert_ne!(sandbox::policy_hash(&memory), c.policy_sha256);

    let mut cpus = generic();
    cpus.limits.cpus = policy::Cpus(500);
    assert_ne!(sandbox::policy_hash(&cpus), a.policy_sha256);

    pids.limits.pids = generic().limits.pids;
    assert_eq!(sandbox::policy_hash(&pids), a.policy_sha256);
}

#[test]
fn spec_reports_the_profile_and_identity() {
    let fx = Fx::new();
    let spec = fx.plan(generic(), &fx.ws);
    assert_eq!(spec.profile, "generic");
    assert_eq!(spec.profile_chain, ["builtin:generic"]);
    assert_eq!(spec.cwd, fx.ws);
    assert_eq!(spec.command, ["true"]);
    assert_eq!(spec.identity.home, fx.home);
    assert_eq!(spec.identity.user_name, "tester");
    assert_eq!(spec.hostname, format!("agentctl-{}", spec.session.short()));
    assert_eq!(spec.network, policy::NetworkMode::None);
    assert_eq!(spec.network_reason, None);
    assert!(
        spec.masked_proc_paths
            .contains(&PathBuf::from("/proc/kcore"))
    );
}

#[test]
fn the_home_and_its_start_up_trees_are_refused_as_the_workspace() {
    let fx = Fx::new();
    let config = fx.mkdir(fx.home.join(".config"));
    for ws in [fx.home.clone(), config] {
        let err = sandbox::plan(
            PlanRequest {
                policy: generic(),
                workspace: ws.clone(),
                command: Vec::new(),
                network: None,
                allow: Vec::new(),
                mounts: Vec::new(),
                env: Vec::new(),
                image: None,
                allow_home_workspace: false,
                own_state: Default::default(),
            },
            &fx.host(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--allow-home-workspace"), "{err}");
    }
}

//! Shared fixtures for the sandbox integration tests: a real temporary
//! directory holding a fake home and a workspace, hand-built `HostFacts`,
//! and helpers to compare masks exactly.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use policy::{Policy, ProfileError, ProfileLoader};
use sandbox::spec::{MaskKind, MaskReason};
use sandbox::{HostFacts, PlanError, PlanRequest, SandboxSpec};
use tempfile::TempDir;

/// A temporary tree: `<root>/home` is the fake home, `<root>/ws` a
/// workspace outside it.
pub struct Fx {
    _dir: TempDir,
    /// Canonical path of the temporary directory.
    pub root: PathBuf,
    pub home: PathBuf,
    pub ws: PathBuf,
    pub env: Vec<(String, String)>,
    /// Becomes `HostFacts::cpus`, which sets the scanner's thread count.
    pub cpus: usize,
}

impl Fx {
    pub fn new() -> Fx {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical tempdir");
        let home = root.join("home");
        let ws = root.join("ws");
        fs::create_dir(&home).unwrap();
        fs::create_dir(&ws).unwrap();
        Fx {
            _dir: dir,
            root,
            home,
            ws,
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("TERM".into(), "xterm-256color".into()),
            ],
            cpus: 2,
        }
    }

    /// Writes `content` to `path`, creating parent directories.
    pub fn write(&self, path: impl AsRef<Path>, content: &str) -> PathBuf {
        let path = path.as_ref().to_path_buf();
        assert!(
            path.starts_with(&self.root),
            "{} escapes the fixture",
            path.display()
        );
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    /// Writes each of `rels` (relative to `base`) with some content.
    pub fn files(&self, base: &Path, rels: &[&str]) {
        for rel in rels {
            self.write(base.join(rel), &format!("content of {rel}\n"));
        }
    }

    pub fn mkdir(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path).unwrap();
        path
    }

    pub fn host(&self) -> HostFacts {
        // The owner of the fresh tempdir is the effective uid of this process.
        let meta = fs::metadata(&self.root).unwrap();
        HostFacts {
            uid: meta.uid(),
            gid: meta.gid(),
            user: "tester".into(),
            home: self.home.clone(),
            env: self.env.clone(),
            cpus: self.cpus,
        }
    }

    pub fn try_plan(&self, policy: Policy, workspace: &Path) -> Result<SandboxSpec, PlanError> {
        sandbox::plan(
            PlanRequest {
                policy,
                workspace: workspace.to_path_buf(),
                command: vec!["true".into()],
                network: None,
                allow: Vec::new(),
                mounts: Vec::new(),
                env: Vec::new(),
                image: None,
                // Tests of what is masked when the home is the workspace
                // ask for it, as the user would; the refusal has its own.
                allow_home_workspace: workspace == self.home,
                own_state: Default::default(),
            },
            &self.host(),
        )
    }

    pub fn plan(&self, policy: Policy, workspace: &Path) -> SandboxSpec {
        self.try_plan(policy, workspace)
            .unwrap_or_else(|e| panic!("plan failed: {e}"))
    }

    pub fn plan_err(&self, policy: Policy, workspace: &Path) -> PlanError {
        match self.try_plan(policy, workspace) {
            Ok(_) => panic!("plan of {} should have been refused", workspace.display()),
            Err(e) => e,
        }
    }
}

/// The built-in `generic` profile.
pub fn generic() -> Policy {
    policy::resolve("generic", &policy::BuiltinOnly).expect("generic resolves")
}

/// A loader that serves one profile file, so tests can write profiles as
/// YAML and resolve them (with `extends:`) like agentctl does.
struct OneFile(String);

impl ProfileLoader for OneFile {
    fn named(&self, _name: &str) -> Result<Option<(String, String)>, ProfileError> {
        Ok(None)
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn file(&self, path: &str, _: Option<&str>) -> Result<(String, String), ProfileError> {
        Ok((path.to_string(), self.0.clone()))
    }
}

/// Resolves a profile written as YAML.
pub fn policy_yaml(text: &str) -> Policy {
    policy::ProfileFile::parse("./test.yaml", text)
        .unwrap_or_else(|e| panic!("test profile does not parse: {e}\n{text}"));
    policy::resolve("./test.yaml", &OneFile(text.to_string()))
        .unwrap_or_else(|e| panic!("test profile does not resolve: {e}"))
}

pub type Masks = BTreeMap<PathBuf, (MaskKind, MaskReason)>;

/// The masks at or below `dir`, keyed by their path relative to `dir`.
/// Panics when a path is masked twice.
pub fn masks_under(spec: &SandboxSpec, dir: &Path) -> Masks {
    let mut out = Masks::new();
    for m in spec.masked.iter().filter(|m| m.path.starts_with(dir)) {
        let rel = m.path.strip_prefix(dir).unwrap().to_path_buf();
        let old = out.insert(rel, (m.kind, m.reason.clone()));
        assert!(old.is_none(), "{} is masked twice", m.path.display());
    }
    out
}

/// Builds an expected mask map from `(relative path, kind, reason)`.
pub fn expect(entries: Vec<(&str, MaskKind, MaskReason)>) -> Masks {
    entries
        .into_iter()
        .map(|(p, k, r)| (PathBuf::from(p), (k, r)))
        .collect()
}

/// Asserts two mask maps are equal, printing both sorted on failure.
#[track_caller]
pub fn assert_masks(actual: &Masks, expected: &Masks) {
    if actual != expected {
        let show = |m: &Masks| {
            m.iter()
                .map(|(p, (k, r))| format!("  {} {k:?} {r:?}", p.display()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "masked paths differ\nexpected:\n{}\nactual:\n{}",
            show(expected),
            show(actual)
        );
    }
}

/// The reason for a built-in name rule, as the planner words it.
pub fn builtin(what: &str, pattern: &str) -> MaskReason {
    MaskReason::NameRule {
        rule: format!("{what} (built-in rule `{pattern}`)"),
    }
}

/// The reason for a profile `secrets.deny` glob.
pub fn profile_rule(pattern: &str) -> MaskReason {
    MaskReason::NameRule {
        rule: format!("profile secrets.deny `{pattern}`"),
    }
}

pub fn home_denied(entry: &str, what: &str) -> MaskReason {
    MaskReason::HomeDenied {
        entry: entry.into(),
        what: what.into(),
    }
}

pub fn hard_link_of(path: &Path) -> MaskReason {
    MaskReason::HardLink {
        of: path.to_path_buf(),
    }
}

pub const DOTENV: (&str, &str) = ("dotenv file", ".env*");

pub fn dotenv() -> MaskReason {
    builtin(DOTENV.0, DOTENV.1)
}

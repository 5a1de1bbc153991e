//! The vm backend through the real binary, beyond the conformance suite
//! (which runs on it unchanged): what a VM adds over a container (its own
//! kernel), what it refuses and how it says so, and its terminal.
//!
//! Skips loudly without QEMU or a guest kernel; fails under CI=true.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{Runner, binary, is_root, require, text, vm_available};

fn agentctl(ws: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(["--store", "none"])
        .args(args)
        .current_dir(ws)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn host_file(p: &str) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

/// The stand-in for a guest-kernel escape: a container shares the host's
/// kernel, so what the kernel knows of the host reaches it (here the
/// host's boot id, its kernel release and its uptime; a kernel bug would
/// reach further). In the VM the same reads answer from the guest's own
/// kernel: nothing of the host's.
#[test]
fn the_guest_kernel_is_not_the_hosts() {
    if !vm_available() || !require(is_root(), "root (the native backend's comparison run)") {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let probe = [
        "sh",
        "-c",
        "cat /proc/sys/kernel/random/boot_id; uname -r; cut -d' ' -f1 /proc/uptime; cat /proc/modules | cut -d' ' -f1 | sort | tr '\\n' ,",
    ];
    let host_boot = host_file("/proc/sys/kernel/random/boot_id");
    let host_release = host_file("/proc/sys/kernel/osrelease");
    let host_uptime: f64 = host_file("/proc/uptime")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let mut native = vec!["run", "-q", "--backend", "native", "--"];
    native.extend(probe);
    let o = agentctl(ws.path(), &native);
    assert!(o.status.success(), "native: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    // In a container: the host's own values.
    assert_eq!(lines[0], host_boot, "native: {out}");
    assert_eq!(lines[1], host_release, "native: {out}");

    let mut vm = vec!["run", "-q", "--backend", "vm", "--"];
    vm.extend(probe);
    let o = agentctl(ws.path(), &vm);
    assert!(o.status.success(), "vm: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "vm: {out} {}", text(&o.stderr));
    assert_ne!(lines[0], host_boot, "the VM read the host's boot id: {out}");
    assert_eq!(lines[0].len(), 36, "a boot id of its own: {out}");
    assert_ne!(
        lines[1], host_release,
        "the VM runs the host's kernel: {out}"
    );
    let guest_uptime: f64 = lines[2].parse().unwrap();
    assert!(
        guest_uptime < host_uptime && guest_uptime < 600.0,
        "the guest's uptime is its own ({guest_uptime} s; the host's {host_uptime} s)"
    );
    // The guest's modules are the few agentctl loads, none of the host's.
    let host_modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    for m in lines[3].split(',').filter(|m| !m.is_empty()) {
        assert!(
            [
                "9p",
                "9pnet",
                "9pnet_virtio",
                "virtio_console",
                "virtio_pci",
                "netfs",
                "fscache"
            ]
            .contains(&m)
                || m.starts_with("virtio"),
            "an unexpected module in the guest: {m} ({})",
            lines[3]
        );
    }
    if host_modules.contains("kvm") {
        assert!(
            !lines[3].contains("kvm"),
            "the host's modules in the guest: {}",
            lines[3]
        );
    }
}

/// What the vm backend cannot do it refuses before anything starts, naming
/// why and the fix; nothing falls back to a container.
#[test]
fn refusals_name_the_fix_and_nothing_falls_back() {
    if !vm_available() {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![(
        vec![
            "run",
            "-q",
            "--backend",
            "vm",
            "--network",
            "host",
            "--",
            "true",
        ],
        "a VM has no host network",
    )];
    for (args, says) in cases {
        let o = agentctl(ws.path(), &args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {err}");
        assert!(
            err.contains(says) && err.contains("fix:"),
            "{args:?}: {err}"
        );
    }
    // A missing guest kernel names the package.
    let o = Command::new(binary())
        .args([
            "--store",
            "none",
            "run",
            "-q",
            "--backend",
            "vm",
            "--",
            "true",
        ])
        .env("AGENTCTL_VM_KERNEL_DIR", ws.path().join("no-kernel-here"))
        .current_dir(ws.path())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("linux-image-amd64"), "{err}");
    // QEMU missing: the package.
    let o = Command::new(binary())
        .args([
            "--store",
            "none",
            "run",
            "-q",
            "--backend",
            "vm",
            "--",
            "true",
        ])
        .env("PATH", "/nonexistent")
        .current_dir(ws.path())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
    // KVM asked for on a host whose KVM cannot run ordinary guests.
    if let Some(why) = vmm::Probe::host().kvm_unusable() {
        let o = agentctl(
            ws.path(),
            &[
                "run",
                "-q",
                "--backend",
                "vm",
                "--accel",
                "kvm",
                "--",
                "true",
            ],
        );
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{err}");
        assert!(err.contains("--accel tcg"), "{why}: {err}");
    }
    // Nothing of these attempts was left running.
    assert!(
        support::processes_with("qemu-system")
            .iter()
            .all(|p| !p.contains(&ws.path().display().to_string()))
    );
}

/// With a terminal, the command gets one of the guest's own (the host's
/// terminal is in raw mode; the guest's line discipline does the rest),
/// sized like the caller's.
#[test]
fn a_terminal_of_the_guests_own() {
    if !vm_available()
        || !require(
            Command::new("script").arg("--version").output().is_ok(),
            "script from util-linux (a pseudo-terminal for agentctl)",
        )
    {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let inner = format!(
        "stty cols 91 rows 33; {} --store none run -q --backend vm -- sh -c 'tty; stty size; test -t 0 && echo stdin-is-a-tty'",
        binary().display()
    );
    let o = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .current_dir(ws.path())
        .envs(std::env::vars())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out} {}", text(&o.stderr));
    assert!(out.contains("/dev/pts/"), "no terminal in the guest: {out}");
    assert!(
        out.contains("33 91"),
        "the caller's size did not reach the guest: {out}"
    );
    assert!(out.contains("stdin-is-a-tty"), "{out}");
}

/// QEMU is the layer between the guest and the host: it runs with no
/// capability, no_new_privs and its seccomp sandbox, and in a root of its
/// own holding /usr and the session, none of the user's files. A guest
/// that escaped its kernel and then QEMU would find nothing else.
#[test]
fn qemu_runs_confined() {
    if !vm_available() || !require(is_root(), "root (to look into QEMU's root through /proc)") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("host-secret"), "SECRET").unwrap();
    let ws = home.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let store = home.path().join("store.db");
    let store_url = format!("sqlite://{}", store.display());
    let agentctl = |args: &[&str]| {
        Command::new(binary())
            .args(["--store", &store_url])
            .args(args)
            .current_dir(&ws)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = agentctl(&["run", "-d", "-q", "--backend", "vm", "--", "sleep", "120"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_string();
    let qemu = support::processes_with(&id)
        .into_iter()
        .find(|p| p.contains("qemu-system"))
        .and_then(|p| p.split(':').next().map(str::to_string))
        .expect("QEMU runs");
    let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
    for want in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(want), "QEMU's {want:?} missing:\n{status}");
    }
    let root = std::path::PathBuf::from(format!("/proc/{qemu}/root"));
    let top: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for absent in ["home", "root", "tmp", "var", "srv"] {
        assert!(
            !top.contains(&absent.to_string()),
            "QEMU sees /{absent}: {top:?}"
        );
    }
    assert!(
        !root
            .join(home.path().strip_prefix("/").unwrap())
            .join("host-secret")
            .exists(),
        "QEMU sees the user's files"
    );
    let etc: Vec<String> = std::fs::read_dir(root.join("etc"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(etc, ["ld.so.cache"], "QEMU's /etc");
    // QEMU's /proc is its own PID namespace's: no host process (the
    // helper, the user's shell) whose environment, root or descriptors a
    // QEMU exploit could read through it, on kernels that would let a
    // process of the same user do so across user namespaces.
    let pids: Vec<String> = std::fs::read_dir(root.join("proc"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(pids, ["1"], "QEMU's /proc shows host processes");
    let o = agentctl(&["stop", "-t", "1", &id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = agentctl(&["rm", &id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// `backend: vm` in a profile runs its sessions in a VM without
/// `--backend`; a `--backend` that says otherwise is refused, not obeyed
/// into a weaker sandbox.
#[test]
fn a_profile_can_ask_for_the_vm() {
    if !vm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("in-a-vm.yaml");
    std::fs::write(&profile, "extends: generic\nbackend: vm\n").unwrap();
    let profile = profile.to_string_lossy().into_owned();
    let o = agentctl(
        dir.path(),
        &[
            "run",
            "-q",
            "--profile",
            &profile,
            "--",
            "cat",
            "/proc/sys/kernel/osrelease",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_ne!(
        text(&o.stdout).trim(),
        host_file("/proc/sys/kernel/osrelease"),
        "the profile's session ran on the host's kernel"
    );
    let o = agentctl(
        dir.path(),
        &[
            "run",
            "-q",
            "--profile",
            &profile,
            "--backend",
            "native",
            "--",
            "true",
        ],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("backend: vm") && err.contains("--backend native"),
        "{err}"
    );
    // A profile file with a backend agentctl does not have names it.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "extends: generic\nbackend: firecracker\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.yaml").to_string_lossy().into_owned();
    let o = agentctl(dir.path(), &["run", "-q", "--profile", &bad, "--", "true"]);
    let err = text(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("bad.yaml") && err.contains("backend"), "{err}");
}

/// The host's first global IPv4 address: traffic to it stays on this
/// machine, but it is not the loopback a bridged sandbox is cut off from.
fn host_address() -> Option<String> {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    text(&o.stdout)
        .lines()
        .find_map(|l| l.split_whitespace().nth(3))
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
}

/// `--network bridge`: QEMU's user-mode network in QEMU's own network
/// namespace, which slirp4netns connects out. The guest reaches a service
/// on the host's own address and a name through its DNS forwarder's
/// chain, and not the host's loopback: neither through the gateway (QEMU's
/// loopback, in its namespace) nor through slirp4netns (told not to).
fn bridge_reaches_out_but_not_the_hosts_loopback(runner: Runner) {
    if !vm_available()
        || !require(
            std::path::Path::new("/usr/bin/slirp4netns").exists(),
            "slirp4netns (`apt-get install slirp4netns`)",
        )
    {
        return;
    }
    let addr = host_address();
    if !require(addr.is_some(), "a global IPv4 address on this host") {
        return;
    }
    let addr = addr.unwrap();
    let private = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let public = std::net::TcpListener::bind(format!("{addr}:0")).unwrap();
    let (p_private, p_public) = (
        private.local_addr().unwrap().port(),
        public.local_addr().unwrap().port(),
    );
    let served = std::thread::spawn(move || {
        use std::io::Write;
        let (mut c, _) = public.accept().unwrap();
        c.write_all(b"hello-from-the-host\n").unwrap();
    });
    let home = tempfile::tempdir().unwrap();
    let ws = home.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    runner.own_home(home.path());
    let script = format!(
        "cat /etc/resolv.conf; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
         python3 -c '\nimport socket\nfor host, port in ((\"10.0.2.2\", {p_private}), (\"127.0.0.1\", {p_private}), (\"{addr}\", {p_public})):\n    s = socket.socket(); s.settimeout(10)\n    try:\n        s.connect((host, port)); print(\"reached\", host, s.recv(100).decode().strip())\n    except OSError as e:\n        print(\"blocked\", host, e)\n'"
    );
    let o = runner
        .agentctl(home.path(), &ws)
        .args(["--store", "none", "run", "-q", "--backend", "vm"])
        .args(["--network", "bridge", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out} {}", text(&o.stderr));
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");
    assert!(out.lines().any(|l| l == "eth0"), "no network card: {out}");
    assert!(
        out.contains(&format!("reached {addr} hello-from-the-host")),
        "the bridge does not reach out: {out}"
    );
    assert!(
        out.contains("blocked 10.0.2.2"),
        "the host's loopback is reachable: {out}"
    );
    assert!(out.contains("blocked 127.0.0.1"), "{out}");
    served.join().unwrap();
    drop(private);
    // No slirp4netns is left serving a VM that is gone (other tests' VMs
    // may be running now).
    for p in support::processes_with("--userns-path=/proc/") {
        let target = p
            .split("--userns-path=/proc/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        assert!(
            std::path::Path::new("/proc").join(&target).exists(),
            "slirp4netns outlived its VM: {p}"
        );
    }
}

#[test]
fn bridge_on_vm_as_root() {
    if !require(is_root(), "root") {
        return;
    }
    bridge_reaches_out_but_not_the_hosts_loopback(Runner::Current);
}

#[test]
fn bridge_on_vm_rootless() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    bridge_reaches_out_but_not_the_hosts_loopback(runner);
}

/// Shared writable mappings of files in the exported tree (SQLite's WAL
/// index, pip's download cache, linkers) work: 9p without a cache refuses
/// them with EINVAL, which broke pip in a VM until the guest mounted the
/// tree with `cache=mmap`.
#[test]
fn shared_mappings_of_workspace_files_work() {
    if !vm_available() {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let o = agentctl(
        ws.path(),
        &[
            "run",
            "-q",
            "--backend",
            "vm",
            "--",
            "python3",
            "-c",
            "import mmap, sqlite3\n\
             f = open('m.bin', 'w+b'); f.write(b'x' * 4096); f.flush()\n\
             m = mmap.mmap(f.fileno(), 0); m[0:5] = b'hello'; m.flush(); print('mmap', bytes(m[0:5]).decode())\n\
             c = sqlite3.connect('w.db'); print('journal', c.execute('pragma journal_mode=wal').fetchone()[0])\n\
             c.execute('create table t(x)'); c.execute('insert into t values (42)'); c.commit()\n\
             print('rows', c.execute('select x from t').fetchone()[0])",
        ],
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out} {}", text(&o.stderr));
    assert!(out.contains("mmap hello"), "{out}");
    assert!(out.contains("journal wal"), "{out}");
    assert!(out.contains("rows 42"), "{out}");
    // The host sees what the guest wrote through the mapping.
    assert_eq!(
        &std::fs::read(ws.path().join("m.bin")).unwrap()[..5],
        b"hello"
    );
}

/// QEMU's own cgroup: the VM's memory plus QEMU's own and TCG's code
/// cache, the plan's CPU (1.5 CPUs: two vCPUs, held to 1.5 by the
/// quota), QEMU's threads; read from the kernel while it runs, gone with
/// the session.
#[test]
fn qemu_is_held_by_a_cgroup_of_the_vms_size() {
    if !vm_available() || !require(is_root(), "root (reading any cgroup)") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let ws = home.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let profile = home.path().join("small.yaml");
    std::fs::write(
        &profile,
        "extends: generic\nlimits:\n  pids: 64\n  memory: 512m\n  cpus: 1.5\n",
    )
    .unwrap();
    let store_url = format!("sqlite://{}", home.path().join("store.db").display());
    let agentctl = |args: &[&str]| {
        Command::new(binary())
            .args(["--store", &store_url])
            .args(args)
            .current_dir(&ws)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = agentctl(&[
        "run",
        "-d",
        "-q",
        "--backend",
        "vm",
        "--profile",
        &profile.to_string_lossy(),
        "--",
        "sleep",
        "120",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_string();
    let qemu = support::processes_with(&id)
        .into_iter()
        .find(|p| p.contains("qemu-system"))
        .and_then(|p| p.split(':').next().map(str::to_string))
        .expect("QEMU runs");
    let cgroups = std::fs::read_to_string(format!("/proc/{qemu}/cgroup")).unwrap();
    let v1 = |controller: &str| {
        cgroups.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| std::path::PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}")))
        })
    };
    // The guest: 512 MiB and 192 for its kernel; QEMU: 256 of its own and
    // 256 of TCG's code cache (this host has no usable KVM).
    let want_memory: u64 = (512 + 192 + 256 + 256) << 20;
    let read = |p: std::path::PathBuf| std::fs::read_to_string(&p).unwrap().trim().to_string();
    let dirs = match v1("memory") {
        Some(memory) => {
            assert!(
                memory.to_string_lossy().contains(&id),
                "QEMU is not in a cgroup of its session: {cgroups}"
            );
            assert_eq!(
                read(memory.join("memory.limit_in_bytes")),
                want_memory.to_string()
            );
            let pids = v1("pids").unwrap();
            assert_eq!(read(pids.join("pids.max")), "130");
            let cpu = v1("cpu").unwrap();
            assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "150000");
            vec![memory, pids, cpu]
        }
        None => {
            let path = cgroups
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("a cgroup v2 entry");
            let dir = std::path::PathBuf::from(format!("/sys/fs/cgroup{path}"));
            assert_eq!(read(dir.join("memory.max")), want_memory.to_string());
            assert_eq!(read(dir.join("pids.max")), "130");
            assert_eq!(read(dir.join("cpu.max")), "150000 100000");
            vec![dir]
        }
    };
    let o = agentctl(&["stop", "-t", "1", &id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = agentctl(&["rm", &id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for d in dirs {
        assert!(
            !d.exists(),
            "QEMU's cgroup outlived the session: {}",
            d.display()
        );
    }
}

/// A networked VM's resolver is bound over /etc/resolv.conf even where
/// that is a symlink (systemd-resolved's hosts, many images): the mount
/// goes over the link itself, which is never followed. The image here is
/// made for the test: busybox, and /etc/resolv.conf a link to a file it
/// does not have.
#[test]
fn a_networked_vm_gets_its_resolver_over_a_symlinked_resolv_conf() {
    if !vm_available()
        || !require(
            support::docker_available(),
            "a Docker engine (docker import, save)",
        )
        || !require(
            std::path::Path::new("/bin/busybox").exists(),
            "busybox-static (`apt-get install busybox-static`)",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    let script = r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    def add_dir(name):
        i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
    def add_link(name, target):
        i = tarfile.TarInfo(name); i.type = tarfile.SYMTYPE; i.linkname = target; t.addfile(i)
    for d in ["bin", "etc", "run", "tmp", "root", "proc", "dev", "sys"]:
        add_dir(d)
    t.add("/bin/busybox", "bin/busybox")
    for tool in ["sh", "cat", "readlink"]:
        add_link("bin/" + tool, "busybox")
    add_link("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")
    i = tarfile.TarInfo("etc/passwd"); body = b"root:x:0:0:root:/root:/bin/sh\n"
    i.size = len(body); i.mode = 0o644; t.addfile(i, io.BytesIO(body))
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let tag = format!("agentctl-test/resolv-link:{}", std::process::id());
    let o = Command::new("docker")
        .args(["import", "-c", "ENV PATH=/bin"])
        .arg(&rootfs)
        .arg(&tag)
        .output()
        .unwrap();
    assert!(o.status.success(), "docker import: {}", text(&o.stderr));
    let archive = dir.path().join("image.tar");
    let o = Command::new("docker")
        .args(["save", "-o"])
        .arg(&archive)
        .arg(&tag)
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", &tag]).output();
    assert!(o.status.success(), "docker save: {}", text(&o.stderr));
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let o = Command::new(binary())
        .args(["--store", "none", "run", "-q", "--backend", "vm"])
        .args(["--network", "bridge", "--image"])
        .arg(format!("docker-archive:{}", archive.display()))
        .args([
            "--",
            "sh",
            "-c",
            "readlink /etc/resolv.conf; cat /etc/resolv.conf",
        ])
        .env("AGENTCTL_IMAGES", dir.path().join("images"))
        .current_dir(&ws)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out} {}", text(&o.stderr));
    assert!(
        out.contains("nameserver 10.0.2.3"),
        "the guest has no resolver: {out}"
    );
}

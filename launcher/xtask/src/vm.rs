//! `cargo xtask bench-vm`: the vm backend's time to exit against bare
//! QEMU, in one run, interleaved.
//!
//! Both boot the same kernel with the same initramfs (the one agentctl
//! writes: its guest agent and the kernel's modules) on the same QEMU
//! command line (the one `vmm::qemu` builds, with the same memory, vCPUs
//! and acceleration). Bare QEMU's kernel command line asks the agent to
//! power off as soon as it is up (`agentctl.bench=poweroff`): the VMM's
//! own cost. `agentctl run --backend vm -- true` adds what agentctl does
//! on top: planning, the scan, the host-built tree, the guest protocol,
//! the command, the power-off. The helper's boot phases
//! (`AGENTCTL_VM_PHASES`) say where the time goes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::Ctx;
use crate::stats::Summary;

/// Goal (issue 16): agentctl's time to exit at most this times bare QEMU's.
pub const GOAL_RATIO: f64 = 1.3;
pub const DEFAULT_RUNS: usize = 10;

pub struct VmReport {
    pub bare_ms: Vec<f64>,
    pub agentctl_ms: Vec<f64>,
    /// One JSON object per agentctl run (the helper's phases).
    pub phases: Vec<Value>,
    pub kernel: String,
    pub accel: String,
    pub memory_mib: u32,
    pub vcpus: u32,
}

pub fn bench_vm(ctx: &Ctx, runs: usize) -> Result<VmReport> {
    let kernel = backend_vm::guest::find_kernel(&backend_vm::guest::search_roots())
        .map_err(anyhow::Error::msg)
        .context("a guest kernel (set AGENTCTL_VM_KERNEL_DIR)")?;
    let (accel, _) = vmm::Probe::host()
        .choose(vmm::AccelChoice::Auto)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let work = tempfile::tempdir()?;
    let ws = work.path().join("ws");
    std::fs::create_dir(&ws)?;
    std::fs::write(ws.join("README"), "bench\n")?;
    let phases_file = work.path().join("phases.jsonl");

    // One agentctl run first (not timed): the memory and vCPUs its plan
    // gives the VM, which bare QEMU then gets too.
    agentctl_run(ctx, &ws, &phases_file)?;
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&phases_file)?
            .lines()
            .next()
            .context("no phases written")?,
    )?;
    std::fs::remove_file(&phases_file)?;
    let memory_mib = first["memory_mib"].as_u64().context("memory_mib")? as u32;
    let vcpus = first["vcpus"].as_u64().context("vcpus")? as u32;

    let bare_dir = work.path().join("bare");
    std::fs::create_dir(&bare_dir)?;
    let share = bare_dir.join("root");
    std::fs::create_dir(&share)?;
    let initrd = bare_dir.join("initrd.cpio");
    backend_vm::guest::write_initramfs(&kernel, &initrd, false).map_err(anyhow::Error::msg)?;

    let (mut bare_ms, mut agentctl_ms) = (Vec::new(), Vec::new());
    for i in 0..runs {
        eprintln!("xtask: bench-vm run {}/{runs}", i + 1);
        bare_ms.push(bare_run(
            &bare_dir, &kernel, &initrd, accel, memory_mib, vcpus,
        )?);
        agentctl_ms.push(agentctl_run(ctx, &ws, &phases_file)?);
    }
    let phases = std::fs::read_to_string(&phases_file)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()?;
    ensure!(
        phases.len() == runs,
        "{} phase records for {runs} runs",
        phases.len()
    );
    Ok(VmReport {
        bare_ms,
        agentctl_ms,
        phases,
        kernel: kernel.version,
        accel: match accel {
            vmm::Accel::Kvm => "KVM".into(),
            vmm::Accel::Tcg => "TCG".into(),
        },
        memory_mib,
        vcpus,
    })
}

fn agentctl_run(ctx: &Ctx, ws: &Path, phases: &Path) -> Result<f64> {
    let t = Instant::now();
    let o = Command::new(&ctx.agentctl)
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
        .env(backend_vm::helper::PHASES_ENV, phases)
        .current_dir(ws)
        .stdin(Stdio::null())
        .output()?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        o.status.success(),
        "agentctl run --backend vm failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(ms)
}

fn bare_run(
    dir: &Path,
    kernel: &backend_vm::guest::Kernel,
    initrd: &Path,
    accel: vmm::Accel,
    memory_mib: u32,
    vcpus: u32,
) -> Result<f64> {
    use vmm::VmmDriver;
    let console = dir.join("console.log");
    let _ = std::fs::remove_file(&console);
    for s in ["agent.sock", "qmp.sock"] {
        let _ = std::fs::remove_file(dir.join(s));
    }
    let cfg = vmm::VmConfig {
        kernel: kernel.vmlinuz.clone(),
        initrd: initrd.to_path_buf(),
        cmdline: "quiet panic=-1 agentctl.bench=poweroff".into(),
        memory_mib,
        vcpus,
        accel,
        shares: vec![vmm::Share {
            tag: vm_guest::ROOT_TAG.into(),
            host_path: dir.join("root"),
            read_only: false,
        }],
        agent_socket: dir.join("agent.sock"),
        control_socket: dir.join("qmp.sock"),
        console_log: console.clone(),
        user_net: false,
    };
    let argv = vmm::qemu::Qemu::default().command(&cfg)?;
    let t = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    ensure!(status.success(), "bare QEMU failed: {status}");
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    ensure!(
        log.contains(vm_guest::READY_MARK),
        "bare QEMU's guest never reached the marker: {log}"
    );
    Ok(ms)
}

fn median_of(phases: &[Value], key: &str) -> f64 {
    let v: Vec<f64> = phases.iter().filter_map(|p| p[key].as_f64()).collect();
    Summary::from_millis(&v).map_or(f64::NAN, |s| s.median)
}

pub fn section(r: &VmReport, cmd: &str) -> Result<String> {
    use std::fmt::Write as _;
    let bare = Summary::from_millis(&r.bare_ms)?;
    let ours = Summary::from_millis(&r.agentctl_ms)?;
    let ratio = ours.median / bare.median;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## The microVM backend: `agentctl run --backend vm -- true` against bare QEMU\n"
    );
    let _ = writeln!(
        o,
        "`{cmd}`: {} runs of each, interleaved. Both boot Debian's kernel {} with the initramfs agentctl writes, on the QEMU command line `vmm::qemu` builds (q35, {}, {} MiB, {} vCPU, no NIC, the 9p share, the agent's port). Bare QEMU's guest agent powers off as soon as it is up (`agentctl.bench=poweroff`); agentctl's runs `true` in the session and then powers off. Times from spawn to exit, in ms.\n",
        ours.runs, r.kernel, r.accel, r.memory_mib, r.vcpus
    );
    let _ = writeln!(o, "| | min | median | p95 |");
    let _ = writeln!(o, "|---|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| bare QEMU, boot to the marker and off | {:.0} | {:.0} | {:.0} |",
        bare.min, bare.median, bare.p95
    );
    let _ = writeln!(
        o,
        "| `agentctl run --backend vm -- true` | {:.0} | {:.0} | {:.0} |",
        ours.min, ours.median, ours.p95
    );
    let _ = writeln!(
        o,
        "\nRatio of medians: **{ratio:.2}×** (goal ≤ {GOAL_RATIO}×: {}).\n",
        if ratio <= GOAL_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = writeln!(
        o,
        "Where the time goes (medians over agentctl's runs, ms since the session helper started; `AGENTCTL_VM_PHASES`):\n"
    );
    let _ = writeln!(o, "| phase | at | step |");
    let _ = writeln!(o, "|---|---:|---:|");
    let keys = [
        (
            "tree built, QEMU's cgroup made and joined, QEMU started",
            "qemu_started_ms",
        ),
        ("agent socket answers", "connected_ms"),
        ("guest agent ready (kernel booted, modules, 9p)", "ready_ms"),
        ("command started", "command_started_ms"),
        ("command ended", "command_exited_ms"),
        ("QEMU gone (guest powered off)", "qemu_gone_ms"),
    ];
    let mut prev = 0.0;
    for (what, key) in keys {
        let at = median_of(&r.phases, key);
        let _ = writeln!(o, "| {what} | {at:.0} | {:.0} |", at - prev);
        prev = at;
    }
    let _ = writeln!(
        o,
        "\nThe guest kernel's own uptime when its agent was ready: median {:.0} ms (the rest of \"guest agent ready\" is QEMU's firmware and loading the kernel).\n",
        median_of(&r.phases, "guest_uptime_ms")
    );
    Ok(o)
}

//! What the commands share: the lifecycle on this host, a request from
//! the command line, and how times and counts are printed. A leaf: it
//! uses no other command.

use std::sync::Arc;

use lifecycle::{HostBackends, Lifecycle, SessionRequest, StoreLocation};

use crate::cli::{BackendKind, PolicyArgs};

/// The lifecycle over `store`, with the real backends of this host.
pub fn lifecycle(store: StoreLocation) -> Lifecycle {
    Lifecycle::on_host(store, host_backends())
}

/// The real backends, with progress bars for image pulls on a terminal.
pub fn host_backends() -> HostBackends {
    HostBackends {
        self_exe: lifecycle::backends::self_path(),
        images: lifecycle::backends::image_root(),
        progress: Arc::new(crate::progress::Bars::for_stderr),
    }
}

/// The session the command line asks for.
pub fn request(args: &PolicyArgs, command: Vec<String>) -> SessionRequest {
    SessionRequest {
        profile: args.profile.clone(),
        workspace: args.workspace.clone(),
        command,
        network: args.network.map(Into::into),
        mounts: args.mounts.clone(),
        env: args.env.clone(),
        image: args.image.clone(),
        allow_home_workspace: args.allow_home_workspace,
    }
}

pub fn backend_kind(b: BackendKind) -> store::Backend {
    match b {
        BackendKind::Native => store::Backend::Native,
        BackendKind::Docker => store::Backend::Docker,
    }
}

pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A UTC timestamp, from unix milliseconds.
pub fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::when(0), "1970-01-01 00:00:00");
        assert_eq!(super::when(1_763_769_600_000), "2025-11-22 00:00:00");
    }
}

//! The sandbox's seccomp profile in the JSON form the Docker Engine takes
//! in `--security-opt seccomp=...`. Pure.

use policy::seccomp::{Action, Op, SeccompProfile};
use serde_json::{Value, json};

pub fn docker_json(profile: &SeccompProfile) -> String {
    let arch = if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else {
        "SCMP_ARCH_X86_64"
    };
    let syscalls: Vec<Value> = profile
        .rules
        .iter()
        .map(|r| {
            let mut rule = json!({ "names": r.names });
            match r.action {
                Action::Allow => rule["action"] = "SCMP_ACT_ALLOW".into(),
                Action::Errno(e) => {
                    rule["action"] = "SCMP_ACT_ERRNO".into();
                    rule["errnoRet"] = e.into();
                }
            }
            if !r.args.is_empty() {
                rule["args"] = r
                    .args
                    .iter()
                    .map(|a| {
                        // Docker hands the profile to runc, which reads a
                        // masked comparison's mask from `value` and its
                        // datum from `valueTwo` (libseccomp's order).
                        let (value, value_two, op) = match a.op {
                            Op::Eq => (a.value, 0, "SCMP_CMP_EQ"),
                            Op::Ne => (a.value, 0, "SCMP_CMP_NE"),
                            Op::Lt => (a.value, 0, "SCMP_CMP_LT"),
                            Op::MaskedEq { mask } => (mask, a.value, "SCMP_CMP_MASKED_EQ"),
                        };
                        json!({
                            "index": a.index,
                            "value": value,
                            "valueTwo": value_two,
                            "op": op,
                        })
                    })
                    .collect();
            }
            rule
        })
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": profile.default_errno,
        "architectures": [arch],
        "syscalls": syscalls,
    })
    .to_string()
}

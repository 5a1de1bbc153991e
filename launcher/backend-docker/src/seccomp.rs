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
                        json!({
                            "index": a.index,
                            "value": a.value,
                            "valueTwo": 0,
                            "op": match a.op {
                                Op::Eq => "SCMP_CMP_EQ",
                                Op::Ne => "SCMP_CMP_NE",
                                Op::Lt => "SCMP_CMP_LT",
                            },
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

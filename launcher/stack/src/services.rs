//! What runs in each role, as compose/compose.yaml declares it (a test
//! holds the two together).

/// A role of `agentctl up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Usr,
    Dev,
    Ops,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "usr" => Some(Role::Usr),
            "dev" => Some(Role::Dev),
            "ops" => Some(Role::Ops),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Usr => "usr",
            Role::Dev => "dev",
            Role::Ops => "ops",
        }
    }
}

/// Which log collector `ops` runs (`AGENTCTL_LOG_COLLECTOR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collector {
    /// Grafana Alloy, by image.
    Alloy,
    /// The stand-in from the local base (images/log-standin).
    Standin,
    None,
}

impl Collector {
    pub fn parse(s: &str) -> Option<Collector> {
        match s {
            "alloy" => Some(Collector::Alloy),
            "standin" | "log-standin" => Some(Collector::Standin),
            "none" => Some(Collector::None),
            _ => None,
        }
    }
}

pub struct Service {
    pub name: &'static str,
    /// The compose profiles that run it.
    pub profiles: &'static [&'static str],
    /// The `.env` key of the port it publishes, and its default.
    pub port: Option<(&'static str, u16)>,
}

pub const SERVICES: &[Service] = &[
    Service {
        name: "postgres",
        profiles: &["usr", "dev", "ops"],
        port: Some(("AGENTCTL_POSTGRES_PORT", 7879)),
    },
    Service {
        name: "dashboard",
        profiles: &["usr", "dev", "ops"],
        port: Some(("AGENTCTL_DASHBOARD_PORT", 7878)),
    },
    Service {
        name: "docker-proxy",
        profiles: &["dev", "ops"],
        port: None,
    },
    Service {
        name: "worker",
        profiles: &["dev", "ops"],
        port: None,
    },
    Service {
        name: "prometheus",
        profiles: &["ops"],
        port: Some(("AGENTCTL_PROMETHEUS_PORT", 9090)),
    },
    Service {
        name: "logs-proxy",
        profiles: &["ops"],
        port: None,
    },
    Service {
        name: "alloy",
        profiles: &["alloy"],
        port: None,
    },
    Service {
        name: "log-standin",
        profiles: &["log-standin"],
        port: None,
    },
];

/// Every profile of the file: `down` names them all, so that nothing of
/// the stack is left whatever role brought it up.
pub const ALL_PROFILES: &[&str] = &["usr", "dev", "ops", "alloy", "log-standin"];

/// The profiles `up ROLE` activates.
pub fn profiles(role: Role, collector: Collector) -> Vec<&'static str> {
    let mut v = vec![role.name()];
    if role == Role::Ops {
        match collector {
            Collector::Alloy => v.push("alloy"),
            Collector::Standin => v.push("log-standin"),
            Collector::None => {}
        }
    }
    v
}

/// The services `up ROLE` runs, in the file's order.
pub fn of(role: Role, collector: Collector) -> Vec<&'static Service> {
    let active = profiles(role, collector);
    SERVICES
        .iter()
        .filter(|s| s.profiles.iter().any(|p| active.contains(p)))
        .collect()
}

pub fn known(name: &str) -> bool {
    SERVICES.iter().any(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_takes_the_one_below() {
        let names = |r, c| of(r, c).iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(Role::Usr, Collector::Alloy),
            ["postgres", "dashboard"]
        );
        assert_eq!(
            names(Role::Dev, Collector::Alloy),
            ["postgres", "dashboard", "docker-proxy", "worker"]
        );
        assert_eq!(
            names(Role::Ops, Collector::Standin),
            [
                "postgres",
                "dashboard",
                "docker-proxy",
                "worker",
                "prometheus",
                "logs-proxy",
                "log-standin"
            ]
        );
        assert!(names(Role::Ops, Collector::Alloy).contains(&"alloy"));
        assert!(
            !names(Role::Ops, Collector::None)
                .iter()
                .any(|n| *n == "alloy" || *n == "log-standin")
        );
    }
}

//! The closed sets of values Docker reports for a swarm node (its role, availability and
//! status, and the local node's swarm state), typed so that a misspelt `"drian"` cannot compile; each prints as Docker spells it.

use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// Declares a closed enum spelt in lowercase by Docker, with `as_str`, `Display` and `FromStr`.
macro_rules! docker_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("`{s}` is not one of {}", all.join(", "))
                })
            }
        }
    };
}

docker_enum! {
    /// A node's role in the swarm (`Spec.Role`).
    NodeRole {
        Manager = "manager",
        #[default]
        Worker = "worker",
    }
}

impl NodeRole {
    /// The role the inventory gives a swarm node: manager when it says so, else worker.
    pub fn of(manager: bool) -> Self {
        if manager {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        }
    }
}

docker_enum! {
    /// Whether the scheduler may place tasks on a node (`Spec.Availability`).
    Availability {
        #[default]
        Active = "active",
        Pause = "pause",
        Drain = "drain",
    }
}

docker_enum! {
    /// A node's status as the managers see it (`Status.State`).
    NodeState {
        #[default]
        Unknown = "unknown",
        Down = "down",
        Ready = "ready",
        Disconnected = "disconnected",
    }
}

docker_enum! {
    /// Where the local node stands towards a swarm (`docker info` `.Swarm.LocalNodeState`).
    LocalNodeState {
        /// In no swarm (Docker leaves the field empty before swarm mode was ever used).
        #[default]
        #[serde(alias = "")]
        Inactive = "inactive",
        Pending = "pending",
        Active = "active",
        Error = "error",
        /// Autolock: the node waits for its unlock key after a restart.
        Locked = "locked",
    }
}

docker_enum! {
    /// Whether the other managers reach a manager (`ManagerStatus.Reachability`).
    Reachability {
        #[default]
        Unknown = "unknown",
        Unreachable = "unreachable",
        Reachable = "reachable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_and_parse_as_docker_spells_them() {
        assert_eq!(Availability::Drain.to_string(), "drain");
        assert_eq!("pause".parse(), Ok(Availability::Pause));
        assert_eq!(NodeRole::Manager.as_str(), "manager");
        assert_eq!(NodeRole::of(false), NodeRole::Worker);
        assert_eq!("disconnected".parse(), Ok(NodeState::Disconnected));
        assert_eq!(
            "drian".parse::<Availability>(),
            Err("`drian` is not one of active, pause, drain".to_string())
        );
        let n: NodeRole = serde_json::from_str("\"worker\"").unwrap();
        assert_eq!(n, NodeRole::Worker);
        assert_eq!(NodeState::default(), NodeState::Unknown);
        let s: LocalNodeState = serde_json::from_str("\"\"").unwrap();
        assert_eq!(s, LocalNodeState::Inactive);
    }
}

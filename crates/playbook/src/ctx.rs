//! What step constructors get (the host, the inventory, a renderer) and what they return
//! (a step or a parameter error): the one module every step imports.

use provision_engine::inventory::{Host, Inventory};
use provision_engine::step::{HostStep, Step};
use provision_engine::template::TemplateError;
use std::path::Path;

/// What a per-host step constructor gets besides its (already rendered) parameters.
pub struct BuildCtx<'a> {
    pub host: &'a Host,
    /// The whole inventory: other hosts' roles and private addresses (NFS exports,
    /// load balancer backends).
    pub inventory: &'a Inventory,
    /// Directory of the playbook file: `src` paths of `template` and `copy` are relative to it.
    pub base_dir: &'a Path,
    /// Renders a template body (named for errors) with this host's context
    /// (`vars`, `host`, `secrets`).
    pub render: &'a dyn Fn(&str, &str) -> Result<String, TemplateError>,
    /// True when `text` contains a secret value (files holding secrets must be 0600
    /// and their diffs are redacted).
    pub has_secret: &'a dyn Fn(&str) -> bool,
    /// Reports a warning about a parameter (its key, the message): check-config and run show
    /// it at the parameter's line and go on.
    pub warn: &'a dyn Fn(&str, String),
}

/// A bad parameter: which key, what is wrong, what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub key: Option<String>,
    pub message: String,
    pub help: Option<String>,
}

impl ParamError {
    pub fn new(key: Option<&str>, message: impl Into<String>) -> Self {
        ParamError {
            key: key.map(str::to_string),
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Builds one host's instance of a step from its rendered `with` table.
pub type HostStepCtor = fn(&toml::Table, &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError>;

/// What a cluster step constructor gets: the hosts its entry selects and a
/// renderer over the cluster-wide context (`vars`, `hosts`, `cluster`, `secrets`).
pub struct ClusterCtx<'a> {
    pub title: &'a str,
    pub inventory: &'a Inventory,
    /// The selected hosts, in inventory order.
    pub hosts: Vec<&'a Host>,
    pub base_dir: &'a Path,
    pub render: &'a dyn Fn(&str, &str) -> Result<String, TemplateError>,
    pub has_secret: &'a dyn Fn(&str) -> bool,
    /// Tells the compiler something about the swarm this step shapes (at a parameter's key), so
    /// that conflicts between steps are caught before any host is contacted.
    pub claim: &'a dyn Fn(&str, Claim),
}

/// What a cluster step says about the swarm it shapes. One step alone cannot see a conflict
/// (one drains the managers, another places a service on them only); the compiler compares
/// the claims of all steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Every manager is drained: no task runs on a manager.
    DrainsManagers,
    /// A stack's service whose placement allows managers only.
    ManagerOnly {
        stack: String,
        service: String,
        constraint: String,
    },
}

/// Builds a step that plans over several hosts' facts at once.
pub type ClusterStepCtor = fn(&toml::Table, &ClusterCtx<'_>) -> Result<Box<dyn Step>, ParamError>;

/// Deserializes a `with` table into a step's parameter struct, turning serde's
/// message into a ParamError naming the key (unknown keys get a suggestion).
pub fn params<T: serde::de::DeserializeOwned>(
    with: &toml::Table,
    known: &[&str],
) -> Result<T, ParamError> {
    for key in with.keys() {
        if !known.contains(&key.as_str()) {
            let mut e = ParamError::new(Some(key), format!("unknown parameter `{key}`"));
            e.help = Some(
                match provision_engine::diagnostic::did_you_mean(key, known) {
                    Some(s) => format!("did you mean `{s}`? (known: {})", known.join(", ")),
                    None => format!("known parameters: {}", known.join(", ")),
                },
            );
            return Err(e);
        }
    }
    toml::Value::Table(with.clone())
        .try_into::<T>()
        .map_err(|e| {
            let msg = e.message().to_string();
            let key = known
                .iter()
                .find(|k| msg.contains(&format!("`{k}`")))
                .map(|k| k.to_string());
            ParamError {
                key,
                message: msg,
                help: None,
            }
        })
}

/// A one-host inventory (`web-1`, worker, 10.0.0.5) for unit tests of steps.
pub fn test_inventory() -> Inventory {
    let text = "name = \"test\"\n[[hosts]]\nname = \"web-1\"\naddress = \"10.0.0.5\"\nprivate_ip = \"10.0.0.5\"\nroles = [\"worker\"]\n";
    Inventory::parse(text, Path::new("test.toml"), &Default::default())
        .expect("the test inventory is valid")
}

/// What a constructor builds.
#[derive(Clone, Copy)]
pub enum Ctor {
    /// A per-host step.
    Host(HostStepCtor),
    /// A step that plans over several hosts' facts at once.
    Cluster(ClusterStepCtor),
}

/// A built-in step as a playbook names it (`use = "NAME"`). Each step's file registers its own
/// (`inventory::submit!`), so adding a step is that file plus its `mod` line in `steps/mod.rs`;
/// `registry.rs` looks them up.
pub struct BuiltIn {
    pub name: &'static str,
    pub ctor: Ctor,
    /// Parameters whose values never reach a command line: they travel on stdin or as the
    /// content of an uploaded file. Every other parameter may end up in a command's argv,
    /// which every user of the host can read (`ps`), so a secret there is refused by
    /// check-config.
    pub stdin_params: &'static [&'static str],
}

impl BuiltIn {
    pub const fn host(name: &'static str, ctor: HostStepCtor) -> Self {
        BuiltIn {
            name,
            ctor: Ctor::Host(ctor),
            stdin_params: &[],
        }
    }

    pub const fn cluster(name: &'static str, ctor: ClusterStepCtor) -> Self {
        BuiltIn {
            name,
            ctor: Ctor::Cluster(ctor),
            stdin_params: &[],
        }
    }

    pub const fn stdin_params(mut self, params: &'static [&'static str]) -> Self {
        self.stdin_params = params;
        self
    }
}

inventory::collect!(BuiltIn);

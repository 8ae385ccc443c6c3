//! One file per built-in step, named for its intent (each registers its own name and
//! constructor: `ctx::BuiltIn`), and the modules they share (facts, parsers, builders).

pub mod apt;
pub mod assert;
pub mod authorized_key;
pub mod command;
pub mod copy;
pub mod directory;
pub mod docker;
pub mod docker_daemon;
pub mod docker_engine;
pub mod docker_repo;
pub mod docker_users;
pub mod fail;
pub mod file;
pub mod file_state;
pub mod fixtures;
pub mod host_facts;
pub mod hostname;
pub mod line;
pub mod link;
pub mod load_balancer;
pub mod nfs_mount;
pub mod nfs_server;
pub mod node_availability;
pub mod node_labels;
pub mod service;
pub mod stack_deploy;
pub mod stack_release;
pub mod swap;
pub mod swarm_facts;
pub mod swarm_init;
pub mod swarm_join;
pub mod system_files;
pub mod systemd;
pub mod template;
pub mod user;
pub mod util;
pub mod wait_for;

/// What step unit tests share: a BuildCtx for host `web-1` (vars.ip =
/// 10.0.0.5, secret `db_password`), TOML parsing, error unwrapping.
#[cfg(test)]
pub(crate) mod testing {
    use crate::ctx::{BuildCtx, ParamError, test_inventory};
    use provision_engine::inventory::Host;
    use provision_engine::step::HostStep;
    use std::path::Path;

    pub const SECRET: &str = "s3cr3t-pw";

    pub fn with_ctx<R>(base_dir: &Path, f: impl FnOnce(&BuildCtx<'_>) -> R) -> R {
        let host = Host {
            name: "web-1".into(),
            address: "10.0.0.5".into(),
            port: None,
            user: None,
            become_sudo: true,
            private_ip: None,
            roles: vec![],
            labels: Default::default(),
            vars: Default::default(),
            line: 1,
        };
        let env = provision_engine::template::environment();
        let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
            "host": {"name": "web-1"}, "vars": {"ip": "10.0.0.5"}, "secrets": {"db_password": SECRET}
        })));
        let render =
            |name: &str, body: &str| provision_engine::template::render(&env, name, body, &ctx);
        let has_secret = |t: &str| t.contains(SECRET);
        let inventory = test_inventory();
        f(&BuildCtx {
            host: &host,
            inventory: &inventory,
            base_dir,
            render: &render,
            has_secret: &has_secret,
            warn: &|_, _| {},
        })
    }

    pub fn table(s: &str) -> toml::Table {
        toml::from_str(s).expect("test TOML parses")
    }

    /// Builds in a context whose base_dir is the crate (no files needed).
    pub fn build(
        ctor: crate::ctx::HostStepCtor,
        with: &str,
    ) -> Result<Box<dyn HostStep>, ParamError> {
        with_ctx(Path::new(env!("CARGO_MANIFEST_DIR")), |ctx| {
            ctor(&table(with), ctx)
        })
    }

    pub fn build_err(r: Result<Box<dyn HostStep>, ParamError>) -> ParamError {
        match r {
            Ok(_) => panic!("expected a parameter error"),
            Err(e) => e,
        }
    }
}

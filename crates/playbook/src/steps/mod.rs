//! One file per built-in step, named for its intent, and the table that makes
//! them available to playbooks.

use crate::ctx::{ClusterStepCtor, HostStepCtor};

/// Declares each step's module and puts its `build` in the table under the module's name, so a
/// new step is one file plus one name here.
macro_rules! steps {
    (host: [$($host:ident),* $(,)?], cluster: [$($cluster:ident),* $(,)?], helpers: [$($helper:ident),* $(,)?] $(,)?) => {
        $(pub mod $host;)*
        $(pub mod $cluster;)*
        $(pub mod $helper;)*

        /// General-purpose per-host steps, by the name a playbook `uses`.
        pub const HOST_STEPS: &[(&str, HostStepCtor)] = &[$((stringify!($host), $host::build)),*];

        /// Steps that decide over several hosts at once (the swarm's membership, labels
        /// and stacks), built once per playbook entry.
        pub const CLUSTER_STEPS: &[(&str, ClusterStepCtor)] =
            &[$((stringify!($cluster), $cluster::build)),*];
    };
}

steps! {
    host: [
        command,
        template,
        copy,
        apt,
        service,
        line,
        directory,
        user,
        swap,
        hostname,
        docker,
        nfs_server,
        nfs_mount,
        load_balancer,
        link,
    ],
    cluster: [swarm_init, swarm_join, node_labels, node_availability, stack_deploy],
    // Modules the steps share (facts, parsers, builders); not steps themselves.
    helpers: [
        file,
        swarm_facts,
        stack_release,
        util,
        systemd,
        system_files,
        fixtures,
        docker_repo,
        docker_engine,
        docker_daemon,
        docker_users,
    ],
}

/// Parameters whose values never reach a command line: they travel on stdin or as the content
/// of an uploaded file. Every other parameter may end up in a command's argv, which every user
/// of the host can read (`ps`), so a secret there is refused by check-config.
pub const STDIN_PARAMS: &[(&str, &[&str])] = &[
    ("command", &["stdin"]),
    ("copy", &["content"]),
    ("line", &["line"]),
];

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

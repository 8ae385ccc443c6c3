//! The built-in swarm playbook and every file it references (both stacks' compose and `.env`
//! templates; HAProxy's configuration is embedded in its step), compiled into the binary and
//! written next to the cluster file (`.provision/builtin/`) by `run` when the inventory names
//! no playbook, so that users can read exactly what runs. `check-config` writes nothing in
//! the cluster's directory: it reads them from a private temporary directory.

use std::path::{Path, PathBuf};

/// (path relative to the builtin directory, content)
pub const FILES: &[(&str, &str)] = &[
    (
        "playbooks/swarm.toml",
        include_str!("../../../playbooks/swarm.toml"),
    ),
    (
        "templates/demo/docker-compose.yml",
        include_str!("../../../templates/demo/docker-compose.yml"),
    ),
    (
        "templates/demo/.env",
        include_str!("../../../templates/demo/.env"),
    ),
    (
        "templates/appwrite/docker-compose.yml",
        include_str!("../../../templates/appwrite/docker-compose.yml"),
    ),
    (
        "templates/appwrite/.env",
        include_str!("../../../templates/appwrite/.env"),
    ),
    (
        "templates/appwrite/traefik-tls.yml",
        include_str!("../../../templates/appwrite/traefik-tls.yml"),
    ),
    (
        "templates/appwrite/lab-images.sh",
        include_str!("../../../templates/appwrite/lab-images.sh"),
    ),
    (
        "templates/appwrite/README.md",
        include_str!("../../../templates/appwrite/README.md"),
    ),
];

/// What a playbook includes as `include = "builtin:NAME"`: the swarm playbook (the only one).
pub const NAMES: &[&str] = &["swarm"];

/// Writes the built-in files under `cluster_dir/.provision/builtin` (only those
/// whose content differs) and returns the playbook's path.
pub fn materialize(cluster_dir: &Path) -> std::io::Result<PathBuf> {
    let root = crate::state_dir::ensure(cluster_dir, "builtin")?;
    write_into(&root)
}

/// Writes the built-in files under `root` (only those whose content differs) and returns the
/// playbook's path.
pub fn write_into(root: &Path) -> std::io::Result<PathBuf> {
    for (rel, content) in FILES {
        let path = root.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(*content) {
            continue;
        }
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(root.join("playbooks/swarm.toml"))
}

/// Names files of a scratch copy (`root`) as the built-in files they are (`<built-in>/...`),
/// so that a diagnostic does not point into a directory removed when the command ends.
pub fn name_builtin_files(
    mut e: provision_engine::diagnostic::ConfigError,
    root: &Path,
) -> provision_engine::diagnostic::ConfigError {
    for d in &mut e.diagnostics {
        if let Ok(rel) = d.file.strip_prefix(root) {
            d.file = Path::new("<built-in>").join(rel);
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_engine::inventory::{Inventory, InventoryRules};
    use provision_engine::playbook_file::PlaybookFile;

    /// Every file the built-in playbook references is embedded: from an empty directory it
    /// compiles for both stacks (the compose and `.env` files are read and rendered then).
    #[test]
    fn the_builtin_playbook_resolves_every_file_from_an_empty_directory() {
        let empty = tempfile::tempdir().unwrap();
        let pb_path = write_into(empty.path()).unwrap();
        let pb = PlaybookFile::load(&pb_path, &provision_playbook::known_steps()).unwrap();
        let rules = InventoryRules {
            require_manager: true,
            require_private_ip: true,
        };
        let inventory = include_str!("../../../inventories/minimal.toml");
        let appwrite: toml::Table = toml::from_str(
            "[appwrite]\nopenssl_key = \"k-0123456789abcdef\"\ndb_pass = \"db-pass-123456\"\ndb_root_pass = \"db-root-123456\"\nexecutor_secret = \"exec-secret-123456\"\n",
        )
        .unwrap();
        for (stack, secrets) in [("demo", toml::Table::new()), ("appwrite", appwrite)] {
            let text = format!("{inventory}\n[vars]\nstack = \"{stack}\"\n");
            let inv = Inventory::parse(&text, &empty.path().join("cluster.toml"), &rules).unwrap();
            let none = |_: &str| false;
            let view = provision_playbook::compile::SecretsView {
                table: &secrets,
                contains_secret: &none,
            };
            if let Err(e) = provision_playbook::compile(&inv, &pb, &view) {
                panic!("{stack}: {:#?}", e.diagnostics);
            }
        }
    }

    /// Every step of the built-in playbook is tagged with the tags the README documents, so
    /// `--tags docker` and the like reach every part of it; the vars check always runs.
    /// Pipelined, the swarm playbook overlaps what needs nothing of each other (the NFS server
    /// with Docker on the nodes, HAProxy with the swarm and the stack) and keeps every
    /// cross-host need: the mounts after the server, joins after the init, the stack after
    /// every node's steps.
    #[test]
    fn the_builtin_playbook_pipelines_what_needs_nothing_of_each_other() {
        use provision_engine::pipeline::{StepDeps, Strategy, dependencies};
        let dir = tempfile::tempdir().unwrap();
        let pb_path = write_into(dir.path()).unwrap();
        let pb = PlaybookFile::load(&pb_path, &provision_playbook::known_steps()).unwrap();
        assert_eq!(pb.strategy, Strategy::Pipelined);
        let rules = InventoryRules {
            require_manager: true,
            require_private_ip: true,
        };
        let production = include_str!("../../../inventories/production.toml")
            .replace("[vars]\n", "[vars]\nstack = \"demo\"\n");
        let inv = Inventory::parse(&production, &dir.path().join("cluster.toml"), &rules).unwrap();
        let none = |_: &str| false;
        let view = provision_playbook::compile::SecretsView {
            table: &toml::Table::new(),
            contains_secret: &none,
        };
        let compiled = provision_playbook::compile(&inv, &pb, &view).unwrap();
        let schedule = compiled.schedule(&pb);
        let deps: Vec<StepDeps> = compiled
            .steps
            .iter()
            .zip(&schedule.after)
            .map(|(s, a)| StepDeps::of(s.as_ref(), a.clone()))
            .collect();
        let graph = dependencies(schedule.strategy, &deps);
        let titles: Vec<&str> = compiled.steps.iter().map(|s| s.title()).collect();
        let at = |t: &str| titles.iter().position(|x| *x == t).unwrap();
        let waits = |step: &str, on: &str| {
            let (i, j) = (at(step), at(on));
            graph[i].contains(&j)
        };
        assert!(!waits("nfs server", "docker engine"));
        assert!(waits("nfs share mounted", "nfs server"));
        assert!(waits("nfs share mounted", "docker engine"));
        assert!(waits(
            "appwrite directories on the share",
            "nfs share mounted"
        ));
        assert!(waits("swarm initialised", "docker engine"));
        assert!(waits("swarm members", "swarm initialised"));
        assert!(waits("node labels", "swarm members"));
        for before in [
            "demo image",
            "nfs share mounted",
            "swarm members",
            "node labels",
        ] {
            assert!(waits("stack deployed", before), "stack deployed, {before}");
        }
        assert!(waits("load balancer", "hostname"));
        for other in [
            "docker engine",
            "nfs server",
            "swarm initialised",
            "swarm members",
            "demo image",
            "stack deployed",
        ] {
            assert!(!waits("load balancer", other), "load balancer, {other}");
        }
    }

    #[test]
    fn the_builtin_playbook_is_tagged_by_part() {
        let dir = tempfile::tempdir().unwrap();
        let pb_path = write_into(dir.path()).unwrap();
        let pb = PlaybookFile::load(&pb_path, &provision_playbook::known_steps()).unwrap();
        let untagged: Vec<&str> = pb
            .steps
            .iter()
            .filter(|s| s.tags.is_empty())
            .map(|s| s.name.as_str())
            .collect();
        assert!(untagged.is_empty(), "untagged steps: {untagged:?}");
        let mut all: Vec<&str> = pb
            .steps
            .iter()
            .flat_map(|s| s.tags.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all,
            [
                "always", "base", "docker", "hostname", "labels", "lb", "nfs", "stack", "swap",
                "swarm", "tls"
            ]
        );
        let readme = include_str!("../../../README.md");
        for tag in &all {
            assert!(
                readme.contains(&format!("`{tag}`")),
                "{tag} is not in the README"
            );
        }
        let chosen = |tags: &[&str]| -> Vec<String> {
            let runs = provision_playbook::select::Selection {
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            }
            .decide(&pb)
            .unwrap();
            pb.steps
                .iter()
                .zip(runs)
                .filter(|(_, run)| *run)
                .map(|(s, _)| s.name.clone())
                .collect()
        };
        assert_eq!(chosen(&["docker"]), ["stack chosen", "docker engine"]);
        assert_eq!(
            chosen(&["nfs", "lb"]),
            [
                "stack chosen",
                "nfs server",
                "nfs share mounted",
                "load balancer"
            ]
        );
        assert_eq!(
            chosen(&["swarm"]),
            [
                "stack chosen",
                "swarm initialised",
                "swarm members",
                "node labels",
                "manager availability"
            ]
        );
    }

    /// `drain_managers = true` while the Appwrite executor is pinned to the first manager (the
    /// default): one error naming both steps; pinned to a worker, the same cluster compiles.
    #[test]
    fn drained_managers_and_a_service_only_managers_can_run_are_caught_together() {
        let dir = tempfile::tempdir().unwrap();
        let pb_path = write_into(dir.path()).unwrap();
        let pb = PlaybookFile::load(&pb_path, &provision_playbook::known_steps()).unwrap();
        let rules = InventoryRules {
            require_manager: true,
            require_private_ip: true,
        };
        let production = include_str!("../../../inventories/production.toml");
        let secrets: toml::Table = toml::from_str(
            "[appwrite]\nopenssl_key = \"k-0123456789abcdef\"\ndb_pass = \"db-pass-123456\"\ndb_root_pass = \"db-root-123456\"\nexecutor_secret = \"exec-secret-123456\"\n",
        )
        .unwrap();
        let none = |_: &str| false;
        let view = provision_playbook::compile::SecretsView {
            table: &secrets,
            contains_secret: &none,
        };
        let compile = |vars: &str| {
            let text = production.replace("[vars]\n", &format!("[vars]\n{vars}\n"));
            let inv = Inventory::parse(&text, &dir.path().join("cluster.toml"), &rules).unwrap();
            provision_playbook::compile(&inv, &pb, &view).map(|_| ())
        };
        let err = compile("drain_managers = true").unwrap_err();
        let msgs: Vec<String> = err.diagnostics.iter().map(|d| d.to_string()).collect();
        let text = std::fs::read_to_string(&pb_path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let line = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap() + 1;
        // Claims point at their parameter: Appwrite's compose file, the drain's `with`
        // (four lines below its step's name: use, hosts, tags, with).
        let (compose_line, drain_line) = (
            line("compose = \"../templates/appwrite/docker-compose.yml\""),
            line("name = \"manager availability\""),
        );
        assert!(lines[drain_line + 3].contains("drain_managers ="));
        assert_eq!(msgs.len(), 2, "{msgs:#?}");
        for (msg, service) in msgs
            .iter()
            .zip(["appwrite-worker-functions", "appwrite-executor"])
        {
            assert_eq!(
                msg.lines().next().unwrap(),
                format!(
                    "{}:{}:{}: error: step `stack deployed`: service `{service}` of stack `appwrite` can run only on a manager (`node.hostname==manager-1`), and step `manager availability` drains every manager (drain_managers = true, line {}): it would never start",
                    pb_path.display(),
                    compose_line,
                    1,
                    drain_line + 4,
                ),
                "{msg}"
            );
        }
        compile("drain_managers = true\nappwrite_functions_node = \"worker-1\"").unwrap();
        let err = compile("stack = \"apwrite\"").unwrap_err();
        let msg = err.diagnostics[0].to_string();
        assert!(
            msg.contains("vars.stack must be \"appwrite\" or \"demo\", not \"apwrite\": did you mean \"appwrite\"?"),
            "{msg}"
        );
        compile("drain_managers = false").unwrap();
    }

    const APPWRITE_SECRETS: &str = "[appwrite]\nopenssl_key = \"k-0123456789abcdef\"\ndb_pass = \"db-pass-123456\"\ndb_root_pass = \"db-root-123456\"\nexecutor_secret = \"exec-secret-123456\"\n";

    /// The built-in file `rel` rendered as the stack_deploy step renders it, for the production
    /// inventory with `vars` added to its [vars] and `labels` (`, key = "value"`) to worker-3's.
    fn render_production(rel: &str, vars: &str, labels: &str) -> Result<String, String> {
        let production = include_str!("../../../inventories/production.toml")
            .replace("[vars]\n", &format!("[vars]\n{vars}\n"))
            .replace(
                "private_ip = \"10.0.0.23\"\nroles = [\"worker\"]\nlabels = { zone = \"c\"",
                &format!("private_ip = \"10.0.0.23\"\nroles = [\"worker\"]\nlabels = {{ zone = \"c\"{labels}"),
            );
        let inv = Inventory::parse(
            &production,
            Path::new("/c/cluster.toml"),
            &Default::default(),
        )
        .unwrap();
        let secrets: toml::Table = toml::from_str(APPWRITE_SECRETS).unwrap();
        let ctx = provision_playbook::compile::cluster_context(&inv, &secrets);
        let body = FILES.iter().find(|(r, _)| *r == rel).unwrap().1;
        let env = provision_engine::template::environment();
        provision_engine::template::render(&env, rel, body, &ctx).map_err(|e| e.to_string())
    }

    /// The lines of `service` in a rendered compose file (up to the next service).
    fn service<'a>(compose: &'a str, name: &str) -> Vec<&'a str> {
        let mut lines = compose.lines().skip_while(|l| *l != format!("  {name}:"));
        let first = lines.next().unwrap_or_else(|| panic!("no service {name}"));
        std::iter::once(first)
            .chain(lines.take_while(|l| {
                // The next service (two spaces, a key) or the next top-level key ends it.
                let next_service = l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':');
                let top_level = l.starts_with(|c: char| c != ' ');
                !next_service && !top_level
            }))
            .collect()
    }

    /// The production layout: databases on local volumes of one node (the first worker, or
    /// the node labelled appwrite-data), files on the share; the guide's all-on-NFS layout
    /// with appwrite_data = "share"; a value that is neither is refused by name.
    #[test]
    fn appwrite_databases_live_on_one_node_unless_the_share_is_asked_for() {
        let compose = "templates/appwrite/docker-compose.yml";
        let local = render_production(compose, "", "").unwrap();
        for (svc, volume) in [
            ("mariadb", "      - mariadb:/var/lib/mysql:rw"),
            ("redis", "      - redis:/data:rw"),
            ("influxdb", "      - influxdb:/var/lib/influxdb:rw"),
        ] {
            let lines = service(&local, svc);
            assert!(lines.contains(&volume), "{svc}: {lines:#?}");
            assert!(
                lines.contains(&"          - \"node.hostname==worker-1\""),
                "{svc}: {lines:#?}"
            );
        }
        assert!(local.contains("\nvolumes:\n  mariadb:\n  redis:\n  influxdb:\n"));
        assert!(
            service(&local, "appwrite")
                .contains(&"      - /mnt/share/appwrite/uploads:/storage/uploads:rw")
        );

        let labelled = render_production(compose, "", ", appwrite-data = \"true\"").unwrap();
        assert!(
            service(&labelled, "mariadb")
                .contains(&"          - \"node.labels.appwrite-data==true\""),
            "{labelled}"
        );

        let shared = render_production(compose, "appwrite_data = \"share\"", "").unwrap();
        let lines = service(&shared, "mariadb");
        assert!(
            lines.contains(&"      - /mnt/share/appwrite/mariadb:/var/lib/mysql:rw"),
            "{lines:#?}"
        );
        assert!(!lines.iter().any(|l| l.contains("placement")), "{lines:#?}");
        assert!(!shared.contains("\nvolumes:"));

        let err = render_production(compose, "appwrite_data = \"nfs\"", "").unwrap_err();
        assert!(
            err.contains("templates/appwrite/docker-compose.yml")
                && err.contains("appwrite_data must be \"local\" (MariaDB, Redis and InfluxDB on local volumes of one node) or \"share\" (on the NFS share, as the guide has it), not \"nfs\""),
            "{err}"
        );
    }

    /// HAProxy sends PROXY protocol v2 for the Appwrite stack, and every node's Traefik trusts
    /// it from the load balancers' private addresses only; without lb hosts (or with
    /// lb_proxy_protocol = false) Traefik expects no header.
    #[test]
    fn the_client_address_reaches_traefik_through_the_load_balancer() {
        let compose = "templates/appwrite/docker-compose.yml";
        let with_lb = render_production(compose, "", "").unwrap();
        let traefik = service(&with_lb, "traefik");
        for entrypoint in ["appwrite_web", "appwrite_websecure"] {
            let line =
                format!("      - --entrypoints.{entrypoint}.proxyProtocol.trustedIPs=10.0.0.30");
            assert!(traefik.contains(&line.as_str()), "{traefik:#?}");
        }
        let off = render_production(compose, "lb_proxy_protocol = false", "").unwrap();
        assert!(!off.contains("proxyProtocol"), "{off}");
        let no_lb = include_str!("../../../inventories/minimal.toml");
        let inv =
            Inventory::parse(no_lb, Path::new("/c/cluster.toml"), &Default::default()).unwrap();
        let secrets: toml::Table = toml::from_str(APPWRITE_SECRETS).unwrap();
        let ctx = provision_playbook::compile::cluster_context(&inv, &secrets);
        let body = FILES.iter().find(|(r, _)| *r == compose).unwrap().1;
        let rendered = provision_engine::template::render(
            &provision_engine::template::environment(),
            compose,
            body,
            &ctx,
        )
        .unwrap();
        assert!(!rendered.contains("proxyProtocol"));

        // The playbook turns HAProxy's send-proxy-v2 on for this stack only.
        let pb = FILES[0].1;
        assert!(pb.contains("proxy_protocol = \"{{ (vars.stack | default('appwrite')) == 'appwrite' and (vars.lb_proxy_protocol | default(true)) }}\""));
    }

    /// A [vars.appwrite] key the .env does not read is refused with the closest one; the
    /// template's list of keys is exactly the keys it reads.
    #[test]
    fn unknown_appwrite_settings_are_refused_by_name() {
        let env_rel = "templates/appwrite/.env";
        let body = FILES.iter().find(|(r, _)| *r == env_rel).unwrap().1;
        let (head, uses) = body.split_once("{%- for k in a %}").unwrap();
        let list = head.split("{%- set known = [").nth(1).unwrap();
        let known: std::collections::BTreeSet<&str> = list[..list.find(']').unwrap()]
            .split(',')
            .map(|k| k.trim().trim_matches('\''))
            .collect();
        let read: std::collections::BTreeSet<&str> = uses
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .filter_map(|w| w.strip_prefix("a."))
            .collect();
        assert_eq!(known, read);

        let ok =
            render_production(env_rel, "appwrite = { domain = \"aw.example.com\" }", "").unwrap();
        assert!(ok.contains("\n_APP_DOMAIN=aw.example.com\n"));
        let err = render_production(env_rel, "appwrite = { domian = \"aw.example.com\" }", "")
            .unwrap_err();
        assert!(
            err.contains("unknown key `domian` in [vars.appwrite]: did you mean `domain`?"),
            "{err}"
        );
    }

    /// TLS: Appwrite's own Let's Encrypt needs the account's address once a real domain is set;
    /// "files" needs the certificate and key in the secrets file (named by check-config) and
    /// serves them from the share, where Traefik's file provider reads them.
    #[test]
    fn tls_is_appwrite_s_own_acme_or_the_user_s_certificate() {
        let compose = "templates/appwrite/docker-compose.yml";
        let err = render_production(compose, "appwrite = { domain = \"aw.example.com\" }", "")
            .unwrap_err();
        assert!(
            err.contains("gets Let's Encrypt certificates from Appwrite: set [vars.appwrite] system_security_email_address"),
            "{err}"
        );
        render_production(
            compose,
            "appwrite = { domain = \"aw.example.com\", system_security_email_address = \"ops@example.com\" }",
            "",
        )
        .unwrap();
        render_production(
            compose,
            "appwrite_tls = \"files\"\nappwrite = { domain = \"aw.example.com\" }",
            "",
        )
        .unwrap();
        let err = render_production(compose, "appwrite_tls = \"acme\"", "").unwrap_err();
        assert!(
            err.contains(
                "appwrite_tls must be \"appwrite\" (Appwrite obtains Let's Encrypt certificates"
            ),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let pb_path = write_into(dir.path()).unwrap();
        let pb = PlaybookFile::load(&pb_path, &provision_playbook::known_steps()).unwrap();
        let production = include_str!("../../../inventories/production.toml")
            .replace("[vars]\n", "[vars]\nappwrite_tls = \"files\"\n");
        let inv = Inventory::parse(
            &production,
            &dir.path().join("cluster.toml"),
            &Default::default(),
        )
        .unwrap();
        let none = |_: &str| false;
        let compile = |secrets: &str| {
            let table: toml::Table = toml::from_str(secrets).unwrap();
            let view = provision_playbook::compile::SecretsView {
                table: &table,
                contains_secret: &none,
            };
            provision_playbook::compile(&inv, &pb, &view)
                .map(|_| ())
                .map_err(|e| {
                    e.diagnostics
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
        };
        let err = compile(APPWRITE_SECRETS).unwrap_err();
        assert!(err.contains("appwrite.tls_certificate"), "{err}");
        assert!(err.contains("appwrite.tls_key"), "{err}");
        compile(&format!(
            "{APPWRITE_SECRETS}tls_certificate = \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"\ntls_key = \"-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n\"\n"
        ))
        .unwrap();
        // Traefik reads the files where the playbook writes them (the share's certificates/
        // is mounted at /storage/certificates).
        let playbook = FILES[0].1;
        let traefik = FILES
            .iter()
            .find(|(r, _)| *r == "templates/appwrite/traefik-tls.yml")
            .unwrap()
            .1;
        for file in ["provision-tls.crt", "provision-tls.key"] {
            assert!(playbook.contains(&format!("/appwrite/certificates/{file}\"")));
            assert_eq!(
                traefik
                    .matches(&format!("/storage/certificates/{file}\n"))
                    .count(),
                2
            );
        }
        assert!(playbook.contains("/appwrite/certificates/provision-tls.key\", mode = \"0600\""));
    }

    /// appwrite_acme_staging = true: certbot's own cli.ini, written on the share by the
    /// playbook, mounted in the certificates worker only; a wrong value is refused by name.
    #[test]
    fn lets_encrypt_staging_is_one_var_for_the_certificates_worker() {
        let compose = "templates/appwrite/docker-compose.yml";
        let real = "appwrite = { domain = \"aw.example.com\", system_security_email_address = \"ops@example.com\" }";
        let mount = "      - /mnt/share/appwrite/acme/cli.ini:/etc/letsencrypt/cli.ini:ro";
        let staging = render_production(
            compose,
            &format!("appwrite_acme_staging = true\n{real}"),
            "",
        )
        .unwrap();
        assert!(
            service(&staging, "appwrite-worker-certificates").contains(&mount),
            "{staging}"
        );
        assert_eq!(staging.matches("/etc/letsencrypt/cli.ini").count(), 1);
        for off in [String::new(), "appwrite_acme_staging = false\n".to_string()] {
            let production = render_production(compose, &format!("{off}{real}"), "").unwrap();
            assert!(!production.contains("cli.ini"), "{off}");
        }
        let err = render_production(compose, "appwrite_acme_staging = \"yes\"", "").unwrap_err();
        assert!(
            err.contains("appwrite_acme_staging must be true (Let's Encrypt's staging server"),
            "{err}"
        );
        let err = render_production(
            compose,
            "appwrite_acme_staging = true\nappwrite_tls = \"files\"",
            "",
        )
        .unwrap_err();
        assert!(
            err.contains(
                "but appwrite_tls = \"files\" brings its own: remove appwrite_acme_staging"
            ),
            "{err}"
        );
        // The playbook writes the file the mount reads, with the staging directory's URL.
        let playbook = FILES[0].1;
        assert!(playbook.contains(
            "content = \"server = https://acme-staging-v02.api.letsencrypt.org/directory\\n\", dest = \"{{ vars.share_mount | default('/mnt/share') }}/appwrite/acme/cli.ini\""
        ));
    }

    #[test]
    fn writes_once_and_points_at_the_playbook() {
        let dir = tempfile::tempdir().unwrap();
        let pb = materialize(dir.path()).unwrap();
        assert_eq!(
            pb,
            dir.path().join(".provision/builtin/playbooks/swarm.toml")
        );
        assert_eq!(std::fs::read_to_string(&pb).unwrap(), FILES[0].1);
        let before = std::fs::metadata(&pb).unwrap().modified().unwrap();
        materialize(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&pb).unwrap().modified().unwrap(),
            before,
            "unchanged files are not rewritten"
        );
    }
}

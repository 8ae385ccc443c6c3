//! `docker`: the Docker engine from Docker's apt repository (`source =
//! "docker"`, the production default) or from the distribution (`"distro"`:
//! `docker.io`), configured by /etc/docker/daemon.json, enabled and running,
//! with `users` in the docker group. Also installs curl (the swarm steps talk
//! to the Docker socket with it) and ca-certificates.
//!
//! daemon.json is written before the first install, so the engine starts with
//! it; later changes are validated by `dockerd --validate` (Docker 23 and later)
//! on a staged copy before they replace the live file and docker is restarted.
//! A pinned `version` is held with apt-mark; removing `version` leaves holds
//! alone (they may be an administrator's). The other engine being installed is
//! an error, never a silent swap that would restart every container.

use super::apt;
use super::file::{self, Kind, PathFacts};
use super::systemd::{self, Verb};
use super::util::{self, List, Sections};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::{join, quote};
use serde::Deserialize;
use serde_json::{Map, Value};

pub const KNOWN_KEYS: &[&str] = &[
    "source",
    "version",
    "apt_proxy",
    "mirror",
    "daemon",
    "users",
    "gpg_key",
    "gpg_key_url",
    "repo_url",
];

/// Installed before anything else: the key is fetched with curl.
pub const PREREQUISITES: &[&str] = &["ca-certificates", "curl"];

/// Docker's packages, as its installation guide lists them.
pub const DOCKER_PACKAGES: &[&str] = &[
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
];

/// Packages are installed without recommends (predictable), except this one:
/// Debian and Ubuntu kernels enable AppArmor, and dockerd cannot start
/// containers without apparmor_parser (docker-ce-packaging#845).
pub const APPARMOR: &str = "apparmor";

/// Packages whose state decides the plan: the engines and what provides /usr/bin/docker.
const ENGINE_QUERIES: &[&str] = &["docker-ce", "docker-ce-cli", "docker.io", "podman-docker"];

const SERVICE: &str = "docker.service";

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Docker,
    Distro,
}

/// The system files the step reads and writes; tests point them elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub os_release: String,
    pub apt_proxy: String,
    pub keyring: String,
    pub sources: String,
    /// The one-line sources file of Docker's older instructions: its Signed-By
    /// would conflict with ours and break apt-get update.
    pub legacy_list: String,
    pub daemon_json: String,
}

impl Default for Files {
    fn default() -> Self {
        Files {
            os_release: "/etc/os-release".into(),
            apt_proxy: "/etc/apt/apt.conf.d/01provision-proxy".into(),
            keyring: "/etc/apt/keyrings/docker.asc".into(),
            sources: "/etc/apt/sources.list.d/docker.sources".into(),
            legacy_list: "/etc/apt/sources.list.d/docker.list".into(),
            daemon_json: "/etc/docker/daemon.json".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    source: Option<Source>,
    version: Option<String>,
    apt_proxy: Option<String>,
    mirror: Option<String>,
    daemon: Option<toml::Table>,
    #[serde(default)]
    users: List,
    gpg_key: Option<String>,
    gpg_key_url: Option<String>,
    repo_url: Option<String>,
}

pub struct Docker {
    source: Source,
    version: Option<String>,
    apt_proxy: Option<String>,
    gpg_key: Option<String>,
    gpg_key_url: Option<String>,
    repo_url: Option<String>,
    users: Vec<String>,
    daemon_json: String,
    prereq: Box<dyn HostStep>,
    engine: Box<dyn HostStep>,
    host: String,
    files: Files,
}

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    build_with(with, ctx, Files::default())
}

/// [`build`] with the system files somewhere else (tests).
pub fn build_with(
    with: &toml::Table,
    ctx: &BuildCtx<'_>,
    files: Files,
) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let source = p.source.unwrap_or_default();
    let version = util::non_empty(p.version);
    let docker_only = |key: &str, set: bool| {
        if set && source == Source::Distro {
            Err(util::bad(
                key,
                format!("`{key}` applies only to source = \"docker\""),
                format!("remove `{key}`, or set source = \"docker\""),
            ))
        } else {
            Ok(())
        }
    };
    docker_only("version", version.is_some())?;
    if let Some(v) = &version
        && apt::parse_package(&format!("docker-ce={v}")).is_none()
    {
        return Err(util::bad(
            "version",
            format!("`version` \"{v}\" is not a Debian package version"),
            "e.g. version = \"27.3.1\" (the newest build of it) or the full \"5:27.3.1-1~debian.12~bookworm\"",
        ));
    }
    let gpg_key = util::non_empty(p.gpg_key);
    docker_only("gpg_key", gpg_key.is_some())?;
    if let Some(k) = &gpg_key
        && !k.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    {
        return Err(util::bad(
            "gpg_key",
            "`gpg_key` is not an ASCII-armored PGP public key",
            "paste the text of https://download.docker.com/linux/debian/gpg (it starts with -----BEGIN PGP PUBLIC KEY BLOCK-----), or remove `gpg_key` to fetch it on the host",
        ));
    }
    let gpg_key_url = util::non_empty(p.gpg_key_url)
        .map(|u| url("gpg_key_url", u))
        .transpose()?;
    docker_only("gpg_key_url", gpg_key_url.is_some())?;
    let repo_url = util::non_empty(p.repo_url)
        .map(|u| url("repo_url", u).map(|u| u.trim_end_matches('/').to_string()))
        .transpose()?;
    docker_only("repo_url", repo_url.is_some())?;
    let apt_proxy = util::non_empty(p.apt_proxy)
        .map(|u| url("apt_proxy", u))
        .transpose()?;
    let mirror = util::non_empty(p.mirror)
        .map(|u| url("mirror", u))
        .transpose()?;
    let users = p
        .users
        .0
        .iter()
        .map(|u| util::account_name("users", u, false))
        .collect::<Result<Vec<_>, _>>()?;
    // The raw table: through serde, TOML dates turn into private marker tables.
    let raw_daemon = p
        .daemon
        .as_ref()
        .and(with.get("daemon"))
        .and_then(toml::Value::as_table);
    let daemon = daemon_config(raw_daemon, mirror.as_deref())?;
    let apt_step = |packages: Vec<&str>| {
        let mut t = toml::Table::new();
        t.insert(
            "packages".into(),
            toml::Value::Array(packages.into_iter().map(toml::Value::from).collect()),
        );
        apt::build(&t, ctx)
    };
    let (prereq, engine) = match source {
        Source::Distro => (
            apt_step(PREREQUISITES.to_vec())?,
            apt_step(vec![APPARMOR, "docker.io"])?,
        ),
        Source::Docker => {
            // A pinned pair is installed by its own command (the exact version is
            // looked up on the host); the rest follow the lists.
            let pinned =
                |p: &&str| version.is_some() && matches!(*p, "docker-ce" | "docker-ce-cli");
            let mut prereq = PREREQUISITES.to_vec();
            prereq.push(APPARMOR);
            let rest: Vec<&str> = DOCKER_PACKAGES
                .iter()
                .filter(|p| !pinned(p))
                .copied()
                .collect();
            (apt_step(prereq)?, apt_step(rest)?)
        }
    };
    Ok(Box::new(Docker {
        source,
        version,
        apt_proxy,
        gpg_key,
        gpg_key_url,
        repo_url,
        users,
        daemon_json: json_text(&daemon),
        prereq,
        engine,
        host: ctx.host.name.clone(),
        files,
    }))
}

/// An http(s) URL that can go into apt's configuration and a JSON string as is.
/// The URL with its `user:password@` replaced by `***@`, when it has one.
pub fn without_credentials(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://***@{}", &rest[at + 1..]))
}

fn url(key: &str, u: String) -> Result<String, ParamError> {
    let ok = (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() > "https://".len()
        && !u.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | ';' | '\\')
        });
    if ok {
        Ok(u)
    } else {
        Err(util::bad(
            key,
            format!("`{key}` \"{u}\" is not an http(s) URL"),
            "e.g. \"http://10.0.0.2:3142\" (no spaces or quotes)",
        ))
    }
}

/// The default daemon.json (log rotation: containers' json logs otherwise grow
/// without bound), the registry mirror, then `daemon` merged over it (tables
/// merged key by key).
pub fn daemon_config(
    daemon: Option<&toml::Table>,
    mirror: Option<&str>,
) -> Result<Value, ParamError> {
    let mut config = serde_json::json!({
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"}
    });
    let Value::Object(defaults) = &mut config else {
        unreachable!("a JSON object literal")
    };
    let user = match daemon {
        Some(t) => match toml_to_json(&toml::Value::Table(t.clone())) {
            Ok(Value::Object(m)) => m,
            Ok(_) => unreachable!("a table converts to an object"),
            Err(e) => {
                return Err(util::bad(
                    "daemon",
                    format!("`daemon`: {e}"),
                    "write strings, numbers, booleans, lists and tables only",
                ));
            }
        },
        None => Map::new(),
    };
    if user.contains_key("hosts") {
        return Err(util::bad(
            "daemon",
            "`daemon` must not set `hosts`",
            "the docker.service unit already passes -H fd:// and dockerd refuses both; add listeners with a systemd drop-in instead",
        ));
    }
    // max-size and max-file mean nothing to other log drivers, and dockerd refuses them.
    if let Some(driver) = user.get("log-driver").and_then(Value::as_str)
        && !matches!(driver, "json-file" | "local")
    {
        defaults.remove("log-opts");
    }
    if let Some(m) = mirror {
        if user.contains_key("registry-mirrors") {
            return Err(util::bad(
                "mirror",
                "`mirror` and `daemon.registry-mirrors` both set the registry mirrors",
                "keep one of them",
            ));
        }
        defaults.insert(
            "registry-mirrors".into(),
            Value::Array(vec![Value::from(m)]),
        );
    }
    merge(&mut config, Value::Object(user));
    Ok(config)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn toml_to_json(v: &toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::from(s.as_str()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} is not a JSON number"))?,
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => return Err(format!("{d} is a date, which JSON cannot hold")),
        toml::Value::Array(a) => {
            Value::Array(a.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// JSON with sorted keys, two-space indents and a final newline: the same text
/// for the same settings, whatever order they were written in.
pub fn json_text(v: &Value) -> String {
    fn write(v: &Value, indent: usize, out: &mut String) {
        let pad = "  ".repeat(indent + 1);
        match v {
            Value::Object(m) if !m.is_empty() => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push_str("{\n");
                for (i, k) in keys.iter().enumerate() {
                    out.push_str(&pad);
                    out.push_str(&Value::from(k.as_str()).to_string());
                    out.push_str(": ");
                    write(&m[*k], indent + 1, out);
                    out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
            Value::Array(a) if !a.is_empty() => {
                out.push_str("[\n");
                for (i, x) in a.iter().enumerate() {
                    out.push_str(&pad);
                    write(x, indent + 1, out);
                    out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
                }
                out.push_str(&"  ".repeat(indent));
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, 0, &mut out);
    out.push('\n');
    out
}

/// The apt configuration for `apt_proxy`: https goes through it too (CONNECT),
/// as Docker's repository is served over https.
pub fn proxy_conf(url: &str) -> String {
    format!(
        "// Written by provision (docker step): apt reaches package repositories through this proxy.\nAcquire::http::Proxy \"{url}\";\nAcquire::https::Proxy \"{url}\";\n"
    )
}

/// The deb822 sources entry for Docker's repository.
pub fn sources_content(repo_url: &str, codename: &str, arch: &str, keyring: &str) -> String {
    let mut s = format!(
        "# Docker's apt repository, written by provision (docker step).\nTypes: deb\nURIs: {repo_url}\nSuites: {codename}\nComponents: stable\n"
    );
    if !arch.is_empty() {
        s.push_str(&format!("Architectures: {arch}\n"));
    }
    s.push_str(&format!("Signed-By: {keyring}\n"));
    s
}

/// Fetches Docker's signing key on the host (only when it is missing), and
/// refuses anything that is not a PGP public key (a captive portal's page). With `proxy`, curl
/// reads its proxy from a config on stdin ([`curl_proxy_config`]): a URL with a password must
/// not be in a command line, which every user of the host can read.
pub fn fetch_key_command(url: &str, keyring: &str, proxy: bool) -> String {
    let dir = keyring.rsplit_once('/').map_or("/", |(d, _)| d);
    let mut curl = String::from("curl -fsSL --retry 3");
    if proxy {
        curl.push_str(" -K -");
    }
    format!(
        "set -e; k={}; install -m 0755 -d {}; trap 'rm -f \"$k.provision-new\"' EXIT; {curl} -o \"$k.provision-new\" {}; \
         if ! grep -q 'BEGIN PGP PUBLIC KEY BLOCK' \"$k.provision-new\"; then echo {} >&2; exit 1; fi; \
         chmod 644 \"$k.provision-new\"; mv -f \"$k.provision-new\" \"$k\"",
        quote(keyring),
        quote(dir),
        quote(url),
        quote(&format!("{url} did not return a PGP public key")),
    )
}

/// The curl config (read with `-K -`) naming the proxy; quoted as curl's config format reads it.
pub fn curl_proxy_config(url: &str) -> zeroize::Zeroizing<Vec<u8>> {
    let escaped = url.replace('\\', "\\\\").replace('"', "\\\"");
    zeroize::Zeroizing::new(format!("proxy = \"{escaped}\"\n").into_bytes())
}

/// Installs docker-ce and docker-ce-cli at the newest build matching `version`
/// (as [`version_matches`] reads it), looked up with apt-cache madison, and holds them.
pub fn pinned_install_command(version: &str) -> String {
    let install = apt::install_command(&[], false, true);
    format!(
        "v=$(LC_ALL=C apt-cache madison docker-ce | awk -v {} '{{ x = $3; if (index(w, \":\") == 0) sub(/^[0-9]+:/, \"\", x) }} \
         x == w || index(x, w \"-\") == 1 || index(x, w \"~\") == 1 || index(x, w \".\") == 1 {{ print $3; exit }}'); \
         [ -n \"$v\" ] || {{ echo {} >&2; exit 1; }}; \
         {} --allow-change-held-packages \"docker-ce=$v\" \"docker-ce-cli=$v\" && apt-mark hold docker-ce docker-ce-cli",
        quote(&format!("w={version}")),
        quote(&format!(
            "docker-ce {version} is not in Docker's repository for this system (apt-cache madison docker-ce lists the versions)"
        )),
        install.trim_end(),
    )
}

/// Whether an installed version satisfies a pin: a full version (with epoch)
/// must be equal; "27.3.1" or "27.3" match the builds of that release.
pub fn version_matches(installed: &str, want: &str) -> bool {
    if want.contains(':') {
        return installed == want;
    }
    let bare = installed.split_once(':').map_or(installed, |(_, v)| v);
    bare == want
        || bare
            .strip_prefix(want)
            .is_some_and(|r| r.starts_with(['-', '~', '.']))
}

/// Moves a staged daemon.json over the live one once dockerd accepts it
/// (`--validate` exists from Docker 23; older engines only get our JSON), then restarts docker.
pub fn apply_daemon_json_command(live: &str) -> String {
    let staged = format!("{live}.provision-new");
    format!(
        "s={}; if dockerd --help 2>&1 | grep -q -e '--validate'; then dockerd --validate --config-file \"$s\" >/dev/null || {{ rm -f \"$s\"; echo {} >&2; exit 1; }}; fi; \
         mv -f \"$s\" {} && {}",
        quote(&staged),
        quote(&format!(
            "dockerd rejects the new {live} (see above); the running configuration is unchanged"
        )),
        quote(live),
        systemd::command(Verb::Restart, SERVICE),
    )
}

impl Docker {
    fn main_package(&self) -> &'static str {
        match self.source {
            Source::Docker => "docker-ce",
            Source::Distro => "docker.io",
        }
    }

    fn gather_command(&self) -> String {
        let f = &self.files;
        let mut parts = Vec::new();
        if self.source == Source::Docker {
            parts.push((
                "os",
                format!(
                    "( . {}; echo \"id=$ID\"; echo \"codename=${{VERSION_CODENAME:-$UBUNTU_CODENAME}}\" ); echo \"arch=$(dpkg --print-architecture)\"",
                    quote(&f.os_release)
                ),
            ));
        }
        parts.push((
            "proxy",
            file::gather_command(&f.apt_proxy, Some(file::DIFF_LIMIT)),
        ));
        parts.push(("prereq", self.prereq.gather().unwrap_or_default()));
        if self.source == Source::Docker {
            parts.push((
                "key",
                file::gather_command(&f.keyring, Some(file::DIFF_LIMIT)),
            ));
            parts.push((
                "sources",
                format!(
                    "{}; if [ -e {} ]; then echo legacy=yes; fi",
                    file::gather_command(&f.sources, Some(file::DIFF_LIMIT)),
                    quote(&f.legacy_list)
                ),
            ));
        }
        parts.push(("engine", self.engine.gather().unwrap_or_default()));
        let queries: Vec<String> = ENGINE_QUERIES.iter().map(|s| s.to_string()).collect();
        parts.push(("dpkg", apt::gather_command(&queries, false)));
        parts.push((
            "daemon",
            file::gather_command(&f.daemon_json, Some(file::DIFF_LIMIT)),
        ));
        if !self.users.is_empty() {
            parts.push((
                "users",
                format!(
                    "getent group docker | sed 's/^/group=/'; getent passwd {} | cut -d: -f1 | sed 's/^/user=/'",
                    join(&self.users)
                ),
            ));
        }
        parts.push(("service", systemd::gather_command(SERVICE)));
        util::sections(&parts)
    }

    /// The changes of an inner apt step, noting whether they refresh the lists.
    fn apt_changes(
        step: &dyn HostStep,
        facts: &Facts,
        updated: &mut bool,
    ) -> Result<Vec<Change>, StepError> {
        match step.check(facts)? {
            Check::Change(c) => {
                let update = Action::run(apt::update_command());
                *updated |= c.iter().any(|c| c.actions.contains(&update));
                Ok(c)
            }
            _ => Ok(Vec::new()),
        }
    }

    fn proxy_change(&self, now: &PathFacts) -> Result<Option<Change>, StepError> {
        let path = &self.files.apt_proxy;
        match &self.apt_proxy {
            Some(u) => {
                // A proxy URL with a user and password: the file is root's only, and the
                // password is not shown.
                let (shown, mode) = match without_credentials(u) {
                    Some(bare) => (bare, Some(0o600)),
                    None => (u.clone(), None),
                };
                Ok(
                    file::change_with_mode(path, "apt_proxy", proxy_conf(u).as_bytes(), mode, now)?
                        .map(|mut c| {
                            c.summary = format!("apt uses the proxy {shown} ({path})");
                            c
                        }),
                )
            }
            None if now.kind != Kind::Absent => Ok(Some(Change::new(
                format!("remove {path} (`apt_proxy` is not set)"),
                vec![Action::run(format!("rm -f {}", quote(path)))],
            ))),
            None => Ok(None),
        }
    }

    /// Docker's signing key and sources entry.
    fn repository_changes(&self, s: &Sections, changes: &mut Vec<Change>) -> Result<(), StepError> {
        let f = &self.files;
        let os = s.get("os")?;
        let kv = os.kv();
        let field = |k: &str| kv.get(k).map(|v| v.trim()).unwrap_or("");
        let (id, codename, arch) = (field("id"), field("codename"), field("arch"));
        let word = |v: &str| {
            v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !word(id) || !word(codename) || !word(arch) {
            return Err(util::bad_facts("/etc/os-release", &os.stdout));
        }
        if self.repo_url.is_none() && !matches!(id, "debian" | "ubuntu") {
            return Err(StepError::new(format!(
                "{}: Docker's repository has no packages for this distribution ({})",
                self.host,
                if id.is_empty() { "unknown" } else { id }
            ))
            .hint("set source = \"distro\" to use the distribution's docker.io, or repo_url to a repository for it"));
        }
        if codename.is_empty() {
            return Err(StepError::new(format!(
                "{}: {} names no VERSION_CODENAME",
                self.host, f.os_release
            ))
            .hint("set source = \"distro\" (a testing or unreleased distribution has no Docker repository)"));
        }
        let key_now = file::parse(s.get("key")?)?;
        match &self.gpg_key {
            Some(k) => {
                if let Some(mut c) = file::change(&f.keyring, "gpg_key", k.as_bytes(), &key_now)? {
                    c.summary = format!("place Docker's signing key in {}", f.keyring);
                    if let Some(dir) = f
                        .keyring
                        .rsplit_once('/')
                        .map(|(d, _)| d)
                        .filter(|d| !d.is_empty())
                    {
                        c.actions
                            .insert(0, Action::run(format!("install -m 0755 -d {}", quote(dir))));
                    }
                    changes.push(c);
                }
            }
            None => {
                let missing = key_now.kind == Kind::Absent
                    || key_now.attrs.as_ref().is_some_and(|a| a.size == 0);
                if missing {
                    let url = self
                        .gpg_key_url
                        .clone()
                        .unwrap_or_else(|| format!("https://download.docker.com/linux/{id}/gpg"));
                    changes.push(Change::new(
                        format!("fetch Docker's signing key from {url} into {}", f.keyring),
                        vec![Action::Run {
                            script: fetch_key_command(&url, &f.keyring, self.apt_proxy.is_some()),
                            stdin: self.apt_proxy.as_deref().map(curl_proxy_config),
                        }],
                    ));
                }
            }
        }
        let repo = self
            .repo_url
            .clone()
            .unwrap_or_else(|| format!("https://download.docker.com/linux/{id}"));
        let sources = s.get("sources")?;
        let want = sources_content(&repo, codename, arch, &f.keyring);
        if let Some(mut c) =
            file::change(&f.sources, "path", want.as_bytes(), &file::parse(sources)?)?
        {
            c.summary = format!(
                "add Docker's repository ({repo} {codename} stable) in {}",
                f.sources
            );
            changes.push(c);
        }
        if sources.kv().get("legacy") == Some(&"yes") {
            changes.push(Change::new(
                format!("remove {} (replaced by {})", f.legacy_list, f.sources),
                vec![Action::run(format!("rm -f {}", quote(&f.legacy_list)))],
            ));
        }
        Ok(())
    }

    fn pinned_changes(&self, dpkg: &apt::AptFacts, updated: bool, changes: &mut Vec<Change>) {
        let Some(want) = &self.version else { return };
        let pair = ["docker-ce", "docker-ce-cli"];
        let have: Vec<Option<&apt::Dpkg>> = pair
            .iter()
            .map(|n| dpkg.dpkg.iter().find(|d| d.name == *n && d.installed()))
            .collect();
        let matching = have
            .iter()
            .all(|d| d.is_some_and(|d| version_matches(&d.version, want)));
        if !matching {
            let was = have[0].map_or("not installed".to_string(), |d| d.version.clone());
            let mut actions = Vec::new();
            // The version is looked up in the lists: refresh them unless this plan already does.
            if !updated {
                actions.push(Action::run(apt::update_command()));
            }
            actions.push(Action::run(pinned_install_command(want)));
            changes.push(Change::new(
                format!("install docker-ce and docker-ce-cli {want} (was {was}) and hold them"),
                actions,
            ));
        } else if !have
            .iter()
            .all(|d| d.is_some_and(|d| d.status.starts_with('h')))
        {
            changes.push(Change::new(
                format!(
                    "hold docker-ce and docker-ce-cli at {}",
                    have[0].map_or("", |d| d.version.as_str())
                ),
                vec![Action::run("apt-mark hold docker-ce docker-ce-cli")],
            ));
        }
    }

    fn daemon_change(
        &self,
        now: &PathFacts,
        installed: bool,
    ) -> Result<(Option<Change>, bool), StepError> {
        let path = &self.files.daemon_json;
        let Some(mut c) = file::change(path, "path", self.daemon_json.as_bytes(), now)? else {
            return Ok((None, false));
        };
        let dir = path
            .rsplit_once('/')
            .map(|(d, _)| d)
            .filter(|d| !d.is_empty())
            .unwrap_or("/");
        let mkdir = Action::run(format!("mkdir -p {}", quote(dir)));
        if !installed {
            c.summary = format!("write {path} (before the engine first starts)");
            c.actions.insert(0, mkdir);
            return Ok((Some(c), false));
        }
        let same_settings = now
            .content
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .zip(serde_json::from_str::<Value>(&self.daemon_json).ok())
            .is_some_and(|(a, b)| a == b);
        if same_settings {
            c.summary = format!("rewrite {path} (same settings, new layout: no restart)");
            return Ok((Some(c), false));
        }
        let mode = now
            .attrs
            .as_ref()
            .filter(|_| now.kind == Kind::File)
            .map_or(0o644, |a| a.mode);
        c.summary = format!("update {path} and restart docker");
        c.actions = vec![
            mkdir,
            Action::Upload {
                dest: format!("{path}.provision-new"),
                content: zeroize::Zeroizing::new(self.daemon_json.clone().into_bytes()),
                mode: Some(mode),
                owner: Some("root".into()),
                group: Some("root".into()),
            },
            Action::run(apply_daemon_json_command(path)),
        ];
        Ok((Some(c), true))
    }

    fn users_change(&self, s: &Sections) -> Result<Option<Change>, StepError> {
        if self.users.is_empty() {
            return Ok(None);
        }
        let f = s.get("users")?;
        let mut members: Vec<&str> = Vec::new();
        let mut exist: Vec<&str> = Vec::new();
        for line in f.stdout.lines() {
            if let Some(g) = line.strip_prefix("group=") {
                // docker:x:998:alice,bob
                members.extend(
                    g.splitn(4, ':')
                        .nth(3)
                        .unwrap_or("")
                        .split(',')
                        .filter(|m| !m.is_empty()),
                );
            } else if let Some(u) = line.strip_prefix("user=") {
                exist.push(u);
            }
        }
        if let Some(u) = self.users.iter().find(|u| !exist.contains(&u.as_str())) {
            return Err(
                StepError::new(format!("{}: user {u} does not exist", self.host))
                    .hint("create it before this step (a `user` step), or remove it from `users`"),
            );
        }
        let missing: Vec<&String> = self
            .users
            .iter()
            .filter(|u| !members.contains(&u.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let cmd = missing
            .iter()
            .map(|u| join(["usermod", "-aG", "docker", u.as_str()]))
            .collect::<Vec<_>>()
            .join(" && ");
        let names: Vec<&str> = missing.iter().map(|u| u.as_str()).collect();
        Ok(Some(Change::new(
            format!("add {} to the docker group", names.join(", ")),
            vec![Action::run(cmd)],
        )))
    }
}

impl HostStep for Docker {
    fn gather(&self) -> Option<String> {
        Some(self.gather_command())
    }

    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        let s = Sections::parse(facts);
        let dpkg = apt::parse(&s.get("dpkg")?.stdout)?;
        let installed = |name: &str| dpkg.dpkg.iter().any(|d| d.name == name && d.installed());
        let main = self.main_package();
        let (other, wanted) = match self.source {
            Source::Docker => (
                ["docker.io", "podman-docker"],
                "source = \"docker\" (Docker's docker-ce)",
            ),
            Source::Distro => (
                ["docker-ce", "podman-docker"],
                "source = \"distro\" (docker.io)",
            ),
        };
        if let Some(o) = other.iter().find(|o| installed(o)) {
            let switch = match self.source {
                Source::Docker => "source = \"distro\"",
                Source::Distro => "source = \"docker\"",
            };
            return Err(StepError::new(format!("{}: {o} is installed, but the step asks for {wanted}", self.host))
                .hint(format!("switching engines restarts every container: remove {o} by hand first (apt-get purge {o}), or set {switch}")));
        }
        let engine_installed = installed(main);
        let mut changes = Vec::new();
        let mut updated = false;
        changes.extend(self.proxy_change(&file::parse(s.get("proxy")?)?)?);
        changes.extend(Self::apt_changes(
            &*self.prereq,
            s.get("prereq")?,
            &mut updated,
        )?);
        if self.source == Source::Docker {
            self.repository_changes(&s, &mut changes)?;
        }
        let daemon_now = file::parse(s.get("daemon")?)?;
        let (daemon, restarts) = self.daemon_change(&daemon_now, engine_installed)?;
        if !engine_installed {
            changes.extend(daemon.clone());
        }
        changes.extend(Self::apt_changes(
            &*self.engine,
            s.get("engine")?,
            &mut updated,
        )?);
        self.pinned_changes(&dpkg, updated, &mut changes);
        if engine_installed {
            changes.extend(daemon);
        }
        changes.extend(self.users_change(&s)?);
        let unit = engine_installed
            .then(|| s.get("service").and_then(systemd::parse))
            .transpose()?;
        changes.extend(systemd::keep_running(SERVICE, unit.as_ref(), restarts));
        if changes.is_empty() {
            let version = dpkg
                .dpkg
                .iter()
                .find(|d| d.name == main && d.installed())
                .map_or("", |d| d.version.as_str());
            Ok(Check::Ok(format!(
                "{main} {version} running, {} up to date",
                self.files.daemon_json
            )))
        } else {
            Ok(Check::Change(changes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_with_ctx, build_err};

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with_ctx(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=300";

    /// Lists refreshed 10 minutes before `now`, on Debian 12 (captured shape).
    const LISTS: &str = "now=1795768133\nupdated=1795767533\nsources=1700000000\nlists=4\n";

    fn file_facts(content: Option<&str>) -> String {
        match content {
            None => "kind=absent\n".into(),
            Some(c) => format!(
                "kind=file\nattrs=644 root root 0 0 {}\nsha256={}\ncontent={}\n",
                c.len(),
                util::sha256_hex(c.as_bytes()),
                util::base64_encode(c.as_bytes())
            ),
        }
    }

    const DEFAULT_JSON: &str = "{\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"10m\"\n  }\n}\n";

    fn sources() -> String {
        sources_content(
            "https://download.docker.com/linux/debian",
            "bookworm",
            "amd64",
            "/etc/apt/keyrings/docker.asc",
        )
    }

    struct Host<'a> {
        prereq: &'a str,
        key: Option<&'a str>,
        sources: Option<String>,
        legacy: bool,
        engine: &'a str,
        dpkg: &'a str,
        daemon: Option<&'a str>,
        users: &'a str,
        service: &'a str,
    }

    const CE: &str = "pkg=ii  docker-ce amd64 5:27.3.1-1~debian.12~bookworm\npkg=ii  docker-ce-cli amd64 5:27.3.1-1~debian.12~bookworm\n";

    /// A Debian 12 host where source = "docker" is fully applied.
    fn done<'a>() -> Host<'a> {
        Host {
            prereq: "pkg=ii  ca-certificates all 20230311\npkg=ii  curl amd64 7.88.1-10+deb12u12\npkg=ii  apparmor amd64 3.0.8-3\n",
            key: Some("-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n"),
            sources: Some(sources()),
            legacy: false,
            engine: "pkg=ii  docker-ce amd64 5:27.3.1-1~debian.12~bookworm\npkg=ii  docker-ce-cli amd64 5:27.3.1-1~debian.12~bookworm\npkg=ii  containerd.io amd64 1.7.22-1\npkg=ii  docker-buildx-plugin amd64 0.17.1-1~debian.12~bookworm\npkg=ii  docker-compose-plugin amd64 2.29.7-1~debian.12~bookworm\n",
            dpkg: CE,
            daemon: Some(DEFAULT_JSON),
            users: "group=docker:x:998:deploy\nuser=deploy\n",
            service: "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n",
        }
    }

    /// A bare Debian 12 cloud host: curl and ca-certificates there, nothing of docker.
    fn fresh<'a>() -> Host<'a> {
        Host {
            prereq: "pkg=ii  ca-certificates all 20230311\npkg=ii  curl amd64 7.88.1-10+deb12u12\ncandidate=apparmor 3.0.8-3\n",
            key: None,
            sources: None,
            legacy: false,
            engine: "",
            dpkg: "",
            daemon: None,
            users: "user=deploy\n",
            service: "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n",
        }
    }

    fn facts(h: &Host<'_>, docker: bool, users: bool) -> Facts {
        let mut s = String::new();
        if docker {
            s.push_str("--- os\nid=debian\ncodename=bookworm\narch=amd64\n");
        }
        s.push_str(&format!(
            "--- proxy\nkind=absent\n--- prereq\n{}{LISTS}",
            h.prereq
        ));
        if docker {
            s.push_str(&format!(
                "--- key\n{}--- sources\n{}",
                file_facts(h.key),
                file_facts(h.sources.as_deref())
            ));
            if h.legacy {
                s.push_str("legacy=yes\n");
            }
        }
        s.push_str(&format!(
            "--- engine\n{}{LISTS}--- dpkg\n{}--- daemon\n{}",
            h.engine,
            h.dpkg,
            file_facts(h.daemon)
        ));
        if users {
            s.push_str(&format!("--- users\n{}", h.users));
        }
        s.push_str(&format!("--- service\n{}", h.service));
        Facts::new(s)
    }

    fn summaries(c: &Check) -> Vec<&str> {
        let Check::Change(c) = c else {
            panic!("expected changes, got {c:?}")
        };
        c.iter().map(|c| c.summary.as_str()).collect()
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            fetch_key_command(
                "https://download.docker.com/linux/debian/gpg",
                "/etc/apt/keyrings/docker.asc",
                true
            ),
            "set -e; k=/etc/apt/keyrings/docker.asc; install -m 0755 -d /etc/apt/keyrings; trap 'rm -f \"$k.provision-new\"' EXIT; \
             curl -fsSL --retry 3 -K - -o \"$k.provision-new\" https://download.docker.com/linux/debian/gpg; \
             if ! grep -q 'BEGIN PGP PUBLIC KEY BLOCK' \"$k.provision-new\"; then echo 'https://download.docker.com/linux/debian/gpg did not return a PGP public key' >&2; exit 1; fi; \
             chmod 644 \"$k.provision-new\"; mv -f \"$k.provision-new\" \"$k\""
        );
        assert_eq!(
            &*curl_proxy_config("http://u:p\"w\\d@10.0.0.2:3142"),
            b"proxy = \"http://u:p\\\"w\\\\d@10.0.0.2:3142\"\n"
        );
        assert_eq!(
            pinned_install_command("27.3.1"),
            format!(
                "v=$(LC_ALL=C apt-cache madison docker-ce | awk -v w=27.3.1 '{{ x = $3; if (index(w, \":\") == 0) sub(/^[0-9]+:/, \"\", x) }} \
                 x == w || index(x, w \"-\") == 1 || index(x, w \"~\") == 1 || index(x, w \".\") == 1 {{ print $3; exit }}'); \
                 [ -n \"$v\" ] || {{ echo 'docker-ce 27.3.1 is not in Docker'\\''s repository for this system (apt-cache madison docker-ce lists the versions)' >&2; exit 1; }}; \
                 {} --allow-change-held-packages \"docker-ce=$v\" \"docker-ce-cli=$v\" && apt-mark hold docker-ce docker-ce-cli",
                INSTALL.replace(
                    "--no-install-recommends",
                    "--no-install-recommends --allow-downgrades"
                )
            )
        );
        assert_eq!(
            apply_daemon_json_command("/etc/docker/daemon.json"),
            "s=/etc/docker/daemon.json.provision-new; if dockerd --help 2>&1 | grep -q -e '--validate'; then \
             dockerd --validate --config-file \"$s\" >/dev/null || { rm -f \"$s\"; echo 'dockerd rejects the new /etc/docker/daemon.json (see above); the running configuration is unchanged' >&2; exit 1; }; fi; \
             mv -f \"$s\" /etc/docker/daemon.json && systemctl restart docker.service"
        );
        assert_eq!(
            sources(),
            "# Docker's apt repository, written by provision (docker step).\nTypes: deb\nURIs: https://download.docker.com/linux/debian\nSuites: bookworm\nComponents: stable\nArchitectures: amd64\nSigned-By: /etc/apt/keyrings/docker.asc\n"
        );
        assert_eq!(
            proxy_conf("http://10.0.0.2:3142"),
            "// Written by provision (docker step): apt reaches package repositories through this proxy.\nAcquire::http::Proxy \"http://10.0.0.2:3142\";\nAcquire::https::Proxy \"http://10.0.0.2:3142\";\n"
        );
        let s = step("users = [\"deploy\"]");
        let g = s.gather().unwrap();
        assert!(g.starts_with("echo '--- os'; ( . /etc/os-release; echo \"id=$ID\"; echo \"codename=${VERSION_CODENAME:-$UBUNTU_CODENAME}\" ); echo \"arch=$(dpkg --print-architecture)\"; echo '--- proxy'; "), "{g}");
        assert!(g.contains("; if [ -e /etc/apt/sources.list.d/docker.list ]; then echo legacy=yes; fi; echo '--- engine'; "));
        assert!(g.contains("echo '--- users'; getent group docker | sed 's/^/group=/'; getent passwd deploy | cut -d: -f1 | sed 's/^/user=/'; "));
        assert!(g.ends_with("echo '--- service'; systemctl show -p LoadState -p ActiveState -p UnitFileState docker.service"));
        assert!(
            !step("source = \"distro\"")
                .gather()
                .unwrap()
                .contains("--- os")
        );
    }

    #[test]
    fn daemon_json() {
        assert_eq!(json_text(&daemon_config(None, None).unwrap()), DEFAULT_JSON);
        let t: toml::Table = toml::from_str("log-opts = { max-size = \"50m\" }\nlive-restore = false\nmtu = 1450\ndefault-address-pools = [{ base = \"10.200.0.0/16\", size = 24 }]").unwrap();
        assert_eq!(
            json_text(&daemon_config(Some(&t), Some("https://mirror.gcr.io")).unwrap()),
            "{\n  \"default-address-pools\": [\n    {\n      \"base\": \"10.200.0.0/16\",\n      \"size\": 24\n    }\n  ],\n  \"live-restore\": false,\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"50m\"\n  },\n  \"mtu\": 1450,\n  \"registry-mirrors\": [\n    \"https://mirror.gcr.io\"\n  ]\n}\n"
        );
        // Another log driver drops the json-file options.
        let t: toml::Table = toml::from_str("log-driver = \"journald\"").unwrap();
        assert_eq!(
            json_text(&daemon_config(Some(&t), None).unwrap()),
            "{\n  \"log-driver\": \"journald\"\n}\n"
        );
        let t: toml::Table = toml::from_str("labels = []\nx = {}").unwrap();
        assert_eq!(
            json_text(&daemon_config(Some(&t), None).unwrap()),
            "{\n  \"labels\": [],\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"10m\"\n  },\n  \"x\": {}\n}\n"
        );
    }

    /// The text hosts have had since the first release, for every kind of JSON value.
    #[test]
    fn json_text_is_exact() {
        let v = serde_json::json!({
            "b": [1, -2.5, 1e300, true, null, [], {}, [[]], ""],
            "a": "\u{e9} \"q\" \\ \n\t\u{1}",
            "A": {"z": {}, "y": [], "x": {"w": [{"v": 0}]}}
        });
        assert_eq!(
            json_text(&v),
            "{\n  \"A\": {\n    \"x\": {\n      \"w\": [\n        {\n          \"v\": 0\n        }\n      ]\n    },\n    \"y\": [],\n    \"z\": {}\n  },\n  \"a\": \"\u{e9} \\\"q\\\" \\\\ \\n\\t\\u0001\",\n  \"b\": [\n    1,\n    -2.5,\n    1e+300,\n    true,\n    null,\n    [],\n    {},\n    [\n      []\n    ],\n    \"\"\n  ]\n}\n"
        );
        assert_eq!(json_text(&serde_json::json!({})), "{}\n");
    }

    #[test]
    fn versions() {
        let v = "5:27.3.1-1~debian.12~bookworm";
        for ok in ["27.3.1", "27.3", "27", v] {
            assert!(version_matches(v, ok), "{ok}");
        }
        for no in ["27.3.10", "27.30", "2", "5:27.3.1", "27.3.1-2"] {
            assert!(!version_matches(v, no), "{no}");
        }
    }

    #[test]
    fn fresh_host_from_dockers_repository() {
        let s = step("users = [\"deploy\"]");
        let c = s.check(&facts(&fresh(), true, true)).unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "install apparmor",
                "fetch Docker's signing key from https://download.docker.com/linux/debian/gpg into /etc/apt/keyrings/docker.asc",
                "add Docker's repository (https://download.docker.com/linux/debian bookworm stable) in /etc/apt/sources.list.d/docker.sources",
                "write /etc/docker/daemon.json (before the engine first starts)",
                "install docker-ce, docker-ce-cli, containerd.io, docker-buildx-plugin, docker-compose-plugin (after apt-get update: docker-ce is not in the package lists)",
                "add deploy to the docker group",
                "enable and start docker.service",
            ]
        );
        let Check::Change(c) = c else { panic!() };
        assert_eq!(
            c[1].actions,
            vec![Action::run(fetch_key_command(
                "https://download.docker.com/linux/debian/gpg",
                "/etc/apt/keyrings/docker.asc",
                false
            ))]
        );
        assert_eq!(c[3].actions[0], Action::run("mkdir -p /etc/docker"));
        let Action::Upload {
            dest,
            content,
            mode,
            ..
        } = &c[3].actions[1]
        else {
            panic!()
        };
        assert_eq!(
            (dest.as_str(), &content[..], *mode),
            (
                "/etc/docker/daemon.json",
                DEFAULT_JSON.as_bytes(),
                Some(0o644)
            )
        );
        assert_eq!(
            c[4].actions,
            vec![
                Action::run(apt::update_command()),
                Action::run(format!(
                    "{INSTALL} docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin"
                ))
            ]
        );
        assert_eq!(c[5].actions, vec![Action::run("usermod -aG docker deploy")]);
        assert_eq!(
            c[6].actions,
            vec![Action::run("systemctl enable --now docker.service")]
        );
    }

    #[test]
    fn fresh_host_from_the_distribution() {
        let s = step("source = \"distro\"");
        let mut h = fresh();
        h.prereq = "pkg=ii  ca-certificates all 20230311\ncandidate=curl 7.88.1-10+deb12u12\n";
        h.engine = "candidate=apparmor 3.0.8-3\ncandidate=docker.io 20.10.24+dfsg1-1+deb12u1\n";
        let c = s.check(&facts(&h, false, false)).unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "install curl",
                "write /etc/docker/daemon.json (before the engine first starts)",
                "install apparmor, docker.io",
                "enable and start docker.service",
            ]
        );
    }

    #[test]
    fn already_done() {
        let s = step("users = \"deploy\"");
        assert_eq!(
            s.check(&facts(&done(), true, true)).unwrap(),
            Check::Ok("docker-ce 5:27.3.1-1~debian.12~bookworm running, /etc/docker/daemon.json up to date".into())
        );
        let s = step("version = \"27.3.1\"");
        let mut h = done();
        h.dpkg = "pkg=hi  docker-ce amd64 5:27.3.1-1~debian.12~bookworm\npkg=hi  docker-ce-cli amd64 5:27.3.1-1~debian.12~bookworm\n";
        assert!(matches!(
            s.check(&facts(&h, true, false)).unwrap(),
            Check::Ok(_)
        ));
        let s = step("source = \"distro\"");
        let mut h = done();
        h.prereq = "pkg=ii  ca-certificates all 20230311\npkg=ii  curl amd64 7.88.1-10+deb12u12\n";
        h.engine =
            "pkg=ii  apparmor amd64 3.0.8-3\npkg=ii  docker.io amd64 20.10.24+dfsg1-1+deb12u1\n";
        h.dpkg = "pkg=ii  docker.io amd64 20.10.24+dfsg1-1+deb12u1\n";
        assert_eq!(
            s.check(&facts(&h, false, false)).unwrap(),
            Check::Ok(
                "docker.io 20.10.24+dfsg1-1+deb12u1 running, /etc/docker/daemon.json up to date"
                    .into()
            )
        );
    }

    #[test]
    fn drifted() {
        // New settings: staged, validated, moved, restarted; no separate start.
        let s = step("daemon = { mtu = 1450 }");
        let mut h = done();
        h.service = "LoadState=loaded\nActiveState=failed\nUnitFileState=disabled\n";
        h.legacy = true;
        let c = s.check(&facts(&h, true, false)).unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "remove /etc/apt/sources.list.d/docker.list (replaced by /etc/apt/sources.list.d/docker.sources)",
                "update /etc/docker/daemon.json and restart docker",
                "enable docker.service (was disabled)",
            ]
        );
        let Check::Change(c) = c else { panic!() };
        assert_eq!(c[1].actions[0], Action::run("mkdir -p /etc/docker"));
        assert!(
            matches!(&c[1].actions[1], Action::Upload { dest, mode: Some(0o644), .. } if dest == "/etc/docker/daemon.json.provision-new")
        );
        assert_eq!(
            c[1].actions[2],
            Action::run(apply_daemon_json_command("/etc/docker/daemon.json"))
        );
        assert_eq!(
            c[1].diff.as_ref().unwrap().before.as_deref(),
            Some(DEFAULT_JSON)
        );
        // Same settings written differently: rewritten without a restart.
        let s = step("");
        let mut h = done();
        h.daemon = Some(
            "{\"log-opts\":{\"max-size\":\"10m\",\"max-file\":\"3\"},\"log-driver\":\"json-file\"}",
        );
        h.service = "LoadState=loaded\nActiveState=inactive\nUnitFileState=enabled\n";
        let c = s.check(&facts(&h, true, false)).unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "rewrite /etc/docker/daemon.json (same settings, new layout: no restart)",
                "start docker.service (was inactive)",
            ]
        );
        // A pin that the installed version does not satisfy; lists fresh, so refreshed here.
        let s = step("version = \"28.0\"");
        let Check::Change(c) = s.check(&facts(&done(), true, false)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install docker-ce and docker-ce-cli 28.0 (was 5:27.3.1-1~debian.12~bookworm) and hold them"
        );
        assert_eq!(
            c[0].actions,
            vec![
                Action::run(apt::update_command()),
                Action::run(pinned_install_command("28.0"))
            ]
        );
        // Satisfied but not held.
        let s = step("version = \"27.3\"");
        let Check::Change(c) = s.check(&facts(&done(), true, false)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "hold docker-ce and docker-ce-cli at 5:27.3.1-1~debian.12~bookworm"
        );
        // A user left the group.
        let s = step("users = [\"deploy\", \"ci\"]");
        let mut h = done();
        h.users = "group=docker:x:998:\nuser=deploy\nuser=ci\n";
        let Check::Change(c) = s.check(&facts(&h, true, true)).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "add deploy, ci to the docker group");
        assert_eq!(
            c[0].actions,
            vec![Action::run(
                "usermod -aG docker deploy && usermod -aG docker ci"
            )]
        );
        // A proxy no longer wanted.
        let s = step("");
        let f = facts(&done(), true, false).stdout.replace(
            "--- proxy\nkind=absent\n",
            &format!("--- proxy\n{}", file_facts(Some(&proxy_conf("http://x:1")))),
        );
        let Check::Change(c) = s.check(&Facts::new(f)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "remove /etc/apt/apt.conf.d/01provision-proxy (`apt_proxy` is not set)"
        );
    }

    #[test]
    fn refuses_the_other_engine_and_unknown_systems() {
        let s = step("source = \"distro\"");
        let e = s.check(&facts(&done(), false, false)).unwrap_err();
        assert_eq!(
            e.message,
            "web-1: docker-ce is installed, but the step asks for source = \"distro\" (docker.io)"
        );
        assert!(
            e.hint
                .unwrap()
                .starts_with("switching engines restarts every container")
        );
        let s = step("");
        let mut h = fresh();
        h.dpkg = "pkg=ii  docker.io amd64 20.10.24+dfsg1-1+deb12u1\n";
        let e = s.check(&facts(&h, true, false)).unwrap_err();
        assert_eq!(
            e.message,
            "web-1: docker.io is installed, but the step asks for source = \"docker\" (Docker's docker-ce)"
        );
        let f = facts(&fresh(), true, false)
            .stdout
            .replace("id=debian", "id=fedora");
        let e = s.check(&Facts::new(f)).unwrap_err();
        assert_eq!(
            e.message,
            "web-1: Docker's repository has no packages for this distribution (fedora)"
        );
        let f = facts(&fresh(), true, false)
            .stdout
            .replace("codename=bookworm", "codename=");
        let e = s.check(&Facts::new(f)).unwrap_err();
        assert_eq!(
            e.message,
            "web-1: /etc/os-release names no VERSION_CODENAME"
        );
    }

    #[test]
    fn key_given_inline_and_other_urls() {
        let key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQINBFit2ioBEADhWpZ8/wvZ6hUTiXOwQHXMAlaFHcPH9hAtr4F1y2+OYdbtMuth\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let s = step(&format!(
            "gpg_key = '''{key}'''\nrepo_url = \"https://mirror.example.com/docker-ce/linux/debian/\"\napt_proxy = \"http://10.0.0.2:3142\"\nmirror = \"https://mirror.gcr.io\""
        ));
        let c = s.check(&facts(&fresh(), true, false)).unwrap();
        let sm = summaries(&c);
        assert_eq!(
            sm[0],
            "apt uses the proxy http://10.0.0.2:3142 (/etc/apt/apt.conf.d/01provision-proxy)"
        );
        // With credentials in the URL: the file is 0600 and the summary hides them.
        let with_creds = step("apt_proxy = \"http://apt:pr0xy-pw@10.0.0.2:3142\"");
        let Check::Change(cc) = with_creds.check(&facts(&fresh(), true, false)).unwrap() else {
            panic!()
        };
        assert_eq!(
            cc[0].summary,
            "apt uses the proxy http://***@10.0.0.2:3142 (/etc/apt/apt.conf.d/01provision-proxy)"
        );
        assert!(
            matches!(
                &cc[0].actions[0],
                Action::Upload {
                    mode: Some(0o600),
                    ..
                }
            ),
            "{:?}",
            cc[0].actions[0].describe()
        );
        assert_eq!(
            sm[2],
            "place Docker's signing key in /etc/apt/keyrings/docker.asc"
        );
        assert_eq!(
            sm[3],
            "add Docker's repository (https://mirror.example.com/docker-ce/linux/debian bookworm stable) in /etc/apt/sources.list.d/docker.sources"
        );
        let Check::Change(c) = c else { panic!() };
        assert_eq!(
            c[2].actions[0],
            Action::run("install -m 0755 -d /etc/apt/keyrings")
        );
        let Action::Upload { content, .. } = &c[4].actions[1] else {
            panic!()
        };
        assert!(
            String::from_utf8(content.to_vec())
                .unwrap()
                .contains("\"registry-mirrors\": [\n    \"https://mirror.gcr.io\"\n  ]")
        );
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with_ctx(build, "source = \"apt\""));
        assert_eq!(
            e.message,
            "`source`: unknown variant `apt`, expected `docker` or `distro`"
        );
        let e = build_err(build_with_ctx(
            build,
            "source = \"distro\"\nversion = \"27.3.1\"",
        ));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (
                Some("version"),
                "`version` applies only to source = \"docker\""
            )
        );
        let e = build_err(build_with_ctx(build, "version = \"latest\""));
        assert_eq!(
            e.message,
            "`version` \"latest\" is not a Debian package version"
        );
        assert_eq!(
            without_credentials("http://u:p%40ss@10.0.0.2:3142/x"),
            Some("http://***@10.0.0.2:3142/x".into())
        );
        assert_eq!(without_credentials("http://10.0.0.2:3142/a@b"), None);
        let e = build_err(build_with_ctx(build, "apt_proxy = \"10.0.0.2:3142\""));
        assert_eq!(
            e.message,
            "`apt_proxy` \"10.0.0.2:3142\" is not an http(s) URL"
        );
        let e = build_err(build_with_ctx(build, "mirror = \"https://x\\\"; rm\""));
        assert_eq!(e.key.as_deref(), Some("mirror"));
        let e = build_err(build_with_ctx(build, "users = [\"Deploy\"]"));
        assert_eq!(e.key.as_deref(), Some("users"));
        let e = build_err(build_with_ctx(
            build,
            "daemon = { hosts = [\"tcp://0.0.0.0:2375\"] }",
        ));
        assert_eq!(e.message, "`daemon` must not set `hosts`");
        let e = build_err(build_with_ctx(build, "daemon = { when = 1979-05-27 }"));
        assert_eq!(
            e.message,
            "`daemon`: 1979-05-27 is a date, which JSON cannot hold"
        );
        let e = build_err(build_with_ctx(
            build,
            "mirror = \"https://m\"\ndaemon = { registry-mirrors = [\"https://n\"] }",
        ));
        assert_eq!(e.key.as_deref(), Some("mirror"));
        let e = build_err(build_with_ctx(build, "gpg_key = \"abc\""));
        assert_eq!(
            e.message,
            "`gpg_key` is not an ASCII-armored PGP public key"
        );
        let e = build_err(build_with_ctx(build, "sourc = \"docker\""));
        assert!(e.help.unwrap().starts_with("did you mean `source`?"));
        // A user that does not exist on the host is a check error naming it.
        let s = step("users = [\"ci\"]");
        let e = s.check(&facts(&done(), true, true)).unwrap_err();
        assert_eq!(e.message, "web-1: user ci does not exist");
    }
}

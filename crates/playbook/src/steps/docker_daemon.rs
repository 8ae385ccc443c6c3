//! The `docker` step's /etc/docker/daemon.json: its settings (log rotation, the registry
//! mirror, then the playbook's `daemon` table over them), its text, and the change that writes
//! it: before the engine first starts, or validated on a staged copy and followed by a restart.

use super::docker_engine::SERVICE;
use super::file::{self, Kind, PathFacts};
use super::systemd::{self, Verb};
use super::util;
use crate::ctx::ParamError;
use provision_engine::step::{Action, Change, StepError};
use provision_transport::shell::quote;
use serde_json::{Map, Value};

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

/// JSON with sorted keys, two-space indents and a final newline: the same text for the same
/// settings, whatever order they were written in. serde_json's objects keep their keys sorted
/// (its `preserve_order` feature is off) and its pretty printer indents by two spaces.
pub fn json_text(v: &Value) -> String {
    let mut out = serde_json::to_string_pretty(v).expect("a JSON value always serializes");
    out.push('\n');
    out
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

/// The change that makes `path` hold `json`, and whether it restarts docker. Before the engine
/// is installed the file is simply written (the engine first starts with it); later, new
/// settings are staged, validated and followed by a restart, and the same settings in a new
/// layout are rewritten without one.
pub fn change(
    path: &str,
    json: &str,
    now: &PathFacts,
    installed: bool,
) -> Result<(Option<Change>, bool), StepError> {
    let Some(mut c) = file::change(path, "path", json.as_bytes(), now)? else {
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
        .zip(serde_json::from_str::<Value>(json).ok())
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
            content: zeroize::Zeroizing::new(json.as_bytes().to_vec()),
            mode: Some(mode),
            owner: Some("root".into()),
            group: Some("root".into()),
        },
        Action::run(apply_daemon_json_command(path)),
    ];
    Ok((Some(c), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::docker::testing::*;

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            apply_daemon_json_command("/etc/docker/daemon.json"),
            "s=/etc/docker/daemon.json.provision-new; if dockerd --help 2>&1 | grep -q -e '--validate'; then \
             dockerd --validate --config-file \"$s\" >/dev/null || { rm -f \"$s\"; echo 'dockerd rejects the new /etc/docker/daemon.json (see above); the running configuration is unchanged' >&2; exit 1; }; fi; \
             mv -f \"$s\" /etc/docker/daemon.json && systemctl restart docker.service"
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
    fn same_settings_in_a_new_layout() {
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
    }

    #[test]
    fn param_errors() {
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
    }
}

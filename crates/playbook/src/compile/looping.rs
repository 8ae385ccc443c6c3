//! A looped step expanded when the playbook is compiled: one step per item, in order, each
//! with its item in the templates' context (under the loop var) and a label of its own, so the
//! engine runs and reports each repetition as any other step.

use provision_engine::diagnostic::Diagnostic;
use provision_engine::playbook_file::{LoopItems, StepLoop, StepSpec};
use provision_engine::template;

/// Longest label shown for an item; longer ones are cut (a table's rendering can be long).
const MAX_LABEL_CHARS: usize = 60;

/// One repetition of a step: the whole step when it has no loop.
pub(crate) struct Repetition {
    /// The step's name, followed by the item's label in a looped step: `users (alice)`.
    pub title: String,
    /// The loop var and this repetition's item.
    pub item: Option<(String, minijinja::Value)>,
}

impl Repetition {
    /// A template context with this repetition's item in it.
    pub fn context(&self, ctx: &minijinja::Value) -> minijinja::Value {
        match &self.item {
            None => ctx.clone(),
            Some((var, item)) => {
                let own: std::collections::BTreeMap<&str, minijinja::Value> =
                    [(var.as_str(), item.clone())].into_iter().collect();
                // The loop var cannot be one of the context's names (the parser refuses them).
                minijinja::value::merge_maps([minijinja::Value::from(own), ctx.clone()])
            }
        }
    }
}

/// The repetitions of `spec`: its items evaluated (a loop over vars, over the cluster's
/// context: the same for every host) and labelled. An error is at `loop` or `loop_label`.
pub(crate) fn repetitions(
    env: &minijinja::Environment<'_>,
    cluster: &minijinja::Value,
    spec: &StepSpec,
) -> Result<Vec<Repetition>, Diagnostic> {
    let Some(l) = &spec.loop_over else {
        return Ok(vec![Repetition {
            title: spec.name.clone(),
            item: None,
        }]);
    };
    let items = items(env, l, cluster).map_err(|(message, help)| {
        Diagnostic::error(&spec.file, l.at, format!("step `{}`: {message}", spec.name))
            .with_help(help)
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mut rep = Repetition {
                title: String::new(),
                item: Some((l.var.clone(), minijinja::Value::from(minijinja::value::Serde(item)))),
            };
            let shown = match &l.label {
                None => label(item),
                Some(source) => {
                    let ctx = rep.context(cluster);
                    let at = l.label_at.unwrap_or(l.at);
                    let err = |message: String| {
                        Diagnostic::error(
                            &spec.file,
                            at,
                            format!("step `{}`, item {}: {message}", spec.name, i + 1),
                        )
                        .with_help(format!(
                            "loop_label is a template over vars and the item, e.g. loop_label = \"{{{{ {}.name }}}}\"",
                            l.var
                        ))
                    };
                    let text = template::render(env, "loop_label", source, &ctx)
                        .map_err(|e| err(format!("cannot render `loop_label`: {}", e.message)))?;
                    let text = one_line(&text);
                    if text.is_empty() {
                        return Err(err("`loop_label` renders to nothing".into()));
                    }
                    text
                }
            };
            rep.title = format!("{} ({shown})", spec.name);
            Ok(rep)
        })
        .collect()
}

/// The items of a loop, as TOML values; the error is a message and what to write instead.
pub(crate) fn items(
    env: &minijinja::Environment<'_>,
    l: &StepLoop,
    ctx: &minijinja::Value,
) -> Result<Vec<toml::Value>, (String, String)> {
    let expr = match &l.items {
        LoopItems::List(items) => return Ok(items.clone()),
        LoopItems::Expression(expr) => expr,
    };
    let give_a_list = "give `loop` a list: users = [\"alice\", \"bob\"] in [vars] and loop = \"{{ vars.users }}\"".to_string();
    let value = env
        .compile_expression(expr)
        .and_then(|e| e.eval(ctx))
        .map_err(|e| {
            (
                format!(
                    "cannot evaluate `loop`: {}",
                    e.detail().map_or(e.kind().to_string(), str::to_string)
                ),
                "a loop reads the cluster's [vars] (not a host's own vars), e.g. loop = \"{{ vars.users }}\"".to_string(),
            )
        })?;
    if value.is_undefined() {
        return Err((
            format!("`loop` reads `{expr}`, which is undefined"),
            "define it in [vars] of the cluster file (a loop reads the cluster's vars, not a host's own), or write the list in the playbook: loop = [\"a\", \"b\"]".into(),
        ));
    }
    use minijinja::value::ValueKind;
    if !matches!(value.kind(), ValueKind::Seq | ValueKind::Iterable) {
        let what = match value.kind() {
            ValueKind::String => format!("a string (\"{}\")", short(value.as_str().unwrap_or(""))),
            ValueKind::Number => format!("a number ({value})"),
            ValueKind::Bool => format!("a boolean ({value})"),
            ValueKind::Map => "a table".to_string(),
            ValueKind::None => "none".to_string(),
            other => format!("a {other}"),
        };
        let help = match value.kind() {
            ValueKind::Map => format!(
                "{give_a_list}; a table's [key, value] pairs are a list: loop = \"{{{{ {expr} | items }}}}\""
            ),
            _ => give_a_list,
        };
        return Err((
            format!("`loop` must give a list, and `{expr}` is {what}"),
            help,
        ));
    }
    let Ok(iter) = value.try_iter() else {
        return Err((format!("`loop` cannot go over `{expr}`"), give_a_list));
    };
    iter.enumerate()
        .map(|(i, v)| {
            toml::Value::try_from(&v).map_err(|_| {
                (
                    format!(
                        "item {} of `{expr}` is {}, which a step cannot take",
                        i + 1,
                        if v.is_none() {
                            "none".to_string()
                        } else {
                            v.kind().to_string()
                        }
                    ),
                    "items are strings, numbers, booleans or tables".to_string(),
                )
            })
        })
        .collect()
}

/// How an item is shown after its step's name: a string as it is, a table by its `name` (else
/// a short inline rendering), anything else as TOML writes it.
pub(crate) fn label(item: &toml::Value) -> String {
    let text = match item {
        toml::Value::String(s) => s.clone(),
        toml::Value::Table(t) => match t.get("name") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(other @ (toml::Value::Integer(_) | toml::Value::Float(_))) => other.to_string(),
            _ => inline(item),
        },
        other => inline(other),
    };
    short(&one_line(&text))
}

/// A value as inline TOML: `{ path = "/a", mode = "0644" }`.
fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            let parts: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        toml::Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// Runs of whitespace (newlines included) as one space: a label is one line of output.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn short(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL_CHARS {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX_LABEL_CHARS - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_engine::playbook_file::PlaybookFile;
    use std::path::Path;

    fn pb(step: &str) -> PlaybookFile {
        let text = format!("[[steps]]\nname = \"users\"\nuse = \"copy\"\n{step}\n");
        PlaybookFile::parse(&text, Path::new("p.toml"), &["copy"]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn vars(v: serde_json::Value) -> minijinja::Value {
        minijinja::Value::from(minijinja::value::Serde(serde_json::json!({ "vars": v })))
    }

    fn titles(step: &str, ctx: &minijinja::Value) -> Result<Vec<String>, String> {
        let pb = pb(step);
        repetitions(&template::environment(), ctx, &pb.steps[0])
            .map(|r| r.into_iter().map(|r| r.title).collect())
            .map_err(|d| d.to_string())
    }

    #[test]
    fn labels_show_the_item() {
        let t = |s: &str| toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap()["v"].clone();
        assert_eq!(label(&t("\"alice\"")), "alice");
        assert_eq!(label(&t("42")), "42");
        assert_eq!(label(&t("true")), "true");
        assert_eq!(label(&t("{ name = \"bob\", uid = 7 }")), "bob");
        assert_eq!(label(&t("{ name = 3 }")), "3");
        assert_eq!(
            label(&t("{ path = \"/a\", mode = \"0644\", tags = [1, 2] }")),
            "{ mode = \"0644\", path = \"/a\", tags = [1, 2] }"
        );
        assert_eq!(label(&t("\"two\\nlines  here\"")), "two lines here");
        let long = label(&t(&format!("\"{}\"", "x".repeat(100))));
        assert_eq!(long.chars().count(), MAX_LABEL_CHARS);
        assert!(long.ends_with("x…"), "{long}");
    }

    #[test]
    fn a_step_without_a_loop_is_one_repetition_under_its_name() {
        let pb = pb("with = { dest = \"/x\" }");
        let reps = repetitions(
            &template::environment(),
            &vars(serde_json::json!({})),
            &pb.steps[0],
        )
        .unwrap();
        assert_eq!(reps.len(), 1);
        assert_eq!(reps[0].title, "users");
        assert!(reps[0].item.is_none());
    }

    #[test]
    fn a_loop_expands_in_order_with_the_item_in_context() {
        let ctx = vars(
            serde_json::json!({"users": [{"name": "alice", "uid": 1}, {"name": "bob", "uid": 2}]}),
        );
        assert_eq!(
            titles("loop = [\"b\", \"a\", 3]", &ctx).unwrap(),
            ["users (b)", "users (a)", "users (3)"]
        );
        assert_eq!(
            titles("loop = \"{{ vars.users }}\"", &ctx).unwrap(),
            ["users (alice)", "users (bob)"]
        );
        assert_eq!(
            titles("loop = \"{{ vars.users }}\"\nloop_var = \"u\"\nloop_label = \"{{ u.name }} ({{ u.uid }})\"", &ctx).unwrap(),
            ["users (alice (1))", "users (bob (2))"]
        );
        assert_eq!(titles("loop = []", &ctx).unwrap(), Vec::<String>::new());
        // The item is in the context under the loop var, beside what was there.
        let pb = pb("loop = \"{{ vars.users }}\"\nloop_var = \"u\"");
        let env = template::environment();
        let reps = repetitions(&env, &ctx, &pb.steps[0]).unwrap();
        let ctx1 = reps[1].context(&ctx);
        assert_eq!(
            template::render(
                &env,
                "t",
                "{{ u.name }}:{{ u.uid }}:{{ vars.users | length }}",
                &ctx1
            )
            .unwrap(),
            "bob:2:2"
        );
        assert!(template::truthy(&env, "u.uid == 2", &ctx1).unwrap());
    }

    #[test]
    fn a_loop_over_what_is_not_a_list_is_an_error_at_loop() {
        let ctx =
            vars(serde_json::json!({"name": "alice", "n": 3, "t": {"a": 1}, "xs": [1, null]}));
        let e = titles("loop = \"{{ vars.name }}\"", &ctx).unwrap_err();
        assert!(
            e.starts_with("p.toml:4:8: error: step `users`: `loop` must give a list, and `vars.name` is a string (\"alice\")\n  help: give `loop` a list"),
            "{e}"
        );
        let e = titles("loop = \"{{ vars.n }}\"", &ctx).unwrap_err();
        assert!(
            e.contains("`loop` must give a list, and `vars.n` is a number (3)"),
            "{e}"
        );
        let e = titles("loop = \"{{ vars.t }}\"", &ctx).unwrap_err();
        assert!(
            e.contains("`vars.t` is a table") && e.contains("{{ vars.t | items }}"),
            "{e}"
        );
        let e = titles("loop = \"{{ vars.users }}\"", &ctx).unwrap_err();
        assert!(
            e.starts_with("p.toml:4:8: error: step `users`: `loop` reads `vars.users`, which is undefined\n  help: define it in [vars]"),
            "{e}"
        );
        let e = titles("loop = \"{{ vars.xs }}\"", &ctx).unwrap_err();
        assert!(
            e.contains("item 2 of `vars.xs` is none, which a step cannot take"),
            "{e}"
        );
        // A table's pairs are a list.
        assert_eq!(
            titles("loop = \"{{ vars.t | items }}\"", &ctx).unwrap(),
            ["users ([\"a\", 1])"]
        );
        let e = titles("loop = [1]\nloop_label = \"{{ item.name }}\"", &ctx).unwrap_err();
        assert!(
            e.starts_with("p.toml:5:14: error: step `users`, item 1: cannot render `loop_label`"),
            "{e}"
        );
        let e = titles("loop = [\"\"]\nloop_label = \"{{ item }}\"", &ctx).unwrap_err();
        assert!(e.contains("`loop_label` renders to nothing"), "{e}");
    }

    /// The whole compiler: a looped step is one step per item, in order, each under its label,
    /// its `when` and `with` evaluated per host with the item; choosing steps keeps or drops all
    /// of a looped entry's repetitions.
    #[test]
    fn a_looped_step_compiles_to_one_step_per_item() {
        use provision_engine::inventory::Inventory;
        use provision_engine::step::{Action, Check, Facts};
        let text = "name = \"t\"\n[vars]\nusers = [{ name = \"alice\" }, { name = \"bob\" }, { name = \"carol\" }]\n\
                    [[hosts]]\nname = \"web-1\"\naddress = \"10.0.0.5\"\nroles = [\"worker\"]\n\
                    [[hosts]]\nname = \"web-2\"\naddress = \"10.0.0.6\"\nroles = [\"worker\"]\n";
        let inv = Inventory::parse(text, Path::new("c.toml"), &Default::default()).unwrap();
        let playbook = r#"
[[steps]]
name = "home"
use = "command"
tags = ["users"]
loop = "{{ vars.users }}"
loop_var = "user"
when = "user.name != 'carol' or host.name == 'web-2'"
with = { run = "mkdir /home/{{ user.name }}-{{ host.name }}" }

[[steps]]
name = "motd"
use = "command"
tags = ["motd"]
loop = ["a", "b"]
with = { run = "echo {{ item }}" }
"#;
        let pb = PlaybookFile::parse(playbook, Path::new("p.toml"), &crate::known_steps())
            .unwrap_or_else(|e| panic!("{e}"));
        let secrets = toml::Table::new();
        let none = |_: &str| false;
        let view = crate::compile::SecretsView {
            table: &secrets,
            contains_secret: &none,
        };
        let mut compiled = crate::compile(&inv, &pb, &view).unwrap_or_else(|e| panic!("{e}"));
        let titles: Vec<&str> = compiled.steps.iter().map(|s| s.title()).collect();
        assert_eq!(
            titles,
            [
                "home (alice)",
                "home (bob)",
                "home (carol)",
                "motd (a)",
                "motd (b)"
            ]
        );
        let runs_on: Vec<(usize, Vec<String>)> = compiled
            .origins
            .iter()
            .map(|o| (o.spec, o.runs_on.clone()))
            .collect();
        let both = vec!["web-1".to_string(), "web-2".to_string()];
        assert_eq!(
            runs_on,
            [
                (0, both.clone()),
                (0, both.clone()),
                (0, vec!["web-2".to_string()]),
                (1, both.clone()),
                (1, both.clone()),
            ]
        );
        let plan = compiled.steps[2].plan(&Default::default());
        assert!(
            matches!(plan.hosts["web-1"], Ok(Check::Skip(_))),
            "{plan:?}"
        );
        let scripts = |step: usize, host: &str| -> Vec<Action> {
            let plan = compiled.steps[step].plan(&[(host.to_string(), Facts::default())].into());
            match &plan.hosts[host] {
                Ok(Check::Change(changes)) => {
                    changes.iter().flat_map(|c| c.actions.clone()).collect()
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(scripts(1, "web-1"), [Action::run("mkdir /home/bob-web-1")]);
        assert_eq!(
            scripts(2, "web-2"),
            [Action::run("mkdir /home/carol-web-2")]
        );
        assert_eq!(scripts(4, "web-2"), [Action::run("echo b")]);

        let runs = crate::select::Selection {
            tags: vec!["motd".into()],
            ..Default::default()
        }
        .decide(&pb)
        .unwrap();
        compiled.retain_chosen(&runs);
        let titles: Vec<&str> = compiled.steps.iter().map(|s| s.title()).collect();
        assert_eq!(titles, ["motd (a)", "motd (b)"]);
        assert_eq!(compiled.origins.len(), 2);
    }
}

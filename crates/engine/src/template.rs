//! minijinja rendering of step parameters and template files: strict about
//! undefined values, with errors that name the template and line.

use minijinja::{Environment, UndefinedBehavior, Value};

/// A rendering environment shared by a run: strict undefined, no HTML
/// escaping (we render config files, not web pages), trailing newline kept.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .expect("default delimiters are valid");
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    // `fail("...")`: a template refuses a value it cannot use, with the template's own words
    // (Ansible's `fail`), e.g. a var that must be one of a few values.
    env.add_function(
        "fail",
        |message: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("{FAILED}{message}"),
            ))
        },
    );
    // `did_you_mean(word, candidates)`: the closest candidate, or none (for `fail` messages).
    env.add_function("did_you_mean", |word: String, candidates: Vec<String>| {
        let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
        Value::from(crate::diagnostic::did_you_mean(&word, &refs).map(str::to_string))
    });
    env
}

/// Marks the detail of an error raised by the template's own `fail`: shown as it is written.
const FAILED: &str = "template failed: ";

/// Renders `source` (named `name` in errors) against `ctx`.
pub fn render(
    env: &Environment<'_>,
    name: &str,
    source: &str,
    ctx: &Value,
) -> Result<String, TemplateError> {
    env.render_named_str(name, source, ctx)
        .map_err(|e| TemplateError::from_minijinja(name, &e))
}

/// Evaluates a `when` expression to a boolean.
pub fn truthy(env: &Environment<'_>, expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
    let e = env
        .compile_expression_owned(expr.to_string())
        .map_err(|e| TemplateError::from_minijinja("when", &e))?;
    let v = e
        .eval(ctx)
        .map_err(|e| TemplateError::from_minijinja("when", &e))?;
    if v.is_undefined() {
        // Strict mode does not reach values read straight out of an expression.
        return Err(TemplateError {
            name: "when".into(),
            line: None,
            message: format!("`{expr}` is undefined (check [vars] and the host's vars)"),
        });
    }
    Ok(v.is_true())
}

/// The top-level names a template reads without defining them itself (`{{ item.name }}` reads
/// `item`; `{% for h in hosts %}` reads `hosts`, not `h`). None: it does not parse (rendering
/// reports that, at its line).
pub fn names_read(source: &str) -> Option<std::collections::HashSet<String>> {
    let env = environment();
    let t = env.template_from_str(source).ok()?;
    Some(t.undeclared_variables(false))
}

/// [`names_read`] for an expression (`when`).
pub fn names_read_by_expression(expr: &str) -> Option<std::collections::HashSet<String>> {
    let env = environment();
    let e = env.compile_expression(expr).ok()?;
    Some(e.undeclared_variables(false))
}

/// Renders every string inside a TOML value (tables and arrays recursively).
pub fn render_toml(
    env: &Environment<'_>,
    name: &str,
    v: &toml::Value,
    ctx: &Value,
) -> Result<toml::Value, TemplateError> {
    Ok(match v {
        toml::Value::String(s) if s.contains("{{") || s.contains("{%") => {
            match native(env, name, s, ctx)? {
                Some(value) => value,
                None => toml::Value::String(render(env, name, s, ctx)?),
            }
        }
        toml::Value::Array(a) => toml::Value::Array(
            a.iter()
                .map(|x| render_toml(env, name, x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => {
            let mut out = toml::Table::new();
            for (k, x) in t {
                out.insert(k.clone(), render_toml(env, &format!("{name}.{k}"), x, ctx)?);
            }
            toml::Value::Table(out)
        }
        other => other.clone(),
    })
}

/// A string that is exactly one `{{ expression }}` keeps the expression's type
/// (`"{{ vars.drain }}"` gives a boolean, `"{{ vars.ports }}"` a list), as users of
/// Ansible expect. None: render it as text.
fn native(
    env: &Environment<'_>,
    name: &str,
    s: &str,
    ctx: &Value,
) -> Result<Option<toml::Value>, TemplateError> {
    let t = s.trim();
    let Some(inner) = t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) else {
        return Ok(None);
    };
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return Ok(None);
    }
    let expr = env
        .compile_expression_owned(inner.trim().to_string())
        .map_err(|e| TemplateError::from_minijinja(name, &e))?;
    let v = expr
        .eval(ctx)
        .map_err(|e| TemplateError::from_minijinja(name, &e))?;
    if v.is_undefined() {
        // Let the text renderer report it, with strict undefined behavior.
        return Ok(None);
    }
    if v.kind() == minijinja::value::ValueKind::String {
        return Ok(None);
    }
    Ok(toml::Value::try_from(&v).ok())
}

/// A rendering failure: which template, which line, what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TemplateError {
    pub name: String,
    pub line: Option<usize>,
    pub message: String,
}

impl TemplateError {
    fn from_minijinja(name: &str, e: &minijinja::Error) -> Self {
        let mut message = match e.detail() {
            Some(d) if d.starts_with(FAILED) => d[FAILED.len()..].to_string(),
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        };
        if e.kind() == minijinja::ErrorKind::UndefinedError {
            message.push_str(" (a variable or secret this template uses is not defined: check [vars], the host's vars, and the secrets file)");
        }
        TemplateError {
            name: e.name().unwrap_or(name).to_string(),
            line: e.line(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fail` stops the render with the template's message at its line; `did_you_mean` finds the
    /// closest word for it.
    #[test]
    fn templates_can_refuse_a_value_in_their_own_words() {
        let env = environment();
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"vars": {"mode": "lcoal"}}),
        ));
        let t = "a\n{% if vars.mode not in ['local', 'share'] %}{{ fail('mode must be local or share, not ' ~ vars.mode ~ '; did you mean ' ~ did_you_mean(vars.mode, ['local', 'share']) ~ '?') }}{% endif %}\n";
        let e = render(&env, "c.yml", t, &ctx).unwrap_err();
        assert_eq!(e.name, "c.yml");
        assert_eq!(e.line, Some(2));
        assert_eq!(
            e.message,
            "mode must be local or share, not lcoal; did you mean local?"
        );
        let ok = Value::from(minijinja::value::Serde(
            serde_json::json!({"vars": {"mode": "share"}}),
        ));
        assert_eq!(render(&env, "c.yml", t, &ok).unwrap(), "a\n\n");
        let none = render(
            &env,
            "x",
            "{{ did_you_mean('zzzz', ['local']) is none }}",
            &ok,
        )
        .unwrap();
        assert_eq!(none, "True");
    }

    #[test]
    fn strict_undefined_names_template_and_line() {
        let env = environment();
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"vars": {"a": 1}, "secrets": {}}),
        ));
        assert_eq!(
            render(&env, "t", "x={{ vars.a }}\n", &ctx).unwrap(),
            "x=1\n"
        );
        let e = render(
            &env,
            "daemon.json",
            "{\n  \"k\": \"{{ secrets.db_password }}\"\n}",
            &ctx,
        )
        .unwrap_err();
        assert_eq!(e.name, "daemon.json");
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string().starts_with("daemon.json:2: undefined value"),
            "{e}"
        );
    }

    #[test]
    fn no_html_escaping() {
        let env = environment();
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({"v": "<a&b>"})));
        assert_eq!(render(&env, "t", "{{ v }}", &ctx).unwrap(), "<a&b>");
    }

    #[test]
    fn when_expressions() {
        let env = environment();
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"vars": {"lb": true, "n": 0}}),
        ));
        assert!(truthy(&env, "vars.lb", &ctx).unwrap());
        assert!(!truthy(&env, "vars.n > 0", &ctx).unwrap());
        assert!(truthy(&env, "vars.missing", &ctx).is_err());
    }

    #[test]
    fn a_lone_expression_keeps_its_type() {
        let env = environment();
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"vars": {"drain": false, "n": 3, "ports": [80, 443], "s": "x"}}),
        ));
        let v: toml::Value = toml::from_str("a = \"{{ vars.drain }}\"\nb = \"{{ vars.n + 1 }}\"\nc = \"{{ vars.ports }}\"\nd = \"{{ vars.s }}\"\ne = \"n={{ vars.n }}\"\nf = \"{{ vars.missing | default(true) }}\"\n").unwrap();
        let r = render_toml(&env, "with", &v, &ctx).unwrap();
        let expected: toml::Value =
            toml::from_str("a = false\nb = 4\nc = [80, 443]\nd = \"x\"\ne = \"n=3\"\nf = true\n")
                .unwrap();
        assert_eq!(r, expected);
        let v: toml::Value = toml::from_str("a = \"{{ vars.missing }}\"").unwrap();
        assert!(
            render_toml(&env, "with", &v, &ctx).is_err(),
            "undefined stays an error"
        );
    }

    #[test]
    fn names_a_template_reads() {
        let mut names: Vec<String> = names_read(
            "{{ item.name }} {% for h in hosts %}{{ h }}{% endfor %}{% set x = 1 %}{{ x }}",
        )
        .unwrap()
        .into_iter()
        .collect();
        names.sort();
        assert_eq!(names, ["hosts", "item"]);
        assert_eq!(names_read("{{ unclosed"), None);
        let names = names_read_by_expression("user.admin and vars.x").unwrap();
        assert!(names.contains("user") && names.contains("vars") && names.len() == 2);
    }

    #[test]
    fn renders_nested_toml() {
        let env = environment();
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"host": {"name": "web-1"}}),
        ));
        let v: toml::Value =
            toml::from_str("a = \"{{ host.name }}\"\nb = [\"x{{ host.name }}\", 3]\n").unwrap();
        let r = render_toml(&env, "with", &v, &ctx).unwrap();
        let expected: toml::Value = toml::from_str("a = \"web-1\"\nb = [\"xweb-1\", 3]\n").unwrap();
        assert_eq!(r, expected);
    }
}

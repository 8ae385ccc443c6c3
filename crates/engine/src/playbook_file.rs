//! Playbook files: an ordered list of `[[steps]]`, each naming a built-in step, its target hosts,
//! an optional condition and its parameters, the `[[handlers]]` steps notify, and the
//! `[[secrets]]` the playbook needs, validated with positions for every problem. `include`
//! entries (`include.rs`) splice the steps of other files and role directories in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use provision_secrets::Alphabet;

use crate::diagnostic::{ConfigError, Diagnostic, Reporter, did_you_mean, to_table};
use crate::inventory::io_reason;
use crate::selector::Selector;

mod loops;
mod tags;
pub use loops::{DEFAULT_LOOP_VAR, LoopItems, StepLoop};
pub use tags::{ALWAYS, NEVER};
mod notify;
pub use notify::{FLUSH_HANDLERS, Notify};
mod include;
pub use include::{BUILTIN_PREFIX, Builtins, Scope};
mod delegate;
mod fact_reads;
mod order;
mod outcome;
mod register;
mod rollout;
pub use delegate::On;
pub use order::After;
pub use outcome::JUDGED_STEPS;

/// One `[[steps]]` entry, parsed but not yet built into a step.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Shown in output; defaults to `uses`.
    pub name: String,
    /// The built-in step, from `use`.
    pub uses: String,
    pub hosts: Selector,
    /// Position of the `hosts` value (of the step when it has none): unknown names in the
    /// pattern are shown there once the inventory is known.
    pub hosts_at: (usize, usize),
    /// A minijinja expression, evaluated later per host.
    pub when: Option<String>,
    /// `timeout` (seconds): how long each command of the step may run.
    pub timeout: Option<std::time::Duration>,
    /// Parameters, rendered and checked later by the step's constructor.
    pub with: toml::Table,
    /// Position of the `[[steps]]` header (or inline table).
    pub line: usize,
    pub column: usize,
    /// Position of each top-level key of `with`, so a constructor can point at a bad parameter.
    pub param_positions: BTreeMap<String, (usize, usize)>,
    /// `tags`: what `--tags` and `--skip-tags` choose the step by.
    pub tags: Vec<String>,
    /// `loop`: the step is repeated once per item (expanded when the playbook is compiled).
    pub loop_over: Option<StepLoop>,
    /// `notify`: the handlers to run on each host this step changes.
    pub notify: Vec<Notify>,
    /// The file the step is written in (an included file's steps are in theirs): where its
    /// diagnostics point.
    pub file: PathBuf,
    /// What the includes that brought the step in give it: vars, where files are looked up.
    pub scope: Scope,
    /// `register`: the name later steps read this step's result by.
    pub register: Option<String>,
    /// `retries`, `delay`, `until`.
    pub retry: Option<crate::registered::Retry>,
    /// The `when` reads a registered result: it is decided per host when the step is reached,
    /// not when the playbook is compiled.
    pub when_at_run: bool,
    /// `serial`, `max_fail_percentage`, `run_once`, as written on this step (the play's apply
    /// where it sets none: [`PlaybookFile::rollout`]).
    pub rollout: crate::rollout::Rollout,
    /// `on`: the host its gather and commands run on for each of its hosts.
    pub on: Option<On>,
    /// `ignore_errors`, `failed_when`, `changed_when`.
    pub rules: crate::registered::ResultRules,
    /// `after`: earlier steps this one waits for under the `pipelined` strategy.
    pub after: Vec<After>,
}

impl StepSpec {
    /// A diagnostic at parameter `key` (or at the step itself when the key is absent).
    pub fn param_error(
        &self,
        file: &Path,
        key: &str,
        message: String,
        help: Option<String>,
    ) -> Diagnostic {
        let at = self
            .param_positions
            .get(key)
            .copied()
            .unwrap_or((self.line, self.column));
        Diagnostic {
            help,
            ..Diagnostic::error(file, at, message)
        }
    }
}

/// One `[[secrets]]` entry: a value the playbook's templates read from the secrets file, so
/// that check-config can name every missing one and `provision secrets generate` can make them.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretSpec {
    /// Dotted key in the secrets file (`appwrite.db_pass`), as templates read it.
    pub name: String,
    pub description: Option<String>,
    /// A missing optional secret is not an error (templates give it a default).
    pub required: bool,
    /// Length and alphabet of a generated value; None: a person must set it.
    pub generate: Option<(usize, Alphabet)>,
    /// A minijinja expression over vars: the secret is needed only where it is true.
    pub when: Option<String>,
    pub line: usize,
    pub column: usize,
    /// The file it is declared in (an included file's secrets are merged into the playbook's).
    pub file: PathBuf,
}

/// A loaded playbook file.
#[derive(Debug, Clone)]
pub struct PlaybookFile {
    pub path: PathBuf,
    pub steps: Vec<StepSpec>,
    pub secrets: Vec<SecretSpec>,
    /// `[[handlers]]`, in declaration order (the order they run in).
    pub handlers: Vec<StepSpec>,
    /// The top-level `serial` and `max_fail_percentage`: for every step that sets none.
    pub rollout: crate::rollout::Rollout,
    /// The top-level `strategy` (the playbook's own; an included file's does not apply).
    pub strategy: crate::pipeline::Strategy,
}

const TOP_KEYS: &[&str] = &[
    "steps",
    "secrets",
    "handlers",
    "serial",
    "max_fail_percentage",
    "strategy",
];
const SECRET_KEYS: &[&str] = &[
    "name",
    "description",
    "required",
    "length",
    "alphabet",
    "when",
];
/// Shortest generated value: 16 characters of the smallest alphabet (hex) are 64 bits.
pub const MIN_GENERATED_CHARS: usize = 16;
const MAX_GENERATED_CHARS: usize = 4096;
const STEP_KEYS: &[&str] = &[
    "name",
    "use",
    "hosts",
    "when",
    "timeout",
    "with",
    "tags",
    "loop",
    "loop_var",
    "loop_label",
    "notify",
    // Routed to `include::check_include` before a step is checked; listed for did-you-mean.
    "include",
    "register",
    "retries",
    "delay",
    "until",
    "serial",
    "max_fail_percentage",
    "run_once",
    "on",
    "ignore_errors",
    "failed_when",
    "changed_when",
    "after",
];

impl PlaybookFile {
    /// Reads and validates a playbook; `known_steps` are the built-in step names.
    pub fn load(path: &Path, known_steps: &[&str]) -> Result<PlaybookFile, ConfigError> {
        PlaybookFile::load_with(path, known_steps, &include::no_builtins)
    }

    /// Reads and validates a playbook whose includes may name built-in playbooks
    /// (`include = "builtin:NAME"`), which `builtins` turns into files.
    pub fn load_with(
        path: &Path,
        known_steps: &[&str],
        builtins: &Builtins<'_>,
    ) -> Result<PlaybookFile, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => PlaybookFile::parse_with(&text, path, known_steps, builtins),
            Err(e) => Err(ConfigError {
                diagnostics: vec![
                    Diagnostic::error(
                        path,
                        (1, 1),
                        format!("cannot read playbook: {}", io_reason(&e)),
                    )
                    .with_help(
                        "check `playbook` in the inventory; it is relative to the inventory file",
                    ),
                ],
            }),
        }
    }

    pub fn parse(
        text: &str,
        path: &Path,
        known_steps: &[&str],
    ) -> Result<PlaybookFile, ConfigError> {
        PlaybookFile::parse_with(text, path, known_steps, &include::no_builtins)
    }

    /// `text` is the playbook at `path`; its includes are read relative to `path`.
    pub fn parse_with(
        text: &str,
        path: &Path,
        known_steps: &[&str],
        builtins: &Builtins<'_>,
    ) -> Result<PlaybookFile, ConfigError> {
        include::Loader::new(path, known_steps, builtins).playbook(text, path)
    }
}

/// What one file holds, checked, before its includes are resolved.
pub(crate) struct Parts {
    /// Its `[[steps]]` in order: steps (with whether they set `hosts`) and includes.
    pub entries: Vec<Entry>,
    pub secrets: Vec<SecretSpec>,
    pub handlers: Vec<StepSpec>,
    /// Names of its `[[handlers]]` blocks, also those with other errors.
    pub declared: Vec<String>,
    /// Its top-level `serial` and `max_fail_percentage` (the playbook's own apply to the play).
    pub rollout: crate::rollout::Rollout,
    /// Its top-level `strategy`, if it sets one.
    pub strategy: Option<crate::pipeline::Strategy>,
}

pub(crate) enum Entry {
    /// Boxed: a step is much larger than an include.
    Step(Box<StepSpec>, bool),
    Include(include::IncludeSpec),
}

/// One file checked on its own; `steps_required` is false for a role's handlers.toml. What is
/// Keys that mean something only beside another (`loop_var` beside `loop`, `until` beside
/// `retries`): each one written without it is an error at the key, named with `needs` and with
/// `fix(key)` as help. False when any was reported.
fn keys_need(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    keys: &[&str],
    label: &str,
    needs: &str,
    fix: &dyn Fn(&str) -> String,
) -> bool {
    let mut ok = true;
    for key in keys {
        if let Some(v) = t.get(*key) {
            r.error(
                &v.span(),
                format!("`{key}` in {label} without {needs}"),
                Some(fix(key)),
            );
            ok = false;
        }
    }
    ok
}

/// valid is returned with the problems, so that a playbook's files are all checked in one pass.
pub(crate) fn parse_parts(
    text: &str,
    path: &Path,
    known_steps: &[&str],
    steps_required: bool,
) -> (Parts, Vec<Diagnostic>) {
    let mut r = Reporter::new(text, path);
    let Some(doc) = r.parse() else {
        let parts = Parts {
            entries: Vec::new(),
            secrets: Vec::new(),
            handlers: Vec::new(),
            declared: Vec::new(),
            rollout: Default::default(),
            strategy: None,
        };
        return (parts, r.finish());
    };
    let entries = if steps_required || doc.contains_key("steps") {
        check(&mut r, &doc, known_steps)
    } else {
        r.unknown_keys(&doc, TOP_KEYS, "");
        Vec::new()
    };
    let secrets = match doc.get("secrets") {
        Some(v) => check_secrets(&mut r, v),
        None => Vec::new(),
    };
    let handlers = match doc.get("handlers") {
        Some(v) => notify::check_handlers(&mut r, v, known_steps),
        None => Vec::new(),
    };
    let declared = notify::declared(&doc)
        .into_iter()
        .map(str::to_string)
        .collect();
    // What `when` and `until` read of registered results is checked per file, in its order.
    let (at_run, handlers_at_run) = register::check_reads(&mut r, &doc);
    fact_reads::check(&mut r, &doc);
    let (mut entries, mut handlers) = (entries, handlers);
    register::mark_entries(&mut entries, &at_run);
    register::mark(&mut handlers, &handlers_at_run);
    let rollout = rollout::check_rollout(&mut r, &doc, "the playbook", false).unwrap_or_default();
    let strategy = order::check_strategy(&mut r, &doc).flatten();
    let parts = Parts {
        entries,
        secrets,
        handlers,
        declared,
        rollout,
        strategy,
    };
    (parts, r.finish())
}

fn check(r: &mut Reporter<'_>, doc: &DeTable<'_>, known: &[&str]) -> Vec<Entry> {
    let suggested = r.unknown_keys(doc, TOP_KEYS, "");
    let help = "add a [[steps]] block for each step, with use = \"<built-in step>\"";
    let Some(value) = doc.get("steps") else {
        if !suggested.contains(&"steps") {
            r.error(&(0..0), "no steps defined", Some(help.into()));
        }
        return Vec::new();
    };
    let items = match value.get_ref() {
        DeValue::Array(a) => a,
        DeValue::Table(_) => {
            r.error(
                &value.span(),
                "`steps` must be an array of tables, not a table",
                Some("write [[steps]] (double brackets) before each step".into()),
            );
            return Vec::new();
        }
        _ => {
            r.wrong_type(
                value,
                "`steps`",
                "an array of tables",
                "one [[steps]] block per step",
            );
            return Vec::new();
        }
    };
    if items.is_empty() {
        r.error(&value.span(), "no steps defined", Some(help.into()));
    }
    let mut steps = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::Table(t) if t.contains_key("include") => {
                steps.extend(include::check_include(r, t).map(Entry::Include));
            }
            DeValue::Table(t) => steps.extend(
                check_step(r, t, item.span(), i, known, "step")
                    .map(|s| Entry::Step(Box::new(s), t.contains_key("hosts"))),
            ),
            _ => r.wrong_type(
                item,
                &format!("step #{}", i + 1),
                "a table",
                "one [[steps]] block per step",
            ),
        }
    }
    steps
}

/// One `[[steps]]` block, or (`kind` "handler") one `[[handlers]]` block.
fn check_step(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    header: std::ops::Range<usize>,
    index: usize,
    known: &[&str],
    kind: &str,
) -> Option<StepSpec> {
    let errors_before = r.diagnostics.len();
    let n = index + 1;
    let str_of = |key: &str| t.get(key).and_then(|v| v.get_ref().as_str());
    // Messages name the step the way output will: its name, else its `use`.
    let label = match str_of("name").or_else(|| str_of("use")) {
        Some(s) if !s.trim().is_empty() => format!("{kind} `{s}`"),
        _ => format!("{kind} #{n}"),
    };
    let suggested = r.unknown_keys(t, STEP_KEYS, &format!(" in {label}"));

    let uses = match t.get("use") {
        Some(v) if v.get_ref().as_str() == Some(FLUSH_HANDLERS) => {
            notify::check_flush(r, t, &label);
            Some(FLUSH_HANDLERS.to_string())
        }
        Some(v) => check_use(r, v, &label, known),
        None if suggested.contains(&"use") || suggested.contains(&"include") => None,
        None => {
            r.error(
                &header,
                format!("{label} has no `use`"),
                Some(format!(
                    "add use = \"<step>\" naming a built-in step ({})",
                    known.join(", ")
                )),
            );
            None
        }
    };
    let name = match t.get("name") {
        Some(v) => r
            .nonempty_string(v, &format!("`name` in {label}"), "name = \"docker engine\"")
            .map(str::to_string),
        None => uses.clone(),
    };
    let hosts = match t.get("hosts") {
        Some(v) => check_selector(r, v, &label),
        None => Some(Selector::all()),
    };
    let when = match t.get("when") {
        Some(v) => r
            .nonempty_string(v, &format!("`when` in {label}"), "when = \"vars.use_lb\"")
            .map(|s| Some(s.to_string())),
        None => Some(None),
    };
    let timeout = match t.get("timeout") {
        Some(v) => {
            let example = "timeout = 600 (seconds)";
            let what = format!("`timeout` in {label}");
            match r.integer(v, &what, example) {
                Some(n) if n > 0 => Some(Some(std::time::Duration::from_secs(n as u64))),
                Some(n) => {
                    r.error(
                        &v.span(),
                        format!("{what} must be a positive number of seconds, not {n}"),
                        Some(format!("write {example}")),
                    );
                    None
                }
                None => None,
            }
        }
        None => Some(None),
    };
    let mut param_positions = BTreeMap::new();
    let with = match t.get("with") {
        Some(v) => {
            let what = format!("`with` in {label}");
            r.table(v, &what, "with = { packages = [\"nginx\"] }")
                .map(|w| {
                    for key in w.keys() {
                        param_positions.insert(key.get_ref().to_string(), r.pos(&key.span()));
                    }
                    to_table(w)
                })
        }
        None => Some(toml::Table::new()),
    };
    let tags = match t.get("tags") {
        Some(v) => tags::check_tags(r, v, &label),
        None => Some(Vec::new()),
    };
    let loop_over = loops::check_loop(r, t, &label);
    if let Some(looped) = &loop_over {
        loops::check_item_use(r, t, &label, looped.as_ref());
    }
    let notify = match t.get("notify") {
        Some(v) => notify::notify_list(r, v, &label),
        None => Some(Vec::new()),
    };
    let register = register::check_register(r, t, &label);
    let retry = register::check_retry(r, t, &label);
    let rollout = rollout::check_rollout(r, t, &label, true);
    let on = delegate::check_on(r, t, &label);
    let rules = outcome::check_rules(r, t, &label, uses.as_deref());
    let after = order::check_after(r, t, &label);
    if r.diagnostics.len() != errors_before {
        return None;
    }
    let (line, column) = r.pos(&header);
    let hosts_at = t.get("hosts").map_or((line, column), |v| r.pos(&v.span()));
    Some(StepSpec {
        name: name?,
        uses: uses?,
        hosts: hosts?,
        hosts_at,
        when: when?,
        timeout: timeout?,
        with: with?,
        line,
        column,
        param_positions,
        tags: tags?,
        loop_over: loop_over?,
        notify: notify?,
        file: r.file.to_path_buf(),
        scope: Scope::default(),
        register: register?,
        retry: retry?,
        when_at_run: false,
        rollout: rollout?,
        on: on?,
        rules: rules?,
        after: after?,
    })
}

fn check_use(
    r: &mut Reporter<'_>,
    v: &Spanned<DeValue<'_>>,
    label: &str,
    known: &[&str],
) -> Option<String> {
    let s = r.nonempty_string(v, &format!("`use` in {label}"), "use = \"apt\"")?;
    if known.contains(&s) {
        return Some(s.to_string());
    }
    let candidates: Vec<&str> = known.iter().copied().chain([FLUSH_HANDLERS]).collect();
    let help = match did_you_mean(s, &candidates) {
        Some(m) => format!("did you mean `{m}`?"),
        None => format!("built-in steps: {}", known.join(", ")),
    };
    r.error(&v.span(), format!("unknown step `{s}`"), Some(help));
    None
}

fn check_selector(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, label: &str) -> Option<Selector> {
    let s = r.string(v, &format!("`hosts` in {label}"), "hosts = \"swarm\"")?;
    match Selector::parse(s) {
        Ok(sel) => Some(sel),
        Err(e) => {
            r.error(
                &v.span(),
                format!("bad hosts selector `{s}` in {label}: {e}"),
                Some(
                    "write terms joined by `,` or `:`: all, a role (storage, manager, worker, lb), \
                     swarm, a group, a host name or a glob (web-*); &term intersects, !term \
                     excludes, e.g. hosts = \"web:&prod,!web-3\""
                        .into(),
                ),
            );
            None
        }
    }
}

fn check_secrets(r: &mut Reporter<'_>, value: &Spanned<DeValue<'_>>) -> Vec<SecretSpec> {
    let example = "one [[secrets]] block per secret, with name = \"db.password\"";
    let DeValue::Array(items) = value.get_ref() else {
        r.wrong_type(value, "`secrets`", "an array of tables", example);
        return Vec::new();
    };
    let mut out: Vec<SecretSpec> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let DeValue::Table(t) = item.get_ref() else {
            r.wrong_type(item, &format!("secret #{}", i + 1), "a table", example);
            continue;
        };
        let Some(spec) = check_secret(r, t, item.span(), i) else {
            continue;
        };
        if let Some(first) = out.iter().find(|s| s.name == spec.name) {
            let at = t.get("name").map(|v| v.span()).unwrap_or(item.span());
            r.error(
                &at,
                format!(
                    "secret `{}` is declared twice (first at line {})",
                    spec.name, first.line
                ),
                Some("declare each secret once; use `when` for the cases that need it".into()),
            );
            continue;
        }
        out.push(spec);
    }
    out
}

fn check_secret(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    header: std::ops::Range<usize>,
    index: usize,
) -> Option<SecretSpec> {
    let errors_before = r.diagnostics.len();
    let label = match t.get("name").and_then(|v| v.get_ref().as_str()) {
        Some(s) if !s.trim().is_empty() => format!("secret `{s}`"),
        _ => format!("secret #{}", index + 1),
    };
    let suggested = r.unknown_keys(t, SECRET_KEYS, &format!(" in {label}"));
    let name = match t.get("name") {
        Some(v) => check_secret_name(r, v, &label),
        None => {
            if !suggested.contains(&"name") {
                r.error(
                    &header,
                    format!("{label} has no `name`"),
                    Some("add name = \"db.password\": the dotted key templates read as secrets.db.password".into()),
                );
            }
            None
        }
    };
    let description = match t.get("description") {
        Some(v) => r
            .nonempty_string(
                v,
                &format!("`description` in {label}"),
                "description = \"MariaDB's root password\"",
            )
            .map(|s| Some(s.to_string())),
        None => Some(None),
    };
    let required = match t.get("required") {
        Some(v) => match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                r.wrong_type(
                    v,
                    &format!("`required` in {label}"),
                    "a boolean",
                    "required = false",
                );
                None
            }
        },
        None => Some(true),
    };
    let length = match t.get("length") {
        Some(v) => {
            let what = format!("`length` in {label}");
            let n = r.integer(v, &what, "length = 32")?;
            match usize::try_from(n) {
                Ok(n) if (MIN_GENERATED_CHARS..=MAX_GENERATED_CHARS).contains(&n) => Some(Some(n)),
                _ => {
                    r.error(
                        &v.span(),
                        format!("{what} must be between {MIN_GENERATED_CHARS} and {MAX_GENERATED_CHARS}, not {n}"),
                        Some("write length = 32 (characters of the generated value)".into()),
                    );
                    None
                }
            }
        }
        None => Some(None),
    };
    let alphabet = match t.get("alphabet") {
        Some(v) => {
            let what = format!("`alphabet` in {label}");
            let s = r.string(v, &what, "alphabet = \"alnum\"")?;
            match Alphabet::parse(s) {
                Some(a) if t.get("length").is_some() => Some(a),
                Some(_) => {
                    r.error(
                        &v.span(),
                        format!("{what} is set but `length` is not"),
                        Some(
                            "add length = 32 so the value can be generated, or remove `alphabet`"
                                .into(),
                        ),
                    );
                    None
                }
                None => {
                    let help = match did_you_mean(s, Alphabet::NAMES) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("one of: {}", Alphabet::NAMES.join(", ")),
                    };
                    r.error(
                        &v.span(),
                        format!("unknown alphabet `{s}` in {label}"),
                        Some(help),
                    );
                    None
                }
            }
        }
        None => Some(Alphabet::Alnum),
    };
    let when = match t.get("when") {
        Some(v) => r
            .nonempty_string(
                v,
                &format!("`when` in {label}"),
                "when = \"vars.stack == 'appwrite'\"",
            )
            .map(|s| Some(s.to_string())),
        None => Some(None),
    };
    if r.diagnostics.len() != errors_before {
        return None;
    }
    let (line, column) = r.pos(&header);
    Some(SecretSpec {
        name: name?,
        description: description?,
        required: required?,
        generate: length?.zip(alphabet),
        when: when?,
        line,
        column,
        file: r.file.to_path_buf(),
    })
}

/// A dotted key of bare TOML key parts (`appwrite.db_pass`): what templates can read as
/// `secrets.appwrite.db_pass`.
fn check_secret_name(
    r: &mut Reporter<'_>,
    v: &Spanned<DeValue<'_>>,
    label: &str,
) -> Option<String> {
    let s = r.nonempty_string(v, &format!("`name` in {label}"), "name = \"db.password\"")?;
    let bare = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if s.split('.').all(bare) {
        return Some(s.to_string());
    }
    r.error(
        &v.span(),
        format!("`name` in {label} must be a dotted key of letters, digits, `_` and `-`"),
        Some(
            "write name = \"appwrite.db_pass\": templates read it as secrets.appwrite.db_pass"
                .into(),
        ),
    );
    None
}

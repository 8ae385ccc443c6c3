//! Diagnostics for configuration files: an error or warning at file:line:column with a hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// How bad a diagnostic is: errors stop the run, warnings are only shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem in a configuration file, with where it is and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(file: &Path, (line, column): (usize, usize), message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
            help: None,
        }
    }

    pub fn warning(file: &Path, at: (usize, usize), message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, at, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.severity.as_str(),
            self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// A configuration file that cannot be used: every problem found in one pass, warnings included.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}\n")?;
        }
        let errors = self.errors().count();
        let warnings = self.diagnostics.len() - errors;
        write!(f, "{}", plural(errors, "error"))?;
        if warnings > 0 {
            write!(f, ", {}", plural(warnings, "warning"))?;
        }
        Ok(())
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for &c in candidates {
        let d = edit_distance(&lower, &c.to_lowercase());
        // A third of the length, as cargo and rustc do: short words only tolerate one slip.
        let limit = (word.chars().count().max(c.chars().count()) / 3).max(1);
        let close =
            d <= limit || (lower.chars().count() >= 3 && c.to_lowercase().starts_with(&lower));
        if close && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance: Levenshtein plus swapping two neighbours, the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end clamp to it.
pub fn line_col(text: &str, byte_offset: usize) -> (usize, usize) {
    let mut offset = byte_offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Collects diagnostics for one file while walking its parsed document.
pub(crate) struct Reporter<'a> {
    pub text: &'a str,
    pub file: &'a Path,
    pub diagnostics: Vec<Diagnostic>,
    lines: LineIndex,
}

/// Byte offsets of line starts, so that a position costs a binary search: an
/// inventory of N hosts asks for N positions (counting newlines from the top
/// each time made loading 2000 hosts quadratic).
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// 1-based (line, column in characters), as [`line_col`].
    pub fn line_col(&self, text: &str, byte_offset: usize) -> (usize, usize) {
        let mut offset = byte_offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        (line, text[start..offset].chars().count() + 1)
    }
}

impl<'a> Reporter<'a> {
    pub fn new(text: &'a str, file: &'a Path) -> Self {
        Reporter {
            text,
            file,
            diagnostics: Vec::new(),
            lines: LineIndex::new(text),
        }
    }

    /// The text of the file at `span`.
    pub fn source(&self, span: &Range<usize>) -> &'a str {
        self.text.get(span.clone()).unwrap_or("")
    }

    pub fn pos(&self, span: &Range<usize>) -> (usize, usize) {
        self.lines.line_col(self.text, span.start)
    }

    pub fn error(&mut self, span: &Range<usize>, message: impl Into<String>, help: Option<String>) {
        let d = Diagnostic::error(self.file, self.pos(span), message);
        self.diagnostics.push(Diagnostic { help, ..d });
    }

    pub fn warning(
        &mut self,
        span: &Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let d = Diagnostic::warning(self.file, self.pos(span), message);
        self.diagnostics.push(Diagnostic { help, ..d });
    }

    /// Diagnostics in file order, so the output reads top to bottom.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        self.diagnostics
    }

    /// Parses TOML, turning every syntax error into a diagnostic.
    pub fn parse(&mut self) -> Option<DeTable<'a>> {
        let (doc, errors) = DeTable::parse_recoverable(self.text);
        if errors.is_empty() {
            return Some(doc.into_inner());
        }
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            if e.message() == "duplicate key" {
                let key = self.text.get(span.clone()).unwrap_or("").trim();
                self.error(
                    &span,
                    format!("duplicate key `{key}`"),
                    Some("a key may appear only once in a table; remove one of them".into()),
                );
            } else {
                let help = self.quote_help(span.start);
                self.error(&span, format!("invalid TOML: {}", e.message()), help);
            }
        }
        // Recovery can report one spot twice.
        self.diagnostics.dedup();
        None
    }

    /// An unquoted string (`address = 203.0.113.11`) is the commonest syntax error in an
    /// inventory, and the parser's own message does not say so.
    fn quote_help(&self, offset: usize) -> Option<String> {
        let start = self.text[..offset.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("");
        let (key, value) = line.split_once('=')?;
        let (key, value) = (key.trim(), value.split(" #").next().unwrap_or("").trim());
        let bare_key = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let structured = value.starts_with(['"', '\'', '[', '{']);
        if !bare_key || value.is_empty() || structured || DeValue::parse(value).is_ok() {
            return None;
        }
        Some(format!("strings need quotes: {key} = \"{value}\""))
    }

    /// Reports each key of `table` not in `allowed`, suggesting the nearest allowed one.
    /// Returns the suggested keys, so "missing `address`" is not also said after "did you mean
    /// `address`?".
    pub fn unknown_keys<'k>(
        &mut self,
        table: &DeTable<'_>,
        allowed: &[&'k str],
        context: &str,
    ) -> Vec<&'k str> {
        let mut suggested = Vec::new();
        for key in table.keys() {
            if allowed.contains(&key.get_ref().as_ref()) {
                continue;
            }
            let help = match did_you_mean(key.get_ref(), allowed) {
                Some(s) => {
                    suggested.push(s);
                    format!("did you mean `{s}`?")
                }
                None => format!("expected one of: {}", allowed.join(", ")),
            };
            self.error(
                &key.span(),
                format!("unknown key `{}`{context}", key.get_ref()),
                Some(help),
            );
        }
        suggested
    }

    /// `what` must be a `expected`; reports the mismatch with `example` as the fix.
    pub fn wrong_type(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
        expected: &str,
        example: &str,
    ) {
        self.error(
            &value.span(),
            format!("{what} must be {expected}, not {}", a_type(value.get_ref())),
            Some(format!("write {example}")),
        );
    }

    pub fn string<'v>(
        &mut self,
        value: &'v Spanned<DeValue<'_>>,
        what: &str,
        example: &str,
    ) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.wrong_type(value, what, "a string", example);
                None
            }
        }
    }

    /// A string that must not be empty (or only spaces).
    pub fn nonempty_string<'v>(
        &mut self,
        value: &'v Spanned<DeValue<'_>>,
        what: &str,
        example: &str,
    ) -> Option<&'v str> {
        let s = self.string(value, what, example)?;
        if s.trim().is_empty() {
            self.error(
                &value.span(),
                format!("{what} must not be empty"),
                Some(format!("write {example}")),
            );
            return None;
        }
        Some(s)
    }

    pub fn integer(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
        example: &str,
    ) -> Option<i64> {
        match value.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(
                        &value.span(),
                        format!("{what} is too large"),
                        Some(format!("write {example}")),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(value, what, "an integer", example);
                None
            }
        }
    }

    pub fn table<'v, 'i>(
        &mut self,
        value: &'v Spanned<DeValue<'i>>,
        what: &str,
        example: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(value, what, "a table", example);
                None
            }
        }
    }
}

/// "a string", "an integer", ...: the type of a value as a message says it.
pub(crate) fn a_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Converts a parsed value into a plain `toml::Value`, for vars and step parameters.
pub(crate) fn to_value(value: &DeValue<'_>) -> toml::Value {
    match value {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        // The parser already validated these, so the fallbacks cannot happen in practice.
        DeValue::Integer(i) => {
            toml::Value::Integer(i64::from_str_radix(i.as_str(), i.radix()).unwrap_or(0))
        }
        DeValue::Float(f) => toml::Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(a) => toml::Value::Array(a.iter().map(|v| to_value(v.get_ref())).collect()),
        DeValue::Table(t) => toml::Value::Table(to_table(t)),
    }
}

pub(crate) fn to_table(table: &DeTable<'_>) -> toml::Table {
    table
        .iter()
        .map(|(k, v)| (k.get_ref().to_string(), to_value(v.get_ref())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_help() {
        let d = Diagnostic::error(
            Path::new("cluster.toml"),
            (12, 1),
            "host `web-1` has no role",
        )
        .with_help("add roles = [\"worker\"] (one of: storage, manager, worker, lb)");
        assert_eq!(
            d.to_string(),
            "cluster.toml:12:1: error: host `web-1` has no role\n  help: add roles = [\"worker\"] (one of: storage, manager, worker, lb)"
        );
        let w = Diagnostic::warning(Path::new("a/b.toml"), (3, 7), "careful");
        assert_eq!(w.to_string(), "a/b.toml:3:7: warning: careful");
    }

    #[test]
    fn config_error_lists_all_then_counts() {
        let f = Path::new("c.toml");
        let e = ConfigError {
            diagnostics: vec![
                Diagnostic::error(f, (1, 1), "one").with_help("fix it"),
                Diagnostic::warning(f, (2, 1), "two"),
                Diagnostic::error(f, (3, 5), "three"),
            ],
        };
        assert_eq!(
            e.to_string(),
            "c.toml:1:1: error: one\n  help: fix it\n\nc.toml:2:1: warning: two\n\nc.toml:3:5: error: three\n\n2 errors, 1 warning"
        );
        let one = ConfigError {
            diagnostics: vec![Diagnostic::error(f, (1, 1), "one")],
        };
        assert_eq!(one.to_string(), "c.toml:1:1: error: one\n\n1 error");
    }

    #[test]
    fn suggestions() {
        let keys = [
            "name",
            "address",
            "port",
            "user",
            "become",
            "private_ip",
            "roles",
            "labels",
            "vars",
        ];
        assert_eq!(did_you_mean("adress", &keys), Some("address"));
        assert_eq!(did_you_mean("addr", &keys), Some("address"));
        assert_eq!(did_you_mean("rolse", &keys), Some("roles"));
        assert_eq!(did_you_mean("Name", &keys), Some("name"));
        assert_eq!(did_you_mean("privateip", &keys), Some("private_ip"));
        assert_eq!(did_you_mean("hostname", &keys), None);
        assert_eq!(did_you_mean("xyz", &keys), None);
        assert_eq!(
            did_you_mean("aptt", &["apt", "file", "systemd"]),
            Some("apt")
        );
        assert_eq!(
            did_you_mean("ib", &["storage", "manager", "worker", "lb"]),
            Some("lb")
        );
        assert_eq!(
            did_you_mean("mangaer", &["storage", "manager", "worker", "lb"]),
            Some("manager")
        );
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn positions() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (1, 5));
        assert_eq!(line_col(t, 6), (2, 1));
        // Columns count characters, not bytes: `=` follows the two-byte `é`.
        assert_eq!(line_col(t, 10), (2, 4));
        // Inside a multi-byte character, and past the end, clamp.
        assert_eq!(line_col(t, 8), (2, 2));
        assert_eq!(line_col(t, 1000), (3, 1));
        let idx = LineIndex::new(t);
        for i in 0..=t.len() + 2 {
            assert_eq!(idx.line_col(t, i), line_col(t, i), "offset {i}");
        }
    }
}

//! Decrypted secrets as a TOML table: what templates see as `secrets.NAME`, wiped from memory
//! on drop.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use zeroize::Zeroize as _;

use crate::{Redactor, SecretsError};

/// The shortest secret value accepted, in characters. Redaction finds a value by its text, and a
/// shorter one is also ordinary text (`admin`, `5432`, `secret`): hiding it would blank
/// unrelated output, and not hiding it would leak it. So such values are refused, not stored.
pub const MIN_VALUE_CHARS: usize = 8;

/// A value too short to be a secret ([`MIN_VALUE_CHARS`]): where it is, never what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortValue {
    /// Dotted name (`db.password`; `list[1]` for an array item).
    pub name: String,
    /// 1-based line in the decrypted text, when known.
    pub line: Option<usize>,
    pub chars: usize,
}

/// Every value of decrypted TOML `text` shorter than [`MIN_VALUE_CHARS`] (booleans aside: they
/// are never redacted). Text that does not parse has none (its parse error comes first).
pub fn short_values(text: &str) -> Vec<ShortValue> {
    fn value(name: String, v: &toml_edit::Value, text: &str, out: &mut Vec<ShortValue>) {
        let chars = match v {
            toml_edit::Value::String(s) => s.value().chars().count(),
            toml_edit::Value::Integer(i) => i.value().to_string().len(),
            toml_edit::Value::Float(f) => f.value().to_string().len(),
            toml_edit::Value::Datetime(d) => d.value().to_string().len(),
            toml_edit::Value::Boolean(_) => return,
            toml_edit::Value::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    value(format!("{name}[{i}]"), item, text, out);
                }
                return;
            }
            toml_edit::Value::InlineTable(t) => {
                for (k, item) in t.iter() {
                    value(format!("{name}.{k}"), item, text, out);
                }
                return;
            }
        };
        if chars < MIN_VALUE_CHARS {
            let line = v.span().map(|r| line_column(text, r.start).0);
            out.push(ShortValue { name, line, chars });
        }
    }
    fn table(prefix: &str, t: &toml_edit::Table, text: &str, out: &mut Vec<ShortValue>) {
        for (k, item) in t.iter() {
            let name = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            };
            match item {
                toml_edit::Item::Value(v) => value(name, v, text, out),
                toml_edit::Item::Table(t) => table(&name, t, text, out),
                toml_edit::Item::ArrayOfTables(a) => {
                    for (i, t) in a.iter().enumerate() {
                        table(&format!("{name}[{i}]"), t, text, out);
                    }
                }
                toml_edit::Item::None => {}
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(doc) = toml_edit::Document::parse(text) {
        table("", doc.as_table(), text, &mut out);
    }
    out.sort_by(|a, b| a.line.cmp(&b.line).then_with(|| a.name.cmp(&b.name)));
    out
}

/// Refuses decrypted text holding a value shorter than [`MIN_VALUE_CHARS`] (`path` names the
/// file in the error).
pub fn check_value_lengths(path: &Path, text: &str) -> Result<(), SecretsError> {
    let short = short_values(text);
    if short.is_empty() {
        Ok(())
    } else {
        Err(SecretsError::TooShort {
            path: path.to_path_buf(),
            values: short,
        })
    }
}

/// The values of a secrets file. Serializes as the table itself (so a template engine can expose
/// it as `secrets`); `Debug` shows key names only. String values are zeroized on drop.
#[derive(Clone, Default)]
pub struct Secrets {
    table: toml::Table,
    /// Set by [`crate::SecretsFile::load`] when the recipients file differs from the
    /// recipients of the last write: commands that read the file warn about it.
    recipients_drift: Option<String>,
}

impl Secrets {
    /// Parses decrypted TOML text; `path` names the file in the error, which never quotes the
    /// text (it is secret): only the parser's message and the position.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SecretsError> {
        match text.parse::<toml::Table>() {
            Ok(table) => Ok(Secrets {
                table,
                recipients_drift: None,
            }),
            Err(e) => {
                let (line, column) = e
                    .span()
                    .map(|s| line_column(text, s.start))
                    .unwrap_or((1, 1));
                Err(SecretsError::InvalidToml {
                    path: path.to_path_buf(),
                    message: e.message().trim().to_string(),
                    line,
                    column,
                })
            }
        }
    }

    /// How the recipients file differs from the recipients of the last write, if it does.
    pub fn recipients_drift(&self) -> Option<&str> {
        self.recipients_drift.as_deref()
    }

    pub(crate) fn set_recipients_drift(&mut self, drift: Option<String>) {
        self.recipients_drift = drift;
    }

    /// No secrets (a cluster without a secrets file).
    pub fn empty() -> Self {
        Secrets::default()
    }

    /// The values, nested tables included.
    pub fn table(&self) -> &toml::Table {
        &self.table
    }

    /// A value by dotted name (`db.password`), following nested tables.
    pub fn get(&self, dotted: &str) -> Option<&toml::Value> {
        let mut parts = dotted.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The dotted names of all leaf values, sorted (for listings and messages: names are not
    /// secret, values are).
    pub fn names(&self) -> Vec<String> {
        fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in table {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(t) => walk(&name, t, out),
                    _ => out.push(name),
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.table, &mut out);
        out.sort();
        out
    }

    /// A redactor for every value in this file.
    pub fn redactor(&self) -> Redactor {
        let mut values = Vec::new();
        self.table
            .values()
            .for_each(|v| collect_leaves(v, &mut values));
        let redactor = Redactor::new(values.iter().map(|s| s.as_str()));
        for v in &mut values {
            v.zeroize();
        }
        redactor
    }
}

/// The string form of every leaf worth redacting: strings, numbers, dates (not booleans).
fn collect_leaves(value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Integer(i) => out.push(i.to_string()),
        toml::Value::Float(f) => out.push(f.to_string()),
        toml::Value::Datetime(d) => out.push(d.to_string()),
        toml::Value::Boolean(_) => {}
        toml::Value::Array(items) => items.iter().for_each(|i| collect_leaves(i, out)),
        toml::Value::Table(t) => t.values().for_each(|v| collect_leaves(v, out)),
    }
}

impl Serialize for Secrets {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.table.serialize(serializer)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.names())
            .finish()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        fn wipe(value: &mut toml::Value) {
            match value {
                toml::Value::String(s) => s.zeroize(),
                toml::Value::Integer(i) => *i = 0,
                toml::Value::Float(f) => *f = 0.0,
                toml::Value::Array(items) => items.iter_mut().for_each(wipe),
                toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| wipe(v)),
                // Booleans and dates: nothing worth wiping / no way to wipe in place.
                toml::Value::Boolean(_) | toml::Value::Datetime(_) => {}
            }
        }
        self.table.iter_mut().for_each(|(_, v)| wipe(v));
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_gives_position_without_text() {
        let text = "a = \"ok\"\npassword = hunter2-secret\n";
        let err = Secrets::parse(Path::new("s.age"), text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn get_names_debug_and_serialize() {
        let s = Secrets::parse(
            Path::new("s.age"),
            "token = \"abcd1234\"\n[db]\npassword = \"pw-5678\"\nport = 5432\n",
        )
        .unwrap();
        assert_eq!(
            s.get("db.password").and_then(|v| v.as_str()),
            Some("pw-5678")
        );
        assert!(s.get("db.missing").is_none());
        assert_eq!(s.names(), vec!["db.password", "db.port", "token"]);
        let debug = format!("{s:?}");
        assert!(
            debug.contains("db.password") && !debug.contains("pw-5678"),
            "{debug}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["db"]["password"], "pw-5678");
        assert_eq!(json["db"]["port"], 5432);
    }

    #[test]
    fn line_column_counts_chars() {
        assert_eq!(line_column("ab\ncdé\nx", 7), (2, 4));
        assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_column("abc", 0), (1, 1));
    }
}

//! Decrypted secrets as a TOML table: what templates see as `secrets.NAME`, wiped from memory
//! on drop.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use zeroize::Zeroize as _;

use crate::{Redactor, SecretsError};

/// The values of a secrets file. Serializes as the table itself (so a template engine can expose
/// it as `secrets`); `Debug` shows key names only. String values are zeroized on drop.
#[derive(Clone, Default)]
pub struct Secrets {
    table: toml::Table,
}

impl Secrets {
    /// Parses decrypted TOML text; `path` names the file in the error, which never quotes the
    /// text (it is secret): only the parser's message and the position.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SecretsError> {
        match text.parse::<toml::Table>() {
            Ok(table) => Ok(Secrets { table }),
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

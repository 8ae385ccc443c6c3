//! Ansible's YAML as a small tree that keeps each node's line: the converter names every part it
//! leaves out by file and line. Parsed by saphyr (YAML 1.2); Ansible reads YAML 1.1, so the 1.1
//! booleans (`yes`, `no`, `on`, `off`) are read as booleans where a boolean is expected.

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based.
    pub line: usize,
    pub v: V,
}

#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// In file order; keys are scalars written as strings.
    Map(Vec<(String, Node)>),
    /// Anchors, aliases, tags, complex keys: named in the report, never guessed.
    Unsupported(&'static str),
}

/// The documents of a YAML file; an error is `line:column: message`.
pub fn load(text: &str) -> Result<Vec<Node>, String> {
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| {
        let m = e.marker();
        format!("{}:{}: {}", m.line(), m.col() + 1, e.info())
    })?;
    Ok(docs.iter().map(node).collect())
}

fn node(y: &MarkedYamlOwned) -> Node {
    let line = y.span.start.line();
    let v = match &y.data {
        YamlDataOwned::Value(s) => match s {
            ScalarOwned::Null => V::Null,
            ScalarOwned::Boolean(b) => V::Bool(*b),
            ScalarOwned::Integer(i) => V::Int(*i),
            ScalarOwned::FloatingPoint(f) => V::Float(f.into_inner()),
            ScalarOwned::String(s) => V::Str(s.clone()),
        },
        YamlDataOwned::Representation(s, _, _) => V::Str(s.clone()),
        YamlDataOwned::Sequence(items) => V::Seq(items.iter().map(node).collect()),
        YamlDataOwned::Mapping(m) => {
            let mut out = Vec::new();
            for (k, v) in m {
                match node(k).v {
                    V::Str(s) => out.push((s, node(v))),
                    V::Int(i) => out.push((i.to_string(), node(v))),
                    V::Bool(b) => out.push((b.to_string(), node(v))),
                    _ => {
                        return Node {
                            line,
                            v: V::Unsupported("a mapping key that is not a plain scalar"),
                        };
                    }
                }
            }
            V::Map(out)
        }
        YamlDataOwned::Tagged(..) => V::Unsupported("a YAML tag (such as !vault or !unsafe)"),
        YamlDataOwned::Alias(_) => V::Unsupported("a YAML alias (*name)"),
        YamlDataOwned::BadValue => V::Unsupported("a value YAML could not read"),
    };
    Node { line, v }
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.v {
            V::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn map(&self) -> Option<&[(String, Node)]> {
        match &self.v {
            V::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A scalar as text (numbers and booleans as written by YAML).
    pub fn text(&self) -> Option<String> {
        match &self.v {
            V::Str(s) => Some(s.clone()),
            V::Int(i) => Some(i.to_string()),
            V::Float(f) => Some(f.to_string()),
            V::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A boolean as Ansible reads it: YAML booleans and the YAML 1.1 words.
    pub fn boolean(&self) -> Option<bool> {
        match &self.v {
            V::Bool(b) => Some(*b),
            V::Str(s) => match s.to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" | "y" => Some(true),
                "no" | "false" | "off" | "n" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// A list, or a single scalar as a list of one.
    pub fn strings(&self) -> Option<Vec<String>> {
        match &self.v {
            V::Seq(items) => items.iter().map(Node::text).collect(),
            _ => self.text().map(|s| vec![s]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_order_and_yaml_11_booleans() {
        let docs = load(
            "---\n- hosts: web\n  become: yes\n  tasks:\n    - name: a\n      apt: {name: nginx}\n",
        )
        .unwrap();
        let play = match &docs[0].v {
            V::Seq(p) => &p[0],
            other => panic!("{other:?}"),
        };
        assert_eq!(play.line, 2);
        assert_eq!(play.get("become").unwrap().boolean(), Some(true));
        assert_eq!(play.get("become").unwrap().line, 3);
        let task = match &play.get("tasks").unwrap().v {
            V::Seq(t) => &t[0],
            other => panic!("{other:?}"),
        };
        assert_eq!(task.line, 5);
        assert_eq!(
            task.get("apt")
                .unwrap()
                .get("name")
                .unwrap()
                .text()
                .as_deref(),
            Some("nginx")
        );
        let keys: Vec<_> = play
            .map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["hosts", "become", "tasks"]);
    }

    #[test]
    fn aliases_resolve_and_tags_are_named_not_guessed() {
        let docs = load("a: &x 1\nb: *x\nc: !vault |\n  abc\n").unwrap();
        assert_eq!(docs[0].get("b").unwrap().v, V::Int(1));
        assert!(matches!(docs[0].get("c").unwrap().v, V::Unsupported(_)));
    }

    #[test]
    fn a_syntax_error_names_line_and_column() {
        let e = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.starts_with("2:") || e.starts_with("3:"), "{e}");
    }
}

//! The code's structure as a test: no import circles between the files of any crate (a file
//! that uses another, directly or through others, is never used back by it). Reads the sources
//! as text: `use crate::…`, `use super::…` and paths written out in code; test modules
//! (everything from a file's `#[cfg(test)]` on) are left out, as tests may import anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's module path (`steps::link`) to its file, for every `.rs` file under `src`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            let name = p.file_stem().unwrap().to_str().unwrap().to_string();
            if p.is_dir() {
                let mut sub = prefix.to_vec();
                sub.push(name);
                walk(&p, &sub, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let mut m = prefix.to_vec();
                if !matches!(name.as_str(), "mod" | "lib" | "main") {
                    m.push(name);
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The module paths a file's own (non-test) code names: `crate::a::b`, `super::c`, grouped
/// `use crate::{a, b::c}` included. Each is a path as written, resolved later.
fn named_paths(text: &str, here: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    // `super` of a file `a/b.rs` (module a::b) is `a`; of `a/mod.rs` (module a) it is the root.
    let parent: Vec<String> = if is_mod_file || here.is_empty() {
        here[..here.len().saturating_sub(1)].to_vec()
    } else {
        here[..here.len() - 1].to_vec()
    };
    let mut out = Vec::new();
    for (anchor, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(anchor) {
            let before = rest[..i].chars().last();
            rest = &rest[i + anchor.len()..];
            // `self::super::` or an identifier ending in `crate` is not this anchor.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for path in expand(rest) {
                let mut full = base.clone();
                full.extend(path);
                out.push(full);
            }
        }
    }
    out
}

/// The paths after an anchor: `a::b::C` -> [[a, b, C]]; `{a, b::{c, d}}` -> [[a], [b, c], [b, d]].
fn expand(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        let body = &inner[..end];
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&body[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&body[start..]);
        return items
            .into_iter()
            .filter(|i| !i.trim().is_empty())
            .flat_map(expand)
            .collect();
    }
    let ident: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() || ident == "self" {
        return vec![Vec::new()];
    }
    let after = &s[ident.len()..];
    match after.strip_prefix("::") {
        Some(more) => expand(more)
            .into_iter()
            .map(|mut p| {
                p.insert(0, ident.clone());
                p
            })
            .collect(),
        None => vec![vec![ident]],
    }
}

/// The file of the longest module prefix of `path` (an item's path names its module first).
fn resolve<'a>(path: &[String], mods: &'a BTreeMap<Vec<String>, PathBuf>) -> Option<&'a PathBuf> {
    (1..=path.len())
        .rev()
        .find_map(|n| mods.get(&path[..n]))
        .or_else(|| mods.get(&Vec::new()))
}

/// Every circle of files among `edges`, as the sorted files of each strongly connected part.
fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    // Two files are in one circle when each reaches the other.
    let reach = |from: &PathBuf| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(f) = todo.pop() {
            for t in edges.get(&f).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&PathBuf, BTreeSet<PathBuf>> =
        edges.keys().map(|f| (f, reach(f))).collect();
    let mut found: BTreeSet<Vec<PathBuf>> = BTreeSet::new();
    for (f, r) in &reached {
        let mut circle: Vec<PathBuf> = r
            .iter()
            .filter(|g| *g != *f && reached.get(g).is_some_and(|back| back.contains(*f)))
            .cloned()
            .collect();
        if !circle.is_empty() {
            circle.push((*f).clone());
            circle.sort();
            found.insert(circle);
        }
    }
    found.into_iter().collect()
}

fn edges_of(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mods = modules(src);
    let mut edges = BTreeMap::new();
    for (m, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        let is_mod_file = file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs");
        let mut to = BTreeSet::new();
        for path in named_paths(&text, m, is_mod_file) {
            if let Some(target) = resolve(&path, &mods)
                && target != file
            {
                to.insert(target.clone());
            }
        }
        edges.insert(file.clone(), to);
    }
    edges
}

#[test]
fn no_crate_has_an_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut report = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    assert!(crates.len() >= 8, "the workspace's crates: {crates:?}");
    for src in &crates {
        let edges = edges_of(src);
        for c in circles(&edges) {
            let names: Vec<String> = c
                .iter()
                .map(|f| f.strip_prefix(root).unwrap().display().to_string())
                .collect();
            let ties: Vec<String> = c
                .iter()
                .flat_map(|f| {
                    edges[f].iter().filter(|t| c.contains(t)).map(move |t| {
                        let rel = |p: &Path| p.strip_prefix(root).unwrap().display().to_string();
                        format!("{} -> {}", rel(f), rel(t))
                    })
                })
                .collect();
            report.push(format!("{}\n    {}", names.join(", "), ties.join("\n    ")));
        }
    }
    assert!(
        report.is_empty(),
        "import circles (move what both sides share into a module of its own):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_reader_sees_uses_groups_and_paths_in_code() {
    let here = vec!["steps".to_string(), "link".to_string()];
    let text = "use super::util;\nuse crate::ctx::{BuildCtx, ParamError};\nuse crate::{registry, swarm::{node, step::Frame}};\n\
                inventory::submit! { crate::ctx::BuiltIn::host(\"link\", build) }\n\
                // crate::commented::out\n#[cfg(test)]\nmod tests { use crate::steps::testing; }\n";
    let paths = named_paths(text, &here, false);
    let s = |p: &[&str]| p.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        paths,
        vec![
            s(&["ctx", "BuildCtx"]),
            s(&["ctx", "ParamError"]),
            s(&["registry"]),
            s(&["swarm", "node"]),
            s(&["swarm", "step", "Frame"]),
            s(&["ctx", "BuiltIn", "host"]),
            s(&["steps", "util"]),
        ]
    );
    // A circle is found and named; a one-way chain is not one.
    let f = |n: &str| PathBuf::from(n);
    let mut edges = BTreeMap::new();
    edges.insert(f("a.rs"), BTreeSet::from([f("b.rs")]));
    edges.insert(f("b.rs"), BTreeSet::from([f("c.rs")]));
    edges.insert(f("c.rs"), BTreeSet::new());
    assert!(circles(&edges).is_empty());
    edges.insert(f("c.rs"), BTreeSet::from([f("a.rs")]));
    assert_eq!(circles(&edges), vec![vec![f("a.rs"), f("b.rs"), f("c.rs")]]);
}

//! `tags` on a step: the names `provision run --tags` and `--skip-tags` choose steps by
//! (Ansible's tags), checked where they are written.

use toml::Spanned;
use toml::de::DeValue;

use crate::diagnostic::Reporter;

/// A step tagged `always` runs whatever `--tags` asks for; only `--skip-tags always` skips it.
pub const ALWAYS: &str = "always";
/// A step tagged `never` runs only when `--tags` names one of its tags.
pub const NEVER: &str = "never";

/// `tags = ["docker", "packages"]`: non-empty strings without commas (the command line
/// separates tags with commas) and without surrounding spaces (it trims them), so that every
/// tag written can be asked for. A tag written twice counts once.
pub(super) fn check_tags(
    r: &mut Reporter<'_>,
    v: &Spanned<DeValue<'_>>,
    label: &str,
) -> Option<Vec<String>> {
    let example = "tags = [\"docker\", \"packages\"]";
    let DeValue::Array(items) = v.get_ref() else {
        r.wrong_type(
            v,
            &format!("`tags` in {label}"),
            "an array of strings",
            example,
        );
        return None;
    };
    let mut tags: Vec<String> = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(tag) = r.string(item, &format!("a tag in {label}"), example) else {
            ok = false;
            continue;
        };
        let problem = if tag.trim().is_empty() {
            Some((
                format!("a tag in {label} is empty"),
                format!("remove it, or name it: {example}"),
            ))
        } else if tag.contains(',') {
            let parts: Vec<String> = tag
                .split(',')
                .map(|p| format!("\"{}\"", p.trim()))
                .collect();
            Some((
                format!("tag `{tag}` in {label} contains a comma, which separates tags in --tags"),
                format!("write one tag per string: tags = [{}]", parts.join(", ")),
            ))
        } else if tag.trim() != tag {
            Some((
                format!("tag `{tag}` in {label} starts or ends with spaces"),
                format!("write tags = [\"{}\"]", tag.trim()),
            ))
        } else {
            None
        };
        match problem {
            Some((message, help)) => {
                r.error(&item.span(), message, Some(help));
                ok = false;
            }
            None if tags.iter().any(|t| t == tag) => {}
            None => tags.push(tag.to_string()),
        }
    }
    ok.then_some(tags)
}

#[cfg(test)]
mod tests {
    use crate::playbook_file::PlaybookFile;
    use std::path::Path;

    fn parse(tags: &str) -> Result<Vec<String>, String> {
        let text = format!("[[steps]]\nname = \"s\"\nuse = \"apt\"\ntags = {tags}\n");
        PlaybookFile::parse(&text, Path::new("p.toml"), &["apt"])
            .map(|pb| pb.steps[0].tags.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tags_are_read_in_order_once_each() {
        assert_eq!(
            parse("[\"docker\", \"packages\", \"docker\", \"always\"]").unwrap(),
            ["docker", "packages", "always"]
        );
        assert_eq!(parse("[]").unwrap(), Vec::<String>::new());
        let pb = PlaybookFile::parse("[[steps]]\nuse = \"apt\"\n", Path::new("p.toml"), &["apt"])
            .unwrap();
        assert!(pb.steps[0].tags.is_empty(), "untagged by default");
    }

    #[test]
    fn bad_tags_are_errors_at_their_position() {
        assert_eq!(
            parse("\"docker\"").unwrap_err(),
            "p.toml:4:8: error: `tags` in step `s` must be an array of strings, not a string\n  help: write tags = [\"docker\", \"packages\"]\n\n1 error"
        );
        assert_eq!(
            parse("[\"a\", 3]").unwrap_err(),
            "p.toml:4:14: error: a tag in step `s` must be a string, not an integer\n  help: write tags = [\"docker\", \"packages\"]\n\n1 error"
        );
        assert_eq!(
            parse("[\"a\", \"\"]").unwrap_err(),
            "p.toml:4:14: error: a tag in step `s` is empty\n  help: remove it, or name it: tags = [\"docker\", \"packages\"]\n\n1 error"
        );
        assert_eq!(
            parse("[\"docker,nfs\"]").unwrap_err(),
            "p.toml:4:9: error: tag `docker,nfs` in step `s` contains a comma, which separates tags in --tags\n  help: write one tag per string: tags = [\"docker\", \"nfs\"]\n\n1 error"
        );
        assert_eq!(
            parse("[\" docker\"]").unwrap_err(),
            "p.toml:4:9: error: tag ` docker` in step `s` starts or ends with spaces\n  help: write tags = [\"docker\"]\n\n1 error"
        );
    }
}

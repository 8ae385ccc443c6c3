//! Handlers (`[[handlers]]`, `notify`, `flush_handlers`): which handlers run on which hosts at a
//! flush point, and the small file on each host that keeps the notifications not yet handled, so
//! that a run that fails or stops between a change and its handler does not lose the handler.
//! Pure: the runner decides with [`due`] and runs the commands built here.

use crate::step::Step;
use provision_transport::shell::quote;
use std::collections::{BTreeMap, BTreeSet};

/// The host var naming the pending-notifications file (tests give each host its own).
pub const PENDING_FILE_VAR: &str = "pending_handlers_file";
/// Where a host keeps its pending notifications unless the var says otherwise.
pub const DEFAULT_PENDING_FILE: &str = "/var/lib/provision/pending-handlers";

/// A play's handlers as the runner gets them.
#[derive(Default)]
pub struct Handlers {
    /// In declaration order; each step's title is the handler's name.
    pub steps: Vec<Box<dyn Step>>,
    /// Host to the file its pending notifications are kept in.
    pub pending_files: BTreeMap<String, String>,
}

impl Handlers {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The pending-notifications file of `host`.
    pub fn pending_file(&self, host: &str) -> &str {
        self.pending_files
            .get(host)
            .map(String::as_str)
            .unwrap_or(DEFAULT_PENDING_FILE)
    }
}

/// Which hosts each handler runs on at a flush point, in declaration order (not notification
/// order, as Ansible): the hosts it targets where it was notified, in this run or by a pending
/// notification an earlier run left on the host. `handlers` are (name, targets) pairs;
/// `notified` maps a host to the handler names notified there. Each handler runs once per host
/// however many steps notified it.
pub fn due(
    handlers: &[(&str, Vec<String>)],
    notified: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<(usize, Vec<String>)> {
    handlers
        .iter()
        .enumerate()
        .filter_map(|(i, (name, targets))| {
            let hosts: Vec<String> = targets
                .iter()
                .filter(|h| notified.get(*h).is_some_and(|n| n.contains(*name)))
                .cloned()
                .collect();
            (!hosts.is_empty()).then_some((i, hosts))
        })
        .collect()
}

/// Prints the pending notifications of the host, one handler name a line (nothing when there
/// are none). Read-only: it rides in the host's first fact batch.
pub fn read_command(file: &str) -> String {
    format!("f={}; if [ -f \"$f\" ]; then cat \"$f\"; fi", quote(file))
}

/// The handler names in [`read_command`]'s output.
pub fn parse_pending(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Adds `names` to the host's pending notifications: merged with what the file holds, written to
/// a temporary file (0600 under umask 077, in a directory made 0700 if missing) and renamed over
/// it, so a reader never sees half a file.
pub fn add_command(file: &str, names: &BTreeSet<String>) -> String {
    let dir = parent(file);
    let words: Vec<String> = names.iter().map(|n| quote(n).into_owned()).collect();
    format!(
        "f={}; umask 077; mkdir -p {} && rm -f \"$f.tmp\" && {{ cat \"$f\" 2>/dev/null; printf '%s\\n' {}; }} | LC_ALL=C sort -u > \"$f.tmp\" && mv -f \"$f.tmp\" \"$f\"",
        quote(file),
        quote(dir),
        words.join(" ")
    )
}

/// Removes `names` from the host's pending notifications (the handlers ran), atomically as
/// [`add_command`]; the file goes when nothing is left in it.
pub fn clear_command(file: &str, names: &BTreeSet<String>) -> String {
    let patterns: Vec<String> = names.iter().map(|n| format!("-e {}", quote(n))).collect();
    format!(
        "f={}; if [ -f \"$f\" ]; then umask 077; rm -f \"$f.tmp\" && {{ grep -vxF {} \"$f\" || [ $? -eq 1 ]; }} > \"$f.tmp\" && if [ -s \"$f.tmp\" ]; then mv -f \"$f.tmp\" \"$f\"; else rm -f \"$f.tmp\" \"$f\"; fi; fi",
        quote(file),
        patterns.join(" ")
    )
}

fn parent(file: &str) -> &str {
    match file.rfind('/') {
        Some(0) => "/",
        Some(i) => &file[..i],
        None => ".",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_are_exact() {
        let f = "/var/lib/provision/pending-handlers";
        assert_eq!(
            read_command(f),
            "f=/var/lib/provision/pending-handlers; if [ -f \"$f\" ]; then cat \"$f\"; fi"
        );
        assert_eq!(
            add_command(f, &set(&["restart journald", "reload-nginx"])),
            "f=/var/lib/provision/pending-handlers; umask 077; mkdir -p /var/lib/provision && rm -f \"$f.tmp\" && { cat \"$f\" 2>/dev/null; printf '%s\\n' reload-nginx 'restart journald'; } | LC_ALL=C sort -u > \"$f.tmp\" && mv -f \"$f.tmp\" \"$f\""
        );
        assert_eq!(
            clear_command(f, &set(&["restart journald", "it's"])),
            "f=/var/lib/provision/pending-handlers; if [ -f \"$f\" ]; then umask 077; rm -f \"$f.tmp\" && { grep -vxF -e 'it'\\''s' -e 'restart journald' \"$f\" || [ $? -eq 1 ]; } > \"$f.tmp\" && if [ -s \"$f.tmp\" ]; then mv -f \"$f.tmp\" \"$f\"; else rm -f \"$f.tmp\" \"$f\"; fi; fi"
        );
        assert_eq!(
            read_command("/tmp/a dir/p"),
            "f='/tmp/a dir/p'; if [ -f \"$f\" ]; then cat \"$f\"; fi"
        );
    }

    #[test]
    fn pending_names_are_lines() {
        assert_eq!(
            parse_pending("restart journald\n\nreload nginx\n"),
            set(&["reload nginx", "restart journald"])
        );
        assert!(parse_pending("").is_empty());
    }

    fn sh(script: &str) -> (bool, String) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The commands in a real shell: the directory and file are made private, additions merge,
    /// names with quotes survive, a partial clear keeps the rest, the last clear removes the file,
    /// and clearing with no file is nothing to do.
    #[test]
    fn commands_round_trip_in_a_real_shell() {
        use std::os::unix::fs::PermissionsExt;
        // A directory of this test's own (the engine has no tempfile dependency).
        let tmp = std::env::temp_dir().join(format!(
            "provision-handlers-{}-{}",
            std::process::id(),
            crate::facts::nonce()
        ));
        let file = tmp.join("state/pending-handlers");
        let f = file.to_str().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(sh(&read_command(f)), (true, String::new()));
        assert!(sh(&add_command(f, &set(&["restart journald"]))).0);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        assert!(sh(&add_command(f, &set(&["it's", "restart journald"]))).0);
        let (ok, out) = sh(&read_command(f));
        assert!(ok);
        assert_eq!(out, "it's\nrestart journald\n");
        assert_eq!(parse_pending(&out), set(&["it's", "restart journald"]));
        assert!(!file.with_extension("tmp").exists());
        assert!(sh(&clear_command(f, &set(&["restart journald"]))).0);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "it's\n");
        assert_eq!(mode(&file), 0o600);
        assert!(sh(&clear_command(f, &set(&["it's"]))).0);
        assert!(!file.exists(), "the last clear removes the file");
        assert!(
            sh(&clear_command(f, &set(&["it's"]))).0,
            "no file: nothing to do"
        );
        assert!(!file.exists());
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            0,
            "no temporary file left behind"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn handlers_run_in_declaration_order_once_on_notified_hosts_they_target() {
        let handlers = vec![
            ("reload nginx", hosts(&["h1", "h2", "h3"])),
            ("restart app", hosts(&["h1", "h2"])),
            ("never", hosts(&["h1", "h2", "h3"])),
        ];
        let notified = BTreeMap::from([
            // Notified by two steps, and in the reverse of declaration order.
            ("h1".to_string(), set(&["restart app", "reload nginx"])),
            // Notified, but the handler does not target h3.
            ("h3".to_string(), set(&["restart app"])),
            // From an older playbook: no such handler.
            ("h2".to_string(), set(&["gone"])),
        ]);
        assert_eq!(
            due(&handlers, &notified),
            vec![(0, hosts(&["h1"])), (1, hosts(&["h1"]))]
        );
        assert!(due(&handlers, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn hosts_keep_the_order_of_the_handlers_targets() {
        let handlers = vec![("restart", hosts(&["b", "a", "c"]))];
        let notified = BTreeMap::from([
            ("a".to_string(), set(&["restart"])),
            ("b".to_string(), set(&["restart"])),
        ]);
        assert_eq!(due(&handlers, &notified), vec![(0, hosts(&["b", "a"]))]);
    }

    #[test]
    fn the_default_file_is_under_var_lib_provision() {
        let h = Handlers {
            steps: vec![],
            pending_files: BTreeMap::from([("h1".to_string(), "/srv/p".to_string())]),
        };
        assert_eq!(h.pending_file("h1"), "/srv/p");
        assert_eq!(h.pending_file("h2"), "/var/lib/provision/pending-handlers");
        assert!(h.is_empty());
    }
}

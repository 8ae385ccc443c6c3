//! `provision secrets` through the real binary: init/set/view, passphrase mode from the
//! environment, Ctrl-C and SIGTERM during `edit`, and `git diff` through `textconv`.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provision");

/// A scratch directory removed on drop (std only: this crate has no dev-dependencies).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        // On tmpfs: `secrets edit` keeps its plaintext copy only in memory-backed directories.
        let dir = Path::new("/dev/shm").join(format!(
            "provision-secrets-cli-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn sub(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The binary with a controlled environment: its own HOME and temp dir, no identity or
/// editor settings inherited from whoever runs the tests.
fn provision(home: &Path, tmp: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .env("HOME", home)
        .env("PROVISION_SECRETS_TMPDIR", tmp)
        .env_remove("PROVISION_IDENTITY")
        .env_remove("PROVISION_SECRETS_PASSPHRASE")
        .env_remove("VISUAL")
        .env_remove("EDITOR")
        .stdin(Stdio::null());
    cmd
}

fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("provision did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_file(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A secrets file with one value, set up through the CLI itself.
fn prepared(s: &Scratch) -> (PathBuf, PathBuf, PathBuf) {
    let (home, tmp, work) = (s.sub("home"), s.sub("tmp"), s.sub("work"));
    ok(&provision(&home, &tmp, &work)
        .args(["secrets", "init"])
        .output()
        .unwrap());
    let mut set = provision(&home, &tmp, &work);
    set.args(["secrets", "set", "secrets.age", "db.password"]);
    ok(&run_with_stdin(set, "original-pw-123\n"));
    (home, tmp, work)
}

#[test]
fn init_set_view_and_wrong_identity() {
    let s = Scratch::new("basic");
    let (home, tmp, work) = prepared(&s);
    assert!(home.join(".config/provision/keys.txt").exists());
    assert!(work.join("secrets.recipients").exists());
    let view = ok(&provision(&home, &tmp, &work)
        .args(["secrets", "view", "secrets.age"])
        .output()
        .unwrap());
    assert_eq!(view, "[db]\npassword = \"original-pw-123\"\n");
    // The reference CLI reads it with the generated key.
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(home.join(".config/provision/keys.txt"))
        .arg(work.join("secrets.age"))
        .output()
        .unwrap();
    // What `view` shows, then the record of the recipients (a TOML comment) that view hides.
    let plain = ok(&out);
    let record = plain
        .strip_prefix(&view)
        .unwrap_or_else(|| panic!("{plain}"));
    assert!(
        record.starts_with("# provision: encrypted to SHA256:"),
        "{record}"
    );

    // Someone else: a clear error, exit 1, no secret in it.
    let other_home = s.sub("other-home");
    let out = provision(&other_home, &tmp, &work)
        .args(["secrets", "view", "secrets.age"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: no identity can decrypt secrets.age"),
        "{stderr}"
    );
    assert!(
        stderr.contains("~/.config/provision/keys.txt (missing)"),
        "{stderr}"
    );
    assert!(!stderr.contains("original-pw"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn passphrase_mode_reads_the_passphrase_from_the_environment() {
    let s = Scratch::new("pass");
    let (home, tmp, work) = (s.sub("home"), s.sub("tmp"), s.sub("work"));
    let with = |p: &str| {
        let mut c = provision(&home, &tmp, &work);
        c.env("PROVISION_SECRETS_PASSPHRASE", p);
        c
    };
    ok(&with("env passphrase")
        .args(["secrets", "init", "solo.age", "--passphrase"])
        .output()
        .unwrap());
    assert!(!work.join("solo.recipients").exists());
    assert!(
        !home.join(".config").exists(),
        "passphrase mode makes no key"
    );
    let mut set = with("env passphrase");
    set.args(["secrets", "set", "solo.age", "api_key"]);
    ok(&run_with_stdin(set, "ak-987654"));
    let view = ok(&with("env passphrase")
        .args(["secrets", "view", "solo.age"])
        .output()
        .unwrap());
    assert_eq!(view, "api_key = \"ak-987654\"\n");
    let out = with("wrong one")
        .args(["secrets", "view", "solo.age"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
}

/// Runs `secrets edit` in its own process group with a scripted editor that changes the file
/// and then does `signal_step`; returns the exit status and what the test needs to check.
fn interrupted_edit(
    name: &str,
    editor_tail: &str,
    from_test: Option<&str>,
) -> (Scratch, ExitStatus, String) {
    let s = Scratch::new(name);
    let (home, tmp, work) = prepared(&s);
    let before = fs::read(work.join("secrets.age")).unwrap();
    let marker = s.path().join("editor-started");
    let editor = script(
        s.path(),
        "editor.sh",
        &format!(
            "printf 'db = \"half-typed-secret\"\\n' > \"$1\"\ntouch {}\n{editor_tail}",
            marker.display()
        ),
    );
    let mut cmd = provision(&home, &tmp, &work);
    cmd.env("EDITOR", &editor)
        .args(["secrets", "edit", "secrets.age"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, like a shell job: `kill -INT 0` from the editor then reaches
        // provision and the editor (what Ctrl-C in a terminal does), and not the test runner.
        .process_group(0);
    // A suite started in the background by a non-interactive shell (`cmd &`) inherits SIGINT
    // ignored, and provision rightly keeps an ignored signal ignored: give it what a
    // terminal's foreground job has.
    // SAFETY: only signal(2), async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(signal) = from_test {
        wait_for_file(&marker, Duration::from_secs(20));
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(marker.exists(), "the editor ran");
    assert_eq!(
        fs::read(work.join("secrets.age")).unwrap(),
        before,
        "the secrets file must be unchanged"
    );
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "plaintext left in the temp dir: {left:?}");
    assert!(
        !stderr.contains("half-typed") && !stderr.contains("original-pw"),
        "{stderr}"
    );
    (s, status, stderr)
}

#[test]
fn ctrl_c_during_edit_removes_the_plaintext_and_keeps_the_file() {
    // SIGINT to the whole process group, as the terminal does on Ctrl-C.
    let (_s, status, stderr) = interrupted_edit("int", "kill -INT 0\nsleep 5", None);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert!(stderr.contains("plaintext copy removed"), "{stderr}");
}

#[test]
fn sigterm_to_provision_during_edit_stops_the_editor_and_cleans_up() {
    // Only provision gets SIGTERM; the editor (a long sleep) must be stopped by it.
    let start = Instant::now();
    let (_s, status, stderr) = interrupted_edit("term", "exec sleep 60", Some("-TERM"));
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn git_diff_shows_decrypted_changes_through_textconv() {
    let s = Scratch::new("git");
    let (home, tmp, work) = prepared(&s);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(&work)
            .env("HOME", &home)
            .env("PROVISION_SECRETS_TMPDIR", &tmp)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        ok(&out)
    };
    git(&["init", "-q"]);
    git(&[
        "config",
        "diff.provision-secrets.textconv",
        &format!("{BIN} secrets textconv"),
    ]);
    fs::write(
        work.join(".gitattributes"),
        "*.age diff=provision-secrets\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "init"]);
    let mut set = provision(&home, &tmp, &work);
    set.args(["secrets", "set", "secrets.age", "db.password"]);
    ok(&run_with_stdin(set, "rotated-pw-456\n"));
    let diff = git(&["diff"]);
    assert!(diff.contains("-password = \"original-pw-123\""), "{diff}");
    assert!(diff.contains("+password = \"rotated-pw-456\""), "{diff}");
    assert!(!diff.contains("BEGIN AGE"), "{diff}");
}

/// Every file under `dir` with its bytes: what a command may not have changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push((p.clone(), Vec::new()));
                stack.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Each shipped inventory, copied alone into an empty directory: check-config names every
/// missing secret and the one command that makes them, and writes nothing; `secrets generate`
/// (no terminal) creates them with the declared lengths and alphabets without printing them;
/// a second generate changes nothing; check-config then passes and still writes nothing.
#[test]
fn shipped_inventories_pass_check_config_after_init_and_generate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let declared = [
        ("openssl_key", 64),
        ("db_pass", 32),
        ("db_root_pass", 32),
        ("executor_secret", 64),
    ];
    for inventory in ["minimal.toml", "production.toml"] {
        let s = Scratch::new("shipped");
        let (home, tmp, work) = (s.sub("home"), s.sub("tmp"), s.sub("work"));
        fs::copy(
            root.join("inventories").join(inventory),
            work.join("cluster.toml"),
        )
        .unwrap();
        let run = |args: &[&str]| provision(&home, &tmp, &work).args(args).output().unwrap();
        ok(&run(&["secrets", "init", "secrets.age"]));

        let before = snapshot(&work);
        let check = run(&["check-config", "cluster.toml"]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(2), "{inventory}: {stderr}");
        for (name, _) in declared {
            assert!(
                stderr.contains(&format!("error: required secret `appwrite.{name}` (")),
                "{inventory}: {stderr}"
            );
        }
        assert_eq!(
            stderr.matches("error: ").count(),
            declared.len(),
            "{stderr}"
        );
        // Named as the built-in file, not as the scratch copy check-config read.
        assert!(
            stderr.starts_with("<built-in>/playbooks/swarm.toml:"),
            "{stderr}"
        );
        assert!(
            stderr.contains("help: create every missing generated secret with `provision secrets generate cluster.toml`"),
            "{stderr}"
        );
        assert_eq!(
            snapshot(&work),
            before,
            "{inventory}: check-config wrote something"
        );

        let generated = run(&["secrets", "generate", "cluster.toml"]);
        let said = format!(
            "{}{}",
            ok(&generated),
            String::from_utf8_lossy(&generated.stderr)
        );
        assert!(
            said.contains("generated appwrite.db_pass (32 random alnum characters)"),
            "{said}"
        );
        let view = ok(&run(&["secrets", "view", "secrets.age"]));
        let table: toml::Table = toml::from_str(&view).unwrap();
        for (name, length) in declared {
            let value = table["appwrite"][name].as_str().unwrap();
            assert_eq!(value.len(), length, "{name}");
            assert!(value.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            assert!(!said.contains(value), "generate printed {name}: {said}");
        }
        assert!(
            table["appwrite"].get("smtp_password").is_none(),
            "optional ones are not made"
        );

        let after = snapshot(&work);
        let again = run(&["secrets", "generate", "cluster.toml"]);
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("nothing to generate"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        ok(&again);
        assert_eq!(snapshot(&work), after, "a second generate rewrote the file");

        let checked = ok(&run(&["check-config", "cluster.toml"]));
        assert!(checked.contains("cluster.toml: ok:"), "{checked}");
        assert_eq!(
            snapshot(&work),
            after,
            "{inventory}: check-config wrote something"
        );
    }
}

/// A cluster file without `secrets`, and a secrets file not made yet: generate says what to do
/// and writes nothing.
#[test]
fn generate_names_the_missing_pieces() {
    let s = Scratch::new("generate-missing");
    let (home, tmp, work) = (s.sub("home"), s.sub("tmp"), s.sub("work"));
    let run = |args: &[&str]| provision(&home, &tmp, &work).args(args).output().unwrap();
    fs::write(
        work.join("cluster.toml"),
        "name = \"c\"\n[[hosts]]\nname = \"m\"\naddress = \"10.0.0.1\"\nprivate_ip = \"10.0.0.1\"\nroles = [\"manager\"]\n",
    )
    .unwrap();
    let out = run(&["secrets", "generate", "cluster.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cluster.toml names no secrets file")
            && stderr.contains("provision secrets init secrets.age"),
        "{stderr}"
    );
    let check = run(&["check-config", "cluster.toml"]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cluster.toml names no secrets file"),
        "{stderr}"
    );

    let mut text = fs::read_to_string(work.join("cluster.toml")).unwrap();
    text.insert_str(0, "secrets = \"secrets.age\"\n");
    fs::write(work.join("cluster.toml"), text).unwrap();
    let out = run(&["secrets", "generate", "cluster.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("provision secrets init"), "{stderr}");
    assert!(!work.join("secrets.age").exists());
}

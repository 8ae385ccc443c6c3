//! Proves the general steps' fact commands and actions in a real local `sh`
//! against temp dirs: facts are gathered through the engine's batch script,
//! uploads go through the transport's own upload commands, and after applying
//! a plan the next check must say there is nothing left to do. (`apt` and
//! `service` change the machine itself: they are proven on lab hosts.)
// A test's diagnostics; no secrets.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use provision_engine::inventory::Host;
use provision_engine::step::{Check, HostStep};
use provision_playbook::ctx::{BuildCtx, ParamError, test_inventory};
use provision_playbook::registry::host_step;
use provision_testkit::local::LocalShell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SECRET: &str = "s3cr3t-pw";

/// The current user and group: chown to them works without root.
fn me() -> (String, String) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    (id("-un"), id("-gn"))
}

fn build(name: &str, with: &str, base_dir: &Path) -> Result<Box<dyn HostStep>, ParamError> {
    let host = Host {
        name: "web-1".into(),
        address: "127.0.0.1".into(),
        port: None,
        user: None,
        become_sudo: false,
        private_ip: None,
        roles: vec![],
        labels: Default::default(),
        vars: Default::default(),
        line: 1,
    };
    let env = provision_engine::template::environment();
    let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
        "host": {"name": "web-1"}, "vars": {"port": 8080}, "secrets": {"db_password": SECRET}
    })));
    let render = |n: &str, body: &str| provision_engine::template::render(&env, n, body, &ctx);
    let has_secret = |t: &str| t.contains(SECRET);
    let ctor = host_step(name).unwrap_or_else(|| panic!("step {name} is registered"));
    let inventory = test_inventory();
    let table: toml::Table = toml::from_str(with).unwrap();
    ctor(
        &table,
        &BuildCtx {
            host: &host,
            inventory: &inventory,
            base_dir,
            render: &render,
            has_secret: &has_secret,
            warn: &|_, _| {},
        },
    )
}

fn step(name: &str, with: &str, base_dir: &Path) -> Box<dyn HostStep> {
    build(name, with, base_dir).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn directory_is_created_fixed_and_removed() {
    let t = LocalShell::new();
    let (user, group) = me();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my app/data");
    let with = format!(
        "path = \"{}\"\nmode = \"0750\"\nowner = \"{user}\"\ngroup = \"{group}\"",
        s(&dir)
    );
    let d = step("directory", &with, tmp.path());
    assert_eq!(t.converge(&*d).len(), 1);
    assert!(dir.is_dir());
    assert_eq!(mode_of(&dir), 0o750);
    // Drift: loose mode, plus a setgid bit as a setgid parent would hand down.
    chmod(&dir, 0o2777);
    assert_eq!(
        t.converge(&*d),
        vec!["update ".to_string() + s(&dir) + ": mode 0750 (was 2777)"]
    );
    assert_eq!(mode_of(&dir), 0o750);
    // A regular file in the way is an error, not a silent replacement.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = t
        .check(&*step(
            "directory",
            &format!("path = \"{}\"", s(&file)),
            tmp.path(),
        ))
        .unwrap_err();
    assert!(e.message.ends_with("exists but is a regular file"), "{e}");
    // Absent removes the whole tree, once.
    std::fs::write(dir.join("f"), "x").unwrap();
    let gone = step(
        "directory",
        &format!(
            "path = \"{}\"\nstate = \"absent\"",
            s(&tmp.path().join("my app"))
        ),
        tmp.path(),
    );
    assert_eq!(t.converge(&*gone).len(), 1);
    assert!(!tmp.path().join("my app").exists());
}

#[test]
fn template_is_rendered_uploaded_and_repaired() {
    let t = LocalShell::new();
    let (user, group) = me();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("app.conf.j2"),
        "# {{ host.name }}\nport = {{ vars.port }}\n",
    )
    .unwrap();
    let dest = tmp.path().join("it's here.conf");
    let with = format!(
        "src = \"app.conf.j2\"\ndest = \"{}\"\nmode = \"0640\"\nowner = \"{user}\"\ngroup = \"{group}\"",
        s(&dest)
    );
    let tpl = step("template", &with, tmp.path());
    assert_eq!(
        t.converge(&*tpl),
        vec![format!("create {} (20 bytes, mode 0640)", s(&dest))]
    );
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "# web-1\nport = 8080\n"
    );
    assert_eq!(mode_of(&dest), 0o640);
    // Drifted content: the diff shows what was there.
    std::fs::write(&dest, "# web-1\nport = 80\n").unwrap();
    let Check::Change(c) = t.check(&*tpl).unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].diff.as_ref().unwrap().before.as_deref(),
        Some("# web-1\nport = 80\n")
    );
    t.converge(&*tpl);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "# web-1\nport = 8080\n"
    );
    // Drifted mode only.
    chmod(&dest, 0o666);
    assert_eq!(
        t.converge(&*tpl),
        vec![format!("update {}: mode 0640 (was 0666)", s(&dest))]
    );
    assert_eq!(mode_of(&dest), 0o640);
    // A file holding a secret, no `mode`: created 0600.
    std::fs::write(tmp.path().join("db.j2"), "pw={{ secrets.db_password }}\n").unwrap();
    let db = step(
        "template",
        &format!("src = \"db.j2\"\ndest = \"{}/db\"", s(tmp.path())),
        tmp.path(),
    );
    t.converge(&*db);
    assert_eq!(mode_of(&tmp.path().join("db")), 0o600);
}

#[test]
fn template_refuses_symbolic_links() {
    let t = LocalShell::new();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("real.conf"), "x\n").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("real.conf"), tmp.path().join("link.conf")).unwrap();
    let c = step(
        "copy",
        &format!("content = \"y\\n\"\ndest = \"{}/link.conf\"", s(tmp.path())),
        tmp.path(),
    );
    let e = t.check(&*c).unwrap_err();
    assert_eq!(
        e.hint,
        Some(format!(
            "set dest = \"{}/real.conf\" to change the file it points to",
            s(tmp.path())
        ))
    );
}

#[test]
fn copy_handles_binary_and_large_files() {
    let t = LocalShell::new();
    let tmp = tempfile::tempdir().unwrap();
    // Binary and above the 64 KiB diff limit: compared by hash only.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(tmp.path().join("blob.bin"), &data).unwrap();
    let dest = tmp.path().join("out.bin");
    let c = step(
        "copy",
        &format!("src = \"blob.bin\"\ndest = \"{}\"", s(&dest)),
        tmp.path(),
    );
    t.converge(&*c);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(mode_of(&dest), 0o644);
    let mut changed = data.clone();
    changed[100] ^= 1;
    std::fs::write(&dest, &changed).unwrap();
    assert_eq!(
        t.converge(&*c),
        vec![format!(
            "update {}: content (no diff: binary or larger than 64 KiB)",
            s(&dest)
        )]
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    // Small binary content is gathered too (base64) without breaking the facts.
    let small = tmp.path().join("small.bin");
    std::fs::write(&small, b"\0\xff\n<<pv-t-end 0 0>>\n").unwrap();
    let inline = step(
        "copy",
        &format!("content = \"text\\n\"\ndest = \"{}\"", s(&small)),
        tmp.path(),
    );
    assert_eq!(t.converge(&*inline).len(), 1);
    assert_eq!(std::fs::read_to_string(&small).unwrap(), "text\n");
}

#[test]
fn line_edits_keep_mode_and_converge() {
    let t = LocalShell::new();
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("sshd config");
    std::fs::write(&conf, "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\nX11Forwarding yes\nPermitRootLogin yes").unwrap();
    chmod(&conf, 0o640);
    let with = format!(
        "path = \"{}\"\nline = \"PermitRootLogin no\"\nregexp = \"^#?PermitRootLogin[[:space:]]\"",
        s(&conf)
    );
    let l = step("line", &with, tmp.path());
    assert_eq!(
        t.converge(&*l),
        vec![format!("replace lines 2, 4 in {}", s(&conf))]
    );
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\nX11Forwarding yes\nPermitRootLogin no"
    );
    assert_eq!(mode_of(&conf), 0o640);
    // Append without a regexp; a file without a final newline gets one first.
    let add = step(
        "line",
        &format!("path = \"{}\"\nline = \"UseDNS no\"", s(&conf)),
        tmp.path(),
    );
    assert_eq!(
        t.converge(&*add),
        vec![format!("append line 5 in {}", s(&conf))]
    );
    assert!(
        std::fs::read_to_string(&conf)
            .unwrap()
            .ends_with("PermitRootLogin no\nUseDNS no\n")
    );
    // Remove by regexp.
    let rm = step(
        "line",
        &format!(
            "path = \"{}\"\nregexp = \"^X11\"\nstate = \"absent\"",
            s(&conf)
        ),
        tmp.path(),
    );
    assert_eq!(
        t.converge(&*rm),
        vec![format!("remove line 3 in {}", s(&conf))]
    );
    assert!(!std::fs::read_to_string(&conf).unwrap().contains("X11"));
    assert_eq!(mode_of(&conf), 0o640);
    // A regexp grep rejects is reported as such.
    let bad = step(
        "line",
        &format!("path = \"{}\"\nline = \"a\"\nregexp = \"(\"", s(&conf)),
        tmp.path(),
    );
    let e = t.check(&*bad).unwrap_err();
    assert!(
        e.message
            .contains("not a valid POSIX extended regular expression"),
        "{e}"
    );
}

#[test]
fn line_creates_missing_files_only_when_asked() {
    let t = LocalShell::new();
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join("app.env");
    let no = step(
        "line",
        &format!("path = \"{}\"\nline = \"A=1\"", s(&env)),
        tmp.path(),
    );
    assert_eq!(
        t.check(&*no).unwrap_err().message,
        format!("{} does not exist", s(&env))
    );
    let yes = step(
        "line",
        &format!(
            "path = \"{}\"\nline = \"A=1\"\ncreate = true\nmode = \"0600\"",
            s(&env)
        ),
        tmp.path(),
    );
    t.converge(&*yes);
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "A=1\n");
    assert_eq!(mode_of(&env), 0o600);
}

#[test]
fn command_guards_and_stdin() {
    let t = LocalShell::new();
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("done marker");
    let with = format!(
        "run = \"cat > '{m}'\"\nstdin = \"from stdin\"\ncreates = \"{m}\"",
        m = s(&marker)
    );
    let c = step("command", &with, tmp.path());
    let plan = t.check(&*c).unwrap();
    t.apply(plan);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "from stdin");
    assert_eq!(
        t.check(&*c).unwrap(),
        Check::Ok(format!("{} exists (creates)", s(&marker)))
    );
    // unless: ok once the condition holds; a syntax error only makes it fail.
    let count = tmp.path().join("count");
    let with = format!(
        "run = \"echo x >> {f}\"\nunless = \"grep -q x {f}\"",
        f = s(&count)
    );
    let u = step("command", &with, tmp.path());
    t.apply(t.check(&*u).unwrap());
    assert!(matches!(t.check(&*u).unwrap(), Check::Ok(_)));
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n");
    let broken = step(
        "command",
        "run = \"true\"\nunless = \"if then )\"",
        tmp.path(),
    );
    assert!(matches!(t.check(&*broken).unwrap(), Check::Change(_)));
    // only_if: runs only while it succeeds.
    let o = step(
        "command",
        &format!(
            "run = \"true\"\nonly_if = \"test -e {}\"",
            s(&tmp.path().join("nope"))
        ),
        tmp.path(),
    );
    assert_eq!(
        t.check(&*o).unwrap(),
        Check::Skip(format!(
            "`test -e {}/nope` exited 1 (only_if)",
            s(tmp.path())
        ))
    );
}

/// `user` with stub `getent` and `id` on PATH pointing the current user's home
/// at a temp dir: proves the authorized_keys gather and write for real.
#[test]
fn user_authorized_keys_with_stubbed_account_database() {
    let (user, group) = me();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    let uid = String::from_utf8(uid.stdout).unwrap().trim().to_string();
    let stub = |name: &str, body: String| {
        let p: PathBuf = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        chmod(&p, 0o755);
    };
    stub(
        "getent",
        format!(
            "[ \"$2\" = {user} ] && echo '{user}:x:{uid}:{uid}::{}:/bin/sh'\n",
            s(&home)
        ),
    );
    stub(
        "id",
        format!(
            "case $1 in -nG) echo '{group} docker';; -gn) echo '{group}';; *) exec /usr/bin/id \"$@\";; esac\n"
        ),
    );
    let t = LocalShell::new().env("PATH", format!("{}:/usr/bin:/bin", s(&bin)));
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0eKqWk3n9q3sC0tHcXjW9m2b5y8yq7d3vQe1Xo0aB ops@laptop";
    let u = step(
        "user",
        &format!("name = \"{user}\"\ngroups = [\"docker\"]\nauthorized_keys = [\"{key}\"]"),
        tmp.path(),
    );
    let keys = home.join(".ssh/authorized_keys");
    assert_eq!(
        t.converge(&*u),
        vec![format!("add 1 authorized key to {}", s(&keys))]
    );
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{key}\n"));
    assert_eq!(
        (mode_of(&home.join(".ssh")), mode_of(&keys)),
        (0o700, 0o600)
    );
    // Other keys are kept; loose modes are fixed.
    std::fs::write(&keys, "ssh-rsa AAAAB3Nza other@host\n").unwrap();
    chmod(&keys, 0o644);
    t.converge(&*u);
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        format!("ssh-rsa AAAAB3Nza other@host\n{key}\n")
    );
    assert_eq!(mode_of(&keys), 0o600);
    // A planted symbolic link is refused.
    std::fs::remove_file(&keys).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &keys).unwrap();
    assert!(
        t.check(&*u)
            .unwrap_err()
            .message
            .ends_with("is a symbolic link")
    );
}

/// `apt` facts only (nothing is installed): on a Debian-family machine the
/// read-only gather runs and its real output parses.
#[test]
fn apt_gather_reads_the_real_package_database() {
    if !Path::new("/usr/bin/dpkg-query").exists() || !Path::new("/usr/bin/apt-cache").exists() {
        eprintln!("skipped: not a Debian-family machine");
        return;
    }
    let t = LocalShell::new();
    let tmp = tempfile::tempdir().unwrap();
    let present = step("apt", "packages = [\"coreutils\"]", tmp.path());
    assert_eq!(
        t.check(&*present).unwrap(),
        Check::Ok("coreutils installed".into())
    );
    // Converged: dpkg alone answers, the package lists are not read.
    let f = t.gather(&*present);
    assert!(!f.stdout.contains("now="), "{}", f.stdout);
    let missing = step(
        "apt",
        "packages = [\"coreutils\", \"provision-no-such-pkg\"]",
        tmp.path(),
    );
    let f = t.gather(&*missing);
    for key in ["now=", "updated=", "sources=", "lists="] {
        assert!(f.stdout.contains(key), "{key} missing from {}", f.stdout);
    }
    let absent = step(
        "apt",
        "packages = [\"provision-no-such-pkg\"]\nstate = \"absent\"",
        tmp.path(),
    );
    assert_eq!(
        t.check(&*absent).unwrap(),
        Check::Ok("provision-no-such-pkg not installed".into())
    );
}

/// `user` facts from the real account database (read-only: nothing is created).
#[test]
fn user_gather_reads_the_real_account_database() {
    let t = LocalShell::new();
    let tmp = tempfile::tempdir().unwrap();
    let (user, _) = me();
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let me_step = step("user", &format!("name = \"{user}\""), tmp.path());
    assert_eq!(
        t.check(&*me_step).unwrap(),
        Check::Ok(format!("user {user} (uid {})", uid.trim()))
    );
    let nobody = step(
        "user",
        "name = \"provision-no-such-user\"\nstate = \"absent\"",
        tmp.path(),
    );
    assert_eq!(
        t.check(&*nobody).unwrap(),
        Check::Ok("no user provision-no-such-user".into())
    );
}

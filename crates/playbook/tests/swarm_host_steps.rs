//! Proves the swarm playbook's host steps (swap, hostname, docker, nfs_server,
//! nfs_mount, load_balancer) in a real local `sh`: facts are gathered through
//! the engine's batch script, uploads go through the transport's upload
//! commands, and every step converges (check, apply, check again: nothing left).
//!
//! System files live in temp dirs (each step's `Files`), and the programs that
//! would change this machine (apt-get, systemctl, swapon, mount, exportfs, ...)
//! are stub scripts keeping their state in files: a fake Debian host. Anything
//! else (stat, sha256sum, awk, dd, mkswap on a plain file, ...) is real.
//! `apt-get update` actions are not run: they touch apt's real stamp file.

use provision_engine::fact::Fact;
use provision_engine::facts;
use provision_engine::inventory::Inventory;
use provision_engine::step::{Action, Check, Facts, HostStep, StepError};
use provision_playbook::ctx::{BuildCtx, ParamError};
use provision_playbook::steps::{
    apt, docker, hostname, load_balancer, nfs_mount, nfs_server, swap,
};
use provision_testkit::local::LocalShell;
use provision_transport::{Command, Output, Stdin, Transport, TransportError};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/swarm");

const CLUSTER: &str = "name = \"lab\"\n\
    [[hosts]]\nname = \"storage-1\"\naddress = \"127.0.0.1\"\nport = 2201\nprivate_ip = \"10.0.0.10\"\nroles = [\"storage\"]\n\
    [[hosts]]\nname = \"manager-1\"\naddress = \"127.0.0.1\"\nport = 2202\nprivate_ip = \"10.0.0.11\"\nroles = [\"manager\"]\n\
    [[hosts]]\nname = \"worker-1\"\naddress = \"127.0.0.1\"\nport = 2203\nprivate_ip = \"10.0.0.21\"\nroles = [\"worker\"]\n\
    [[hosts]]\nname = \"lb-1\"\naddress = \"127.0.0.1\"\nport = 2204\nprivate_ip = \"10.0.0.30\"\nroles = [\"lb\"]\n";

/// The stub programs of the fake host; `$STATE` holds its state.
const STUBS: &[(&str, &str)] = &[
    (
        "dpkg-query",
        r#"shift 2
for n in "$@"; do
  [ -f "$STATE/pkgs/$n" ] || continue
  st=ii; [ -f "$STATE/holds/$n" ] && st=hi
  printf 'pkg=%s  %s amd64 %s\n' "$st" "$n" "$(cat "$STATE/pkgs/$n")"
done"#,
    ),
    (
        "apt-cache",
        r#"case "$1" in
policy) shift; for n in "$@"; do printf '%s:\n  Installed: (none)\n  Candidate: 1.0-1\n  Version table:\n' "$n"; done;;
madison) cat "$STATE/madison" 2>/dev/null;;
esac"#,
    ),
    (
        "apt-get",
        r#"echo "apt-get $*" >> "$STATE/log"
[ "$1" = update ] && exit 0
skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$a" in
    -o) skip=1;;
    -*|install) ;;
    *) n=${a%%=*}; v=1.0-1; case "$a" in *=*) v=${a#*=};; esac
       mkdir -p "$STATE/pkgs"; echo "$v" > "$STATE/pkgs/$n"
       case "$n" in docker.io|docker-ce) u=docker.service;; nfs-kernel-server) u=nfs-server.service;; haproxy) u=haproxy.service;; *) u=;; esac
       if [ -n "$u" ]; then mkdir -p "$STATE/units"; echo "active enabled" > "$STATE/units/$u"; fi;;
  esac
done"#,
    ),
    (
        "apt-mark",
        r#"echo "apt-mark $*" >> "$STATE/log"
v=$1; shift; mkdir -p "$STATE/holds"
for n in "$@"; do if [ "$v" = hold ]; then touch "$STATE/holds/$n"; else rm -f "$STATE/holds/$n"; fi; done"#,
    ),
    (
        "systemctl",
        r#"echo "systemctl $*" >> "$STATE/log"
for u; do :; done
f="$STATE/units/$u"
case "$1" in
show) if [ -f "$f" ]; then read a e < "$f"; printf 'LoadState=loaded\nActiveState=%s\nUnitFileState=%s\n' "$a" "$e"; else printf 'LoadState=not-found\nActiveState=inactive\nUnitFileState=\n'; fi;;
enable) [ -f "$f" ] || exit 1; read a e < "$f"; [ "$2" = --now ] && a=active; echo "$a enabled" > "$f";;
start|restart|reload-or-restart) [ -f "$f" ] || exit 5; read a e < "$f"; echo "active $e" > "$f";;
reload) read a e < "$f"; [ "$a" = active ] || { echo "$u is not active, cannot reload." >&2; exit 1; };;
esac"#,
    ),
    (
        "exportfs",
        r#"echo "exportfs $*" >> "$STATE/log"
: > "$ETAB"
grep -v '^#' "$EXPORTS" | while read -r path rest; do
  [ -n "$path" ] || continue
  for c in $rest; do printf '%s\t%s\n' "$path" "$c" >> "$ETAB"; done
done"#,
    ),
    (
        "haproxy",
        r#"if grep -q bogus "$3"; then echo "[ALERT] parsing [$3:1] : unknown keyword 'bogus'" >&2; exit 1; fi
echo "Configuration file is valid""#,
    ),
    (
        "dockerd",
        r#"case "$1" in
--help) echo "      --validate                                Validate daemon configuration and exit";;
--validate) if grep -q bogus "$3"; then echo "unable to configure the Docker daemon: unknown directive bogus" >&2; exit 1; fi; echo "configuration OK";;
esac"#,
    ),
    (
        "curl",
        r#"echo "curl $*" >> "$STATE/log"
case " $* " in *" -K - "*) echo "curl config: $(cat)" >> "$STATE/log";; esac
out=; prev=
for a; do [ "$prev" = -o ] && out=$a; prev=$a; done
[ -f "$STATE/key" ] || { echo "curl: (6) Could not resolve host" >&2; exit 6; }
cp "$STATE/key" "$out""#,
    ),
    ("dpkg", r#"[ "$1" = --print-architecture ] && echo amd64"#),
    (
        "getent",
        r#"case "$1" in
group) [ -f "$STATE/units/docker.service" ] && echo "docker:x:998:$(cat "$STATE/docker-members" 2>/dev/null)"; true;;
passwd) shift; for n in "$@"; do grep -qx "$n" "$STATE/users" 2>/dev/null && echo "$n:x:1000:1000::/home/$n:/bin/sh"; done; true;;
esac"#,
    ),
    (
        "usermod",
        r#"echo "usermod $*" >> "$STATE/log"
m=$(cat "$STATE/docker-members" 2>/dev/null); [ -n "$m" ] && m="$m,"
echo "$m$3" > "$STATE/docker-members""#,
    ),
    ("findmnt", r#"cat "$STATE/mounts" 2>/dev/null; true"#),
    (
        "mount",
        r#"echo "mount $*" >> "$STATE/log"
[ -f "$STATE/mount-fails" ] && { echo "mount.nfs: Connection timed out" >&2; exit 32; }
src=$(awk -v m="$1" '$2 == m { print $1 }' "$FSTAB")
[ -n "$src" ] || { echo "mount: $1: can't find in /etc/fstab." >&2; exit 1; }
echo "$1 $src nfs4 rw,noatime,vers=4.2,hard" >> "$STATE/mounts""#,
    ),
    (
        "umount",
        r#"echo "umount $*" >> "$STATE/log"
awk -v m="$1" '$1 != m' "$STATE/mounts" > "$STATE/mounts.new"; mv "$STATE/mounts.new" "$STATE/mounts""#,
    ),
    (
        "swapon",
        r#"case "$1" in
--show=NAME,SIZE) cat "$STATE/swaps" 2>/dev/null; exit 0;;
--show=NAME) cut -d' ' -f1 "$STATE/swaps" 2>/dev/null; exit 0;;
esac
echo "swapon $*" >> "$STATE/log"
[ -f "$STATE/swapon-fails-once" ] && { rm -f "$STATE/swapon-fails-once"; echo "swapon: $1: swapon failed: Invalid argument" >&2; exit 255; }
[ "$(dd if="$1" bs=1 skip=4086 count=10 2>/dev/null)" = SWAPSPACE2 ] || { echo "swapon: $1: read swap header failed" >&2; exit 255; }
echo "$1 $(( $(stat -c %s "$1") - 4096 ))" >> "$STATE/swaps""#,
    ),
    (
        "swapoff",
        r#"echo "swapoff $*" >> "$STATE/log"
awk -v f="$1" '$1 != f' "$STATE/swaps" > "$STATE/swaps.new"; mv "$STATE/swaps.new" "$STATE/swaps""#,
    ),
    (
        "fallocate",
        r#"[ -f "$STATE/no-fallocate" ] && { echo "fallocate: fallocate failed: Operation not supported" >&2; exit 1; }
exec /usr/bin/fallocate "$@""#,
    ),
    (
        "dd",
        r#"echo "dd $*" >> "$STATE/log"; exec /usr/bin/dd "$@""#,
    ),
    ("uname", r#"cat "$STATE/hostname""#),
    (
        "hostname",
        r#"echo "hostname $*" >> "$STATE/log"; printf '%s\n' "$1" > "$STATE/hostname""#,
    ),
];

/// The fake host: a temp dir with the stubs in `bin/` and their state in `state/`.
struct Host {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

type Fut<'a> = Pin<Box<dyn Future<Output = Result<Output, TransportError>> + Send + 'a>>;

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        for (name, body) in STUBS {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut h = Host {
            dir,
            env: Vec::new(),
        };
        h.env = vec![
            (
                "PATH".into(),
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
            ),
            ("STATE".into(), s(&h.state())),
        ];
        h
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    fn set_env(&mut self, k: &str, v: &str) {
        self.env.push((k.into(), v.into()));
    }

    fn put(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    fn log(&self) -> String {
        self.read("state/log")
    }

    /// The local shell with this host's environment (stub programs first on PATH).
    fn sh(&self, script: &str, stdin: &[u8]) -> Output {
        self.env
            .iter()
            .fold(LocalShell::new(), |l, (k, v)| l.env(k.clone(), v.clone()))
            .sh(script, stdin)
    }
}

impl Transport for Host {
    fn host(&self) -> &str {
        "fake"
    }

    fn run<'a, 'b>(&'a self, cmd: Command) -> Fut<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let stdin = match cmd.stdin {
                Stdin::Empty => Vec::new(),
                Stdin::Bytes(b) => b.to_vec(),
                Stdin::Stream(mut s) => {
                    use tokio::io::AsyncReadExt;
                    let mut v = Vec::new();
                    s.read_to_end(&mut v).await.unwrap();
                    v
                }
            };
            Ok(self.sh(&cmd.script, &stdin))
        })
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap()
}

type Ctor<F> = fn(&toml::Table, &BuildCtx<'_>, F) -> Result<Box<dyn HostStep>, ParamError>;

/// Builds a step for `host` of the lab cluster, with real template rendering.
fn build<F>(
    ctor: Ctor<F>,
    host: &str,
    with: &str,
    base_dir: &Path,
    files: F,
) -> Result<Box<dyn HostStep>, ParamError> {
    let inv = Inventory::parse(CLUSTER, Path::new("cluster.toml"), &Default::default()).unwrap();
    let h = inv.host(host).unwrap();
    let env = provision_engine::template::environment();
    let ctx = provision_playbook::compile::host_context(&inv, h, &toml::Table::new());
    let render = |n: &str, body: &str| provision_engine::template::render(&env, n, body, &ctx);
    let has_secret = |_: &str| false;
    let bctx = BuildCtx {
        host: h,
        inventory: &inv,
        base_dir,
        render: &render,
        has_secret: &has_secret,
        warn: &|_, _| {},
    };
    ctor(&toml::from_str(with).unwrap(), &bctx, files)
}

/// Gathers as the engine does: in its batch script, in a subshell, stdin from /dev/null.
fn gather(h: &Host, step: &dyn HostStep) -> Facts {
    let cmd = step.gather().expect("the step gathers facts");
    let out = h.sh(&facts::batch_script("t", &[(0, cmd.clone())]), b"");
    let mut parsed = facts::parse_batch("t", &String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        parsed.len(),
        1,
        "fact command broke the batch: {cmd}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parsed.remove(0).1
}

fn check(h: &Host, step: &dyn HostStep) -> Result<Check, StepError> {
    step.check(&gather(h, step))
}

/// Applies a plan as the engine does (apt-get update excepted); the change
/// summaries, or the stderr of the first failing script.
fn apply(h: &Host, plan: Check) -> Result<Vec<String>, String> {
    let Check::Change(changes) = plan else {
        panic!("expected changes, got {plan:?}")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let update = apt::update_command();
    for c in &changes {
        for a in &c.actions {
            match a {
                Action::Run { script, .. } if *script == update => {}
                Action::Run { script, stdin } | Action::RunOn { script, stdin, .. } => {
                    let out = h.sh(
                        script,
                        stdin.as_deref().map(|s| s.as_slice()).unwrap_or_default(),
                    );
                    if !out.success() {
                        return Err(out.stderr_str().to_string());
                    }
                }
                Action::Upload { dest, .. } => {
                    let up = a.upload().expect("an upload action");
                    rt.block_on(h.upload(up))
                        .unwrap_or_else(|e| panic!("upload to {dest}: {e}"));
                }
            }
        }
    }
    // Whether apt-get update comes first depends on this machine's real lists.
    Ok(changes
        .into_iter()
        .map(|c| match c.summary.split_once(" (after apt-get update: ") {
            Some((s, _)) => s.to_string(),
            None => c.summary,
        })
        .collect())
}

/// Check, apply, and check again: the second check must be Ok.
fn converge(h: &Host, step: &dyn HostStep) -> Vec<String> {
    let summaries =
        apply(h, check(h, step).unwrap()).unwrap_or_else(|e| panic!("apply failed: {e}"));
    match check(h, step).unwrap() {
        Check::Ok(_) => summaries,
        other => panic!("not converged after {summaries:?}: {other:?}"),
    }
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn swap_is_created_resized_repaired_and_never_overwrites_data() {
    let h = Host::new();
    h.put("etc/fstab", &fixture("debian12-fstab"));
    h.put("proc/swappiness", "60\n");
    let files = swap::Files {
        fstab: s(&h.path("etc/fstab")),
        sysctl_conf: s(&h.path("etc/sysctl.d/99-provision-swap.conf")),
        proc_swappiness: s(&h.path("proc/swappiness")),
    };
    let path = s(&h.path("swapfile"));
    let with = |size: &str| format!("size = \"{size}\"\npath = \"{path}\"\nswappiness = \"10\"");
    let step = build(
        swap::build_with,
        "worker-1",
        &with("2M"),
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    assert_eq!(
        converge(&h, &*step),
        vec![
            format!("create swap file {path} (2M) and activate it"),
            format!("{}: append line 13 ({path} none swap sw 0 0)", files.fstab),
            format!(
                "set vm.swappiness to 10 (was 60) and persist it in {}",
                files.sysctl_conf
            ),
        ]
    );
    let file = h.path("swapfile");
    assert_eq!(
        (std::fs::metadata(&file).unwrap().len(), mode_of(&file)),
        (2 << 20, 0o600)
    );
    assert_eq!(
        h.read("state/swaps"),
        format!("{path} {}\n", (2 << 20) - 4096)
    );
    assert!(h.read("etc/fstab").ends_with(&format!(
        "errors=remount-ro 0       1\n{path} none swap sw 0 0\n"
    )));
    assert_eq!(h.read("proc/swappiness"), "10\n");
    assert_eq!(
        h.read("etc/sysctl.d/99-provision-swap.conf"),
        swap::sysctl_content(10)
    );
    assert!(
        !h.log().contains("dd if=/dev/zero"),
        "fallocate was enough: {}",
        h.log()
    );

    // A new size: off, recreated, on again.
    let bigger = build(
        swap::build_with,
        "worker-1",
        &with("3M"),
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    assert_eq!(
        converge(&h, &*bigger),
        vec![format!(
            "resize swap file {path} from 2M to 3M (swapoff, recreate, swapon)"
        )]
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 3 << 20);
    assert!(h.log().contains(&format!("swapoff {path}")));
    assert_eq!(
        h.read("state/swaps"),
        format!("{path} {}\n", (3 << 20) - 4096)
    );

    // After a reboot without swap, with a loosened mode.
    std::fs::write(h.state().join("swaps"), "").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        converge(&h, &*bigger),
        vec![
            format!("make {path} private: mode 0600, owner root (was 0644, root)"),
            format!("activate swap file {path} (3M)")
        ]
    );

    // A filesystem without fallocate, and one whose fallocated files swapon refuses: dd.
    let other = s(&h.path("other.swap"));
    h.put("state/no-fallocate", "");
    let step = build(
        swap::build_with,
        "worker-1",
        &format!("size = \"1M\"\npath = \"{other}\""),
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    converge(&h, &*step);
    assert!(h.log().contains(&format!(
        "dd if=/dev/zero of={other}.provision-new bs=1M count=1 status=none"
    )));
    std::fs::remove_file(h.state().join("no-fallocate")).unwrap();
    h.put("state/swapon-fails-once", "");
    let third = s(&h.path("third.swap"));
    let step = build(
        swap::build_with,
        "worker-1",
        &format!("size = \"1M\"\npath = \"{third}\""),
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    converge(&h, &*step);
    assert!(h.log().contains(&format!(
        "dd if=/dev/zero of={third} bs=1M count=1 status=none"
    )));

    // A file that is not swap is never touched.
    let data = h.put("data.img", "precious");
    let step = build(
        swap::build_with,
        "worker-1",
        &format!("size = \"1M\"\npath = \"{}\"", s(&data)),
        Path::new("."),
        files,
    )
    .unwrap();
    let e = check(&h, &*step).unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "{} exists but is not a swap file (no swap signature)",
            s(&data)
        )
    );
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "precious");
}

#[test]
fn swap_facts_parse_on_this_machine() {
    // The real swapon and /proc: whatever they say must parse.
    let h = Host::new();
    let mut real = Host::new();
    real.env.retain(|(k, _)| k != "PATH");
    real.set_env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let files = swap::Files {
        fstab: "/etc/fstab".into(),
        ..Default::default()
    };
    let step = build(
        swap::build_with,
        "worker-1",
        &format!("size = \"1M\"\npath = \"{}\"", s(&h.path("none"))),
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    let fact = swap::SwapFact {
        path: s(&h.path("none")),
        files,
        swappiness: false,
    };
    let f = fact.parse(&gather(&real, &*step)).unwrap();
    assert_eq!(f.file.kind, provision_playbook::steps::file::Kind::Absent);
    assert!(f.swappiness.is_some());
}

#[test]
fn hostname_and_hosts_converge() {
    let h = Host::new();
    h.put("etc/hosts", &fixture("debian12-hosts"));
    h.put("etc/hostname", "debian\n");
    h.put("state/hostname", "debian\n");
    std::fs::create_dir_all(h.path("etc/cloud/cloud.cfg.d")).unwrap();
    let files = hostname::Files {
        hostname: s(&h.path("etc/hostname")),
        hosts: s(&h.path("etc/hosts")),
        cloud_dir: s(&h.path("etc/cloud/cloud.cfg.d")),
        cloud_cfg: s(&h.path("etc/cloud/cloud.cfg.d/99-provision-hostname.cfg")),
    };
    let step = build(
        hostname::build_with,
        "manager-1",
        "",
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    let summaries = converge(&h, &*step);
    assert_eq!(summaries.len(), 3, "{summaries:?}");
    assert_eq!(h.read("state/hostname"), "manager-1\n");
    assert_eq!(h.read("etc/hostname"), "manager-1\n");
    assert_eq!(
        h.read("etc/hosts"),
        fixture("debian12-hosts").replace("127.0.1.1\tdebian", "127.0.1.1\tmanager-1")
            + "# BEGIN provision\n10.0.0.10\tstorage-1\n10.0.0.11\tmanager-1\n10.0.0.21\tworker-1\n10.0.0.30\tlb-1\n# END provision\n"
    );
    assert_eq!(
        h.read("etc/cloud/cloud.cfg.d/99-provision-hostname.cfg"),
        hostname::CLOUD_CFG
    );
    // Renamed by hand at runtime: only the kernel's name is set back.
    h.put("state/hostname", "other\n");
    assert_eq!(
        converge(&h, &*step),
        vec!["set hostname to manager-1 (was other)"]
    );
}

fn docker_files(h: &Host) -> docker::Files {
    docker::Files {
        os_release: s(&h.path("etc/os-release")),
        apt_proxy: s(&h.path("etc/apt/apt.conf.d/01provision-proxy")),
        keyring: s(&h.path("etc/apt/keyrings/docker.asc")),
        sources: s(&h.path("etc/apt/sources.list.d/docker.sources")),
        legacy_list: s(&h.path("etc/apt/sources.list.d/docker.list")),
        daemon_json: s(&h.path("etc/docker/daemon.json")),
    }
}

#[test]
fn docker_from_the_distribution_converges_and_refuses_bad_settings() {
    let h = Host::new();
    h.put("state/users", "deploy\n");
    let files = docker_files(&h);
    let step = build(
        docker::build_with,
        "worker-1",
        "source = \"distro\"\nusers = [\"deploy\"]",
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    let summaries = converge(&h, &*step);
    assert_eq!(
        summaries,
        vec![
            "install ca-certificates, curl",
            &*format!(
                "write {} (before the engine first starts)",
                files.daemon_json
            ),
            "install apparmor, docker.io",
            "add deploy to the docker group",
            "enable and start docker.service",
        ]
    );
    assert_eq!(
        h.read("etc/docker/daemon.json"),
        "{\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"10m\"\n  }\n}\n"
    );
    assert_eq!(h.read("state/docker-members"), "deploy\n");
    // New settings: validated, moved in place, docker restarted.
    let step = build(
        docker::build_with,
        "worker-1",
        "source = \"distro\"\ndaemon = { mtu = 1450 }",
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    assert_eq!(
        converge(&h, &*step),
        vec![format!("update {} and restart docker", files.daemon_json)]
    );
    assert!(h.read("etc/docker/daemon.json").contains("\"mtu\": 1450"));
    assert!(h.log().contains("systemctl restart docker.service\n"));
    // Settings dockerd rejects: the live file stays, the staged copy goes.
    let before = h.read("etc/docker/daemon.json");
    let step = build(
        docker::build_with,
        "worker-1",
        "source = \"distro\"\ndaemon = { bogus = true }",
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    let e = apply(&h, check(&h, &*step).unwrap()).unwrap_err();
    assert!(e.contains("dockerd rejects the new"), "{e}");
    assert_eq!(h.read("etc/docker/daemon.json"), before);
    assert!(!h.path("etc/docker/daemon.json.provision-new").exists());
}

#[test]
fn docker_from_dockers_repository_converges_with_a_pinned_version() {
    let h = Host::new();
    h.put("etc/os-release", &fixture("ubuntu2404-os-release"));
    h.put("state/key", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBFit2ioBEADhWpZ8/wvZ6hUTiXOwQHXMAlaFHcPH9hAtr4F1y2+OYdbtMuth\n-----END PGP PUBLIC KEY BLOCK-----\n");
    h.put(
        "state/madison",
        " docker-ce | 5:27.4.0-1~ubuntu.24.04~noble | https://download.docker.com/linux/ubuntu noble/stable amd64 Packages\n \
         docker-ce | 5:27.3.1-1~ubuntu.24.04~noble | https://download.docker.com/linux/ubuntu noble/stable amd64 Packages\n \
         docker-ce | 5:27.3.0-1~ubuntu.24.04~noble | https://download.docker.com/linux/ubuntu noble/stable amd64 Packages\n",
    );
    std::fs::create_dir_all(h.path("etc/apt/apt.conf.d")).unwrap();
    // A manual install of old: the one-line sources file.
    h.put("etc/apt/sources.list.d/docker.list", "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/ubuntu noble stable\n");
    let files = docker_files(&h);
    // A proxy with a password: it reaches curl on stdin, never in its command line.
    let with = "version = \"27.3\"\napt_proxy = \"http://apt:proxy-pw-123@10.0.0.2:3142\"";
    let step = build(
        docker::build_with,
        "manager-1",
        with,
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    let (k, d) = (&files.keyring, &files.daemon_json);
    let (list, sources) = (&files.legacy_list, &files.sources);
    assert_eq!(
        converge(&h, &*step),
        vec![
            format!(
                "apt uses the proxy http://***@10.0.0.2:3142 ({})",
                files.apt_proxy
            ),
            "install ca-certificates, curl, apparmor".into(),
            format!(
                "fetch Docker's signing key from https://download.docker.com/linux/ubuntu/gpg into {k}"
            ),
            format!(
                "add Docker's repository (https://download.docker.com/linux/ubuntu noble stable) in {sources}"
            ),
            format!("remove {list} (replaced by {sources})"),
            format!("write {d} (before the engine first starts)"),
            "install containerd.io, docker-buildx-plugin, docker-compose-plugin".into(),
            "install docker-ce and docker-ce-cli 27.3 (was not installed) and hold them".into(),
            "enable and start docker.service".into(),
        ]
    );
    assert_eq!(
        h.read("state/pkgs/docker-ce"),
        "5:27.3.1-1~ubuntu.24.04~noble\n"
    );
    assert_eq!(
        h.read("state/pkgs/docker-ce-cli"),
        "5:27.3.1-1~ubuntu.24.04~noble\n"
    );
    assert!(h.path("state/holds/docker-ce").exists());
    let log = h.log();
    assert!(log.contains("curl -fsSL --retry 3 -K - -o "), "{log}");
    assert!(
        log.contains("curl config: proxy = \"http://apt:proxy-pw-123@10.0.0.2:3142\"\n"),
        "{log}"
    );
    let argv: Vec<&str> = log.lines().filter(|l| l.starts_with("curl -")).collect();
    assert!(!argv.iter().any(|l| l.contains("proxy-pw-123")), "{argv:?}");
    assert!(
        h.log()
            .contains("https://download.docker.com/linux/ubuntu/gpg")
    );
    assert_eq!(
        h.read("etc/apt/sources.list.d/docker.sources"),
        docker::sources_content(
            "https://download.docker.com/linux/ubuntu",
            "noble",
            "amd64",
            &files.keyring
        )
    );
    assert!(!h.path("etc/apt/sources.list.d/docker.list").exists());
    assert_eq!(
        h.read("etc/apt/apt.conf.d/01provision-proxy"),
        docker::proxy_conf("http://apt:proxy-pw-123@10.0.0.2:3142")
    );
    // The password is in that file only, and it is root's alone.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(h.path("etc/apt/apt.conf.d/01provision-proxy"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A version the repository does not have: a clear failure.
    let step = build(
        docker::build_with,
        "manager-1",
        "version = \"26.1\"",
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    let e = apply(&h, check(&h, &*step).unwrap()).unwrap_err();
    assert!(
        e.contains("docker-ce 26.1 is not in Docker's repository for this system"),
        "{e}"
    );
}

#[test]
fn docker_key_fetch_refuses_what_is_not_a_key() {
    let h = Host::new();
    h.put("state/key", "<html>captive portal</html>\n");
    let keyring = s(&h.path("etc/apt/keyrings/docker.asc"));
    let out = h.sh(
        &docker::fetch_key_command(
            "https://download.docker.com/linux/debian/gpg",
            &keyring,
            false,
        ),
        b"",
    );
    assert!(!out.success());
    assert_eq!(
        out.stderr_str(),
        "https://download.docker.com/linux/debian/gpg did not return a PGP public key\n"
    );
    assert!(!h.path("etc/apt/keyrings/docker.asc").exists());
    assert!(!h.path("etc/apt/keyrings/docker.asc.provision-new").exists());
    std::fs::remove_file(h.state().join("key")).unwrap();
    let out = h.sh(
        &docker::fetch_key_command(
            "https://download.docker.com/linux/debian/gpg",
            &keyring,
            false,
        ),
        b"",
    );
    assert!(!out.success() && !h.path("etc/apt/keyrings/docker.asc.provision-new").exists());
}

#[test]
fn nfs_server_converges() {
    let mut h = Host::new();
    h.put("etc/exports", &fixture("debian12-exports"));
    let files = nfs_server::Files {
        exports: s(&h.path("etc/exports")),
        etab: s(&h.path("var/lib/nfs/etab")),
    };
    h.set_env("EXPORTS", &files.exports);
    h.set_env("ETAB", &files.etab);
    std::fs::create_dir_all(h.path("var/lib/nfs")).unwrap();
    let share = s(&h.path("srv/share"));
    let with = format!("exports = [{{ path = \"{share}\", mode = \"0775\" }}]");
    let step = build(
        nfs_server::build_with,
        "storage-1",
        &with,
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    assert_eq!(
        converge(&h, &*step),
        vec![
            "install nfs-kernel-server".to_string(),
            format!("create export directory {share} (mode 0775, owner root:root)"),
            format!("{}: append block at line 11 (1 exports)", files.exports),
            "apply the exports (exportfs -ra)".into(),
            "enable and start nfs-server.service".into(),
        ]
    );
    let opts = "(rw,sync,no_subtree_check,no_root_squash)";
    assert_eq!(
        h.read("etc/exports"),
        format!(
            "{}# BEGIN provision\n{share} 10.0.0.11{opts} 10.0.0.21{opts}\n# END provision\n",
            fixture("debian12-exports")
        )
    );
    assert_eq!(
        h.read("var/lib/nfs/etab"),
        format!("{share}\t10.0.0.11{opts}\n{share}\t10.0.0.21{opts}\n")
    );
    assert_eq!(mode_of(&h.path("srv/share")), 0o775);
    // The kernel forgot the exports (exportfs -ua): applied again, file untouched.
    std::fs::write(h.path("var/lib/nfs/etab"), "").unwrap();
    assert_eq!(
        converge(&h, &*step),
        vec!["apply the exports (exportfs -ra)"]
    );
}

#[test]
fn nfs_mount_converges_and_explains_failures() {
    let mut h = Host::new();
    h.put("etc/fstab", &fixture("debian12-fstab"));
    let files = nfs_mount::Files {
        fstab: s(&h.path("etc/fstab")),
    };
    h.set_env("FSTAB", &files.fstab);
    let mp = s(&h.path("mnt/share"));
    let with = format!("mount_point = \"{mp}\"");
    let step = build(
        nfs_mount::build_with,
        "worker-1",
        &with,
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    let line = format!("10.0.0.10:/srv/share {mp} nfs rw,hard,noatime,nfsvers=4.2,_netdev 0 0");
    assert_eq!(
        converge(&h, &*step),
        vec![
            "install nfs-common".to_string(),
            format!("create mount point {mp}"),
            format!("{}: append line 13 ({line})", files.fstab),
            format!("mount 10.0.0.10:/srv/share on {mp} and check it is writable"),
        ]
    );
    assert!(h.read("etc/fstab").ends_with(&format!("{line}\n")));
    assert_eq!(
        h.read("state/mounts"),
        format!("{mp} 10.0.0.10:/srv/share nfs4 rw,noatime,vers=4.2,hard\n")
    );
    // The probe file was written, read back and removed.
    assert_eq!(std::fs::read_dir(&mp).unwrap().count(), 0);
    // Unmounted, and the server unreachable: the error says where to look.
    std::fs::write(h.state().join("mounts"), "").unwrap();
    h.put("state/mount-fails", "");
    let e = apply(&h, check(&h, &*step).unwrap()).unwrap_err();
    assert!(
        e.ends_with(&format!(
            "cannot mount 10.0.0.10:/srv/share on {mp}: is nfs_server applied on storage-1 and is 10.0.0.10 reachable from this host (TCP 2049)?\n"
        )),
        "{e}"
    );
    // Files in the unmounted directory are not hidden under the share.
    h.put("mnt/share/uploads", "x");
    let e = check(&h, &*step).unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "worker-1: {mp} is not empty (uploads): mounting the share there would hide its files"
        )
    );
}

#[test]
fn nfs_mount_reads_the_real_mount_table() {
    // /proc is mounted on every Linux: the real findmnt, read through the gather's awk.
    let h = Host::new();
    let mut real = Host::new();
    real.env.retain(|(k, _)| k != "PATH");
    real.set_env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    h.put("etc/fstab", "");
    let files = nfs_mount::Files {
        fstab: s(&h.path("etc/fstab")),
    };
    let step = build(
        nfs_mount::build_with,
        "worker-1",
        "mount_point = \"/proc\"",
        Path::new("."),
        files,
    )
    .unwrap();
    let Check::Change(c) = check(&real, &*step).unwrap() else {
        panic!()
    };
    assert!(
        c.iter()
            .any(|c| c.summary == "remount /proc from 10.0.0.10:/srv/share (was proc proc)"),
        "{c:?}"
    );
}

#[test]
fn load_balancer_converges_and_keeps_a_bad_config_out() {
    let h = Host::new();
    // What the package leaves: its directory and default configuration.
    h.put(
        "etc/haproxy/haproxy.cfg",
        "global\n\tlog /dev/log\tlocal0\n\ndefaults\n\tmode\thttp\n",
    );
    let files = load_balancer::Files {
        config: s(&h.path("etc/haproxy/haproxy.cfg")),
    };
    let step = build(
        load_balancer::build_with,
        "lb-1",
        "",
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    assert_eq!(
        converge(&h, &*step),
        vec![
            "install haproxy".to_string(),
            format!("update {} and load it", files.config),
            "enable and start haproxy.service".into(),
        ]
    );
    assert_eq!(h.read("etc/haproxy/haproxy.cfg"), fixture("haproxy.cfg"));
    assert!(
        h.log()
            .contains("systemctl reload-or-restart haproxy.service")
    );
    // A configuration haproxy refuses never replaces the running one.
    h.put("tpl/lb.cfg.j2", "global\n    bogus\n");
    let step = build(
        load_balancer::build_with,
        "lb-1",
        "template = \"lb.cfg.j2\"",
        &h.path("tpl"),
        files.clone(),
    )
    .unwrap();
    let e = apply(&h, check(&h, &*step).unwrap()).unwrap_err();
    assert!(
        e.contains(&format!(
            "haproxy rejects the new {} (see above); the running configuration is unchanged",
            files.config
        )),
        "{e}"
    );
    assert_eq!(h.read("etc/haproxy/haproxy.cfg"), fixture("haproxy.cfg"));
    assert!(!h.path("etc/haproxy/haproxy.cfg.provision-new").exists());
    // Another port: reloaded, not restarted.
    let step = build(
        load_balancer::build_with,
        "lb-1",
        "ports = [80, 443, 8080]",
        Path::new("."),
        files.clone(),
    )
    .unwrap();
    assert_eq!(
        converge(&h, &*step),
        vec![format!("update {} and reload haproxy", files.config)]
    );
    assert!(h.log().contains("systemctl reload haproxy.service\n"));
}

#[test]
fn the_swarm_playbook_compiles_with_these_steps() {
    use provision_engine::inventory::InventoryRules;
    use provision_engine::playbook_file::PlaybookFile;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pb = PlaybookFile::load(
        &root.join("playbooks/swarm.toml"),
        &provision_playbook::known_steps(),
    )
    .unwrap();
    let rules = InventoryRules {
        require_manager: true,
        require_private_ip: true,
    };
    for (name, text) in [
        ("lab", CLUSTER.to_string()),
        (
            "lab, distro docker",
            format!("{CLUSTER}docker_source = \"distro\"\nswap_size = \"512M\"\nswappiness = 5\n"),
        ),
        (
            "minimal",
            std::fs::read_to_string(root.join("inventories/minimal.toml")).unwrap(),
        ),
    ] {
        // The demo stack needs no secrets (the appwrite one does).
        let text = match text.split_once("docker_source") {
            Some((hosts, vars)) => format!("{hosts}[vars]\nstack = \"demo\"\ndocker_source{vars}"),
            None => format!("{text}[vars]\nstack = \"demo\"\n"),
        };
        let inv = Inventory::parse(&text, &root.join("inventories/x.toml"), &rules).unwrap();
        let secrets = toml::Table::new();
        let none = |_: &str| false;
        let view = provision_playbook::compile::SecretsView {
            table: &secrets,
            contains_secret: &none,
        };
        if let Err(e) = provision_playbook::compile(&inv, &pb, &view) {
            panic!("{name}: {:#?}", e.diagnostics);
        }
    }
}

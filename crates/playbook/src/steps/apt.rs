//! `apt`: Debian packages installed (optionally at a version, or the latest),
//! or removed. The package lists are refreshed only when something must be
//! installed and they are stale, older than the sources, or lack a package; and
//! at most once per host and run, unless the sources changed since (the run's
//! memory: [`LISTS_UPDATED`]).

use super::util::{self, List};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::join;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const KNOWN_KEYS: &[&str] = &[
    "packages",
    "state",
    "update_cache",
    "cache_valid_time",
    "install_recommends",
    "purge",
];

/// Wait this long for another apt or dpkg (cloud-init, unattended-upgrades on
/// a fresh host) to release its lock before failing.
pub const LOCK_TIMEOUT_SECS: u32 = 300;

/// Written after a successful `apt-get update` (the name Ubuntu's
/// update-notifier uses for the same meaning): apt itself leaves no trace
/// when nothing changed upstream.
pub const UPDATE_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";

/// The run's mark ([`Change::marks`]) of a host whose package lists a change refreshed: a
/// later package step there in the same run does not refresh them again, however short its
/// `cache_valid_time`, unless the sources changed since.
pub const LISTS_UPDATED: &str = "apt-lists-updated";

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
    Latest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// None: the step only refreshes the package lists (Ansible's apt task with `update_cache`
    /// alone).
    packages: Option<List>,
    state: Option<State>,
    update_cache: Option<bool>,
    /// Seconds; checked by [`cache_valid_time`] for a message that says what to write.
    cache_valid_time: Option<toml::Value>,
    #[serde(default)]
    install_recommends: bool,
    #[serde(default)]
    purge: bool,
}

/// Package lists younger than this many seconds are used as they are (Ansible's
/// `cache_valid_time`, whose default, 0, would refresh them at every step).
pub const DEFAULT_CACHE_VALID_TIME: u64 = 3600;

/// `cache_valid_time`: a whole number of seconds, 0 or more.
fn cache_valid_time(v: Option<toml::Value>) -> Result<u64, ParamError> {
    match v {
        None => Ok(DEFAULT_CACHE_VALID_TIME),
        Some(toml::Value::Integer(n)) if n >= 0 => Ok(n as u64),
        Some(other) => Err(util::bad(
            "cache_valid_time",
            format!(
                "`cache_valid_time` is {other}: it must be a whole number of seconds, 0 or more"
            ),
            "e.g. cache_valid_time = 86400 (lists refreshed in the last day are used as they are); 0 refreshes them once per run",
        )),
    }
}

/// A package as written: `name`, `name:arch`, `name=version`, `name:arch=version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub arch: Option<String>,
    pub version: Option<String>,
}

impl Package {
    /// The name dpkg-query and apt-cache are asked about (no version).
    pub fn query(&self) -> String {
        match &self.arch {
            Some(a) => format!("{}:{a}", self.name),
            None => self.name.clone(),
        }
    }

    /// The argument of apt-get install.
    pub fn spec(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={v}", self.query()),
            None => self.query(),
        }
    }
}

/// Parses a package per Debian policy: name `[a-z0-9][a-z0-9+.-]+`, arch
/// `[a-z0-9-]+`, version `[A-Za-z0-9.+~:-]+` starting with a digit.
pub fn parse_package(s: &str) -> Option<Package> {
    let (rest, version) = match s.split_once('=') {
        Some((r, v)) => (r, Some(v)),
        None => (s, None),
    };
    let (name, arch) = match rest.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (rest, None),
    };
    let nb = name.as_bytes();
    let name_ok = nb.len() >= 2
        && (nb[0].is_ascii_lowercase() || nb[0].is_ascii_digit())
        && nb.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'-')
        });
    let arch_ok = arch.is_none_or(|a| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    let version_ok = version.is_none_or(|v| {
        v.starts_with(|c: char| c.is_ascii_digit())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b':' | b'-'))
    });
    (name_ok && arch_ok && version_ok).then(|| Package {
        name: name.into(),
        arch: arch.map(Into::into),
        version: version.map(Into::into),
    })
}

pub struct Apt {
    packages: Vec<Package>,
    state: State,
    update_cache: bool,
    cache_valid_time: u64,
    install_recommends: bool,
    purge: bool,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let cache_valid_time = cache_valid_time(p.cache_valid_time)?;
    let Some(listed) = p.packages else {
        return refresh_only(p.state, p.update_cache, p.purge, cache_valid_time);
    };
    let state = p.state.unwrap_or_default();
    if listed.0.is_empty() {
        return Err(util::bad(
            "packages",
            "`packages` is empty",
            "list at least one package, e.g. packages = [\"nginx\"]",
        ));
    }
    let mut packages = Vec::new();
    for s in &listed.0 {
        let pkg = parse_package(s).ok_or_else(|| {
            util::bad(
                "packages",
                format!("\"{s}\" is not a valid Debian package name"),
                "names are lower-case letters, digits and + . - (at least 2), optionally with :arch and =version, e.g. \"nginx\", \"libc6:i386\", \"docker-ce=5:27.3.1-1~debian.12~bookworm\"",
            )
        })?;
        match (state, &pkg.version) {
            (State::Absent, Some(_)) => {
                return Err(util::bad(
                    "packages",
                    format!("\"{s}\": a version means nothing with state = \"absent\""),
                    format!("write \"{}\"", pkg.query()),
                ));
            }
            (State::Latest, Some(_)) => {
                return Err(util::bad(
                    "packages",
                    format!("\"{s}\": a pinned version contradicts state = \"latest\""),
                    "use state = \"present\" to pin, or drop the version",
                ));
            }
            _ => {}
        }
        if !packages.contains(&pkg) {
            packages.push(pkg);
        }
    }
    util::require(
        !p.purge || state == State::Absent,
        "purge",
        "`purge` applies only with state = \"absent\"",
        "remove it, or set state = \"absent\"",
    )?;
    Ok(Box::new(Typed(Apt {
        packages,
        state,
        update_cache: p.update_cache.unwrap_or(true),
        cache_valid_time,
        install_recommends: p.install_recommends,
        purge: p.purge,
    })))
}

/// A step without `packages`: it refreshes the package lists when they are older than
/// `cache_valid_time` (or the sources), at most once per host and run.
fn refresh_only(
    state: Option<State>,
    update_cache: Option<bool>,
    purge: bool,
    cache_valid_time: u64,
) -> Result<Box<dyn HostStep>, ParamError> {
    if let Some(s) = state.filter(|s| *s != State::Present) {
        return Err(util::bad(
            "packages",
            format!(
                "`packages` is missing: state = \"{}\" needs the packages it applies to",
                if s == State::Absent {
                    "absent"
                } else {
                    "latest"
                }
            ),
            "list them, e.g. packages = [\"nginx\"]",
        ));
    }
    util::require(
        update_cache != Some(false),
        "update_cache",
        "without `packages` the step only refreshes the package lists, and update_cache = false forbids that",
        "list the packages to install, or remove update_cache = false",
    )?;
    util::require(
        !purge,
        "purge",
        "`purge` applies only with state = \"absent\" and `packages`",
        "remove it, or list the packages to purge with state = \"absent\"",
    )?;
    Ok(Box::new(Typed(Apt {
        packages: Vec::new(),
        state: State::Present,
        update_cache: true,
        cache_valid_time,
        install_recommends: false,
        purge: false,
    })))
}

inventory::submit! { crate::ctx::BuiltIn::host("apt", build) }

/// `pkg=STATUS NAME ARCH VERSION` per known package (status first: it is always
/// three characters, and arch and version are empty for packages dpkg only
/// remembers). When installing, also `candidate=NAME VERSION` from apt-cache,
/// the time, the last update of the lists, the newest change of the sources,
/// and how many package lists there are.
pub fn gather_command(queries: &[String], installing: bool) -> String {
    let names = join(queries);
    let mut s = format!(
        "dpkg-query -W -f='pkg=${{db:Status-Abbrev}} ${{Package}} ${{Architecture}} ${{Version}}\\n' {names} 2>/dev/null"
    );
    if installing {
        s.push_str(&format!(
            "; LC_ALL=C apt-cache policy {names} 2>/dev/null | awk '/^[^ ].*:$/ {{ p = substr($0, 1, length($0) - 1) }} /^  Candidate:/ {{ print \"candidate=\" p \" \" $2 }}'; {}",
            lists_command()
        ));
    }
    s
}

/// The age of the package lists: the time, the last update (the lists directory, renamed into
/// when an update brings new lists, or our update's stamp: apt leaves no trace of an update
/// that found nothing new), the newest change of the sources, and how many lists there are.
pub fn lists_command() -> String {
    format!(
        "echo \"now=$(date +%s)\"; \
         echo \"updated=$(stat -c %Y /var/lib/apt/lists {UPDATE_STAMP} 2>/dev/null | sort -n | tail -n 1)\"; \
         echo \"sources=$(stat -c %Y /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/sources.list.d/* 2>/dev/null | sort -n | tail -n 1)\"; \
         echo \"lists=$(ls /var/lib/apt/lists 2>/dev/null | grep -c _Packages)\""
    )
}

/// Like [`gather_command`] for installing, but the package lists are only
/// consulted (apt-cache policy: the costly part, ~0.3 s of CPU per host) when
/// dpkg says some package is not installed: a converged host answers from dpkg
/// alone. Only for `present` without pinned versions, which needs no candidate
/// when everything is installed.
pub fn gather_present(queries: &[String]) -> String {
    let mut names: Vec<&str> = queries
        .iter()
        .map(|q| q.split(':').next().unwrap_or(q))
        .collect();
    names.sort_unstable();
    names.dedup();
    let full = gather_command(queries, true);
    let (dpkg, rest) = full
        .split_once("; ")
        .expect("gather_command has a dpkg part and a lists part");
    format!(
        "d=$({dpkg}); [ -z \"$d\" ] || printf '%s\\n' \"$d\"; \
         if [ \"$(printf '%s\\n' \"$d\" | awk '$1 ~ /^pkg=.i/ {{ print $2 }}' | sort -u | wc -l)\" -lt {} ]; then {rest}; fi",
        names.len()
    )
}

/// One line of dpkg-query output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dpkg {
    pub status: String,
    pub name: String,
    pub arch: String,
    pub version: String,
}

impl Dpkg {
    /// dpkg's status letter (second of three) is `i`: installed and configured
    /// (held packages, `hi`, included).
    pub fn installed(&self) -> bool {
        self.status.as_bytes().get(1) == Some(&b'i')
            && self.status.as_bytes().get(2).is_none_or(|&b| b == b' ')
    }

    /// Anything left on the system: installed, half-installed, or config files.
    pub fn present(&self, with_config: bool) -> bool {
        match self.status.as_bytes().get(1) {
            Some(b'n') | None => false,
            Some(b'c') => with_config,
            Some(_) => true,
        }
    }
}

/// What the gather command printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AptFacts {
    pub dpkg: Vec<Dpkg>,
    /// Query name to candidate version (None: `(none)`).
    pub candidates: BTreeMap<String, Option<String>>,
    pub now: Option<u64>,
    pub updated: Option<u64>,
    pub sources: Option<u64>,
    pub lists: Option<u64>,
    /// The lists were refreshed earlier in this run (the run's [`LISTS_UPDATED`] mark).
    pub updated_this_run: bool,
}

pub fn parse(stdout: &str) -> Result<AptFacts, StepError> {
    let mut f = AptFacts::default();
    let num = |v: &str| v.trim().parse::<u64>().ok();
    for line in stdout.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "pkg" => {
                let (status, rest) = (
                    v.get(..3)
                        .ok_or_else(|| util::bad_facts("dpkg-query", stdout))?,
                    v.get(3..).unwrap_or(""),
                );
                let mut w = rest.split_whitespace();
                let name = w
                    .next()
                    .ok_or_else(|| util::bad_facts("dpkg-query", stdout))?;
                f.dpkg.push(Dpkg {
                    status: status.into(),
                    name: name.into(),
                    arch: w.next().unwrap_or("").into(),
                    version: w.next().unwrap_or("").into(),
                });
            }
            "candidate" => {
                let (name, version) = v.split_once(' ').unwrap_or((v, ""));
                let version =
                    (!version.is_empty() && version != "(none)").then(|| version.to_string());
                f.candidates.insert(name.to_string(), version);
            }
            "now" => f.now = num(v),
            "updated" => f.updated = num(v),
            "sources" => f.sources = num(v),
            "lists" => f.lists = num(v),
            _ => {}
        }
    }
    Ok(f)
}

/// The fact an apt step needs: what dpkg knows of the packages and, when installing, the package
/// lists' candidates and age ([`AptFacts`]).
pub struct PackageFact {
    pub queries: Vec<String>,
    pub lists: Lists,
}

/// When the package lists are consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lists {
    /// Removing: dpkg alone knows.
    Never,
    /// Only when dpkg says a package is missing ([`gather_present`]).
    WhenMissing,
    Always,
}

impl Fact for PackageFact {
    type Value = AptFacts;

    fn command(&self) -> String {
        if self.queries.is_empty() {
            return lists_command();
        }
        match self.lists {
            Lists::Never => gather_command(&self.queries, false),
            Lists::WhenMissing => gather_present(&self.queries),
            Lists::Always => gather_command(&self.queries, true),
        }
    }

    fn parse(&self, facts: &Facts) -> Result<AptFacts, StepError> {
        parse_with_marks(facts)
    }
}

/// [`parse`], and whether this run refreshed the lists already ([`Facts::marks`]).
pub fn parse_with_marks(facts: &Facts) -> Result<AptFacts, StepError> {
    Ok(AptFacts {
        updated_this_run: facts.marks.contains(LISTS_UPDATED),
        ..parse(&facts.stdout)?
    })
}

/// The change that refreshes the package lists, when one of `changes` does: marked so the
/// rest of the run knows ([`LISTS_UPDATED`]).
pub fn mark_updates(changes: Vec<Change>) -> Vec<Change> {
    let update = Action::run(update_command());
    changes
        .into_iter()
        .map(|c| {
            if c.actions.contains(&update) && !c.marks.iter().any(|m| m == LISTS_UPDATED) {
                c.marking(LISTS_UPDATED)
            } else {
                c
            }
        })
        .collect()
}

/// `apt-get install`: unattended, keeping locally changed config files, waiting
/// for the dpkg lock.
pub fn install_command(
    specs: &[String],
    install_recommends: bool,
    allow_downgrades: bool,
) -> String {
    let mut s = String::from("DEBIAN_FRONTEND=noninteractive apt-get install -y -q");
    if !install_recommends {
        s.push_str(" --no-install-recommends");
    }
    if allow_downgrades {
        s.push_str(" --allow-downgrades");
    }
    s.push_str(&format!(" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout={LOCK_TIMEOUT_SECS} {}", join(specs)));
    s
}

pub fn remove_command(queries: &[String], purge: bool) -> String {
    let verb = if purge { "purge" } else { "remove" };
    format!(
        "DEBIAN_FRONTEND=noninteractive apt-get {verb} -y -q -o DPkg::Lock::Timeout={LOCK_TIMEOUT_SECS} {}",
        join(queries)
    )
}

/// `apt-get update`, retried while another process holds the lists lock
/// (DPkg::Lock::Timeout covers dpkg's lock, not that one), then the stamp.
pub fn update_command() -> String {
    update_command_with(UPDATE_STAMP, 5)
}

fn update_command_with(stamp: &str, pause_secs: u32) -> String {
    let tries = LOCK_TIMEOUT_SECS / pause_secs.max(1);
    let stamp_dir = stamp.rsplit_once('/').map_or("/", |(d, _)| d);
    format!(
        "n=0; until out=$(LC_ALL=C apt-get update -q -o DPkg::Lock::Timeout={LOCK_TIMEOUT_SECS} 2>&1); do \
         case $out in *'Could not get lock'*) [ \"$n\" -lt {tries} ] || {{ printf '%s\\n' \"$out\" >&2; exit 100; }}; n=$((n + 1)); sleep {pause_secs};; \
         *) printf '%s\\n' \"$out\" >&2; exit 100;; esac; done; printf '%s\\n' \"$out\"; mkdir -p {} && touch {}",
        join([stamp_dir]),
        join([stamp])
    )
}

impl Apt {
    fn queries(&self) -> Vec<String> {
        self.packages.iter().map(Package::query).collect()
    }

    fn entries<'a>(&self, f: &'a AptFacts, p: &Package) -> Vec<&'a Dpkg> {
        f.dpkg
            .iter()
            .filter(|d| {
                d.name == p.name
                    && p.arch
                        .as_deref()
                        .is_none_or(|a| d.arch == a || d.arch == "all")
            })
            .collect()
    }

    fn installed_version<'a>(&self, f: &'a AptFacts, p: &Package) -> Option<&'a str> {
        self.entries(f, p)
            .into_iter()
            .find(|d| d.installed())
            .map(|d| d.version.as_str())
    }

    fn candidate<'a>(&self, f: &'a AptFacts, p: &Package) -> Option<&'a str> {
        f.candidates
            .get(&p.query())
            .or_else(|| f.candidates.get(&p.name))
            .and_then(|c| c.as_deref())
    }

    /// Why the package lists must be refreshed before installing, if they must.
    fn stale_reason(
        &self,
        f: &AptFacts,
        missing: &[&Package],
    ) -> Result<Option<String>, StepError> {
        if !self.update_cache {
            return Ok(None);
        }
        let now = f
            .now
            .ok_or_else(|| StepError::new("the apt facts lack the time (`date +%s`)"))?;
        if f.lists.unwrap_or(0) == 0 && !f.updated_this_run {
            return Ok(Some("no package lists yet".into()));
        }
        let updated = f.updated.unwrap_or(0);
        if f.sources.is_some_and(|s| s > updated) {
            return Ok(Some("sources changed since the last update".into()));
        }
        // Refreshed in this run: again would fetch the same lists (a package they lack is
        // apt-get install's error to report, naming it).
        if f.updated_this_run {
            return Ok(None);
        }
        let age = now.saturating_sub(updated);
        if age > self.cache_valid_time {
            return Ok(Some(format!("package lists are {} old", human(age))));
        }
        if let Some(p) = missing.iter().find(|p| self.candidate(f, p).is_none()) {
            return Ok(Some(format!("{} is not in the package lists", p.name)));
        }
        Ok(None)
    }

    /// Without packages: refresh the lists if they are stale.
    fn refresh(&self, f: &AptFacts) -> Result<Check, StepError> {
        Ok(match self.stale_reason(f, &[])? {
            Some(reason) => Check::Change(mark_updates(vec![Change::new(
                format!("apt-get update: {reason}"),
                vec![Action::run(update_command())],
            )])),
            None if f.updated_this_run => Check::Ok("package lists refreshed in this run".into()),
            None => Check::Ok(format!(
                "package lists are {} old",
                human(f.now.unwrap_or(0).saturating_sub(f.updated.unwrap_or(0)))
            )),
        })
    }

    fn install(
        &self,
        f: &AptFacts,
        wanted: Vec<&Package>,
        done: String,
    ) -> Result<Check, StepError> {
        let latest = self.state == State::Latest;
        // Nothing missing: the package lists were not even read (gather_present).
        if !latest && wanted.is_empty() {
            return Ok(Check::Ok(done));
        }
        let stale = self.stale_reason(f, &wanted)?;
        // With stale lists a newer version may exist: refresh and let apt decide.
        let wanted: Vec<&Package> = if latest && stale.is_some() {
            self.packages.iter().collect()
        } else {
            wanted
        };
        if wanted.is_empty() {
            return Ok(Check::Ok(done));
        }
        let specs: Vec<String> = wanted.iter().map(|p| p.spec()).collect();
        let verb = if latest {
            "install or upgrade"
        } else {
            "install"
        };
        let mut summary = format!("{verb} {}", specs.join(", "));
        let mut actions = Vec::new();
        if let Some(reason) = stale {
            summary.push_str(&format!(" (after apt-get update: {reason})"));
            actions.push(Action::run(update_command()));
        }
        let downgrades = wanted.iter().any(|p| p.version.is_some());
        actions.push(Action::run(install_command(
            &specs,
            self.install_recommends,
            downgrades,
        )));
        Ok(Check::Change(mark_updates(vec![Change::new(
            summary, actions,
        )])))
    }
}

impl Decide for Apt {
    type Fact = PackageFact;

    fn fact(&self) -> PackageFact {
        let pinned = self.packages.iter().any(|p| p.version.is_some());
        PackageFact {
            queries: self.queries(),
            lists: match self.state {
                State::Present if !pinned => Lists::WhenMissing,
                State::Absent => Lists::Never,
                _ => Lists::Always,
            },
        }
    }

    fn decide(&self, f: AptFacts) -> Result<Check, StepError> {
        if self.packages.is_empty() {
            return self.refresh(&f);
        }
        let names = || self.queries().join(", ");
        match self.state {
            State::Present => {
                let wanted: Vec<&Package> = self
                    .packages
                    .iter()
                    .filter(|p| match (self.installed_version(&f, p), &p.version) {
                        (None, _) => true,
                        (Some(have), Some(want)) => have != want,
                        (Some(_), None) => false,
                    })
                    .collect();
                self.install(&f, wanted, format!("{} installed", names()))
            }
            State::Latest => {
                let wanted: Vec<&Package> = self
                    .packages
                    .iter()
                    .filter(
                        |p| match (self.installed_version(&f, p), self.candidate(&f, p)) {
                            (None, _) => true,
                            (Some(have), Some(c)) => have != c,
                            (Some(_), None) => false,
                        },
                    )
                    .collect();
                self.install(&f, wanted, format!("{} at the latest version", names()))
            }
            State::Absent => {
                let gone: Vec<String> = self
                    .packages
                    .iter()
                    .filter(|p| self.entries(&f, p).iter().any(|d| d.present(self.purge)))
                    .map(Package::query)
                    .collect();
                if gone.is_empty() {
                    return Ok(Check::Ok(format!(
                        "{} {}",
                        names(),
                        if self.purge {
                            "purged"
                        } else {
                            "not installed"
                        }
                    )));
                }
                let verb = if self.purge { "purge" } else { "remove" };
                Ok(Check::Change(vec![Change::new(
                    format!("{verb} {}", gone.join(", ")),
                    vec![Action::run(remove_command(&gone, self.purge))],
                )]))
            }
        }
    }
}

/// "3h", "2d", "45min", for ages of the package lists.
fn human(secs: u64) -> String {
    match secs {
        s if s >= 2 * 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s => format!("{}min", s.div_ceil(60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_with, build_err};

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=300";

    /// Captured on Debian 12 (the gather command with curl installed, nginx not),
    /// lists refreshed 10 minutes before.
    const FRESH_LISTS: &str = "pkg=ii  curl amd64 7.88.1-10+deb12u12\n\
        candidate=curl 7.88.1-10+deb12u12\n\
        candidate=nginx 1.22.1-9+deb12u11\n\
        now=1795768133\nupdated=1795767533\nsources=1700000000\nlists=4\n";

    /// Run by this machine's own sh and dpkg (Debian): a converged package list
    /// never reaches apt-cache; a missing package does.
    #[test]
    fn present_gather_skips_the_package_lists_when_all_is_installed() {
        let run = |q: &[&str]| {
            let q: Vec<String> = q.iter().map(|s| s.to_string()).collect();
            let out = std::process::Command::new("sh")
                .args(["-c", &gather_present(&q)])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let converged = run(&["coreutils", "dpkg"]);
        assert!(converged.contains(" coreutils "), "{converged}");
        assert!(!converged.contains("now="), "{converged}");
        let missing = run(&["coreutils", "provision-no-such-package"]);
        assert!(missing.contains("now="), "{missing}");
        assert!(missing.contains("lists="), "{missing}");
        let f = parse(&converged).unwrap();
        assert!(
            f.dpkg
                .iter()
                .any(|d| d.name == "coreutils" && d.installed())
        );
        assert_eq!(
            gather_present(&["a".into(), "a:i386".into()]),
            "d=$(dpkg-query -W -f='pkg=${db:Status-Abbrev} ${Package} ${Architecture} ${Version}\\n' a a:i386 2>/dev/null); [ -z \"$d\" ] || printf '%s\\n' \"$d\"; if [ \"$(printf '%s\\n' \"$d\" | awk '$1 ~ /^pkg=.i/ { print $2 }' | sort -u | wc -l)\" -lt 1 ]; then LC_ALL=C apt-cache policy a a:i386 2>/dev/null | awk '/^[^ ].*:$/ { p = substr($0, 1, length($0) - 1) } /^  Candidate:/ { print \"candidate=\" p \" \" $2 }'; echo \"now=$(date +%s)\"; echo \"updated=$(stat -c %Y /var/lib/apt/lists /var/lib/apt/periodic/update-success-stamp 2>/dev/null | sort -n | tail -n 1)\"; echo \"sources=$(stat -c %Y /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/sources.list.d/* 2>/dev/null | sort -n | tail -n 1)\"; echo \"lists=$(ls /var/lib/apt/lists 2>/dev/null | grep -c _Packages)\"; fi"
        );
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            gather_command(&["nginx".into(), "libc6:i386".into()], true),
            "dpkg-query -W -f='pkg=${db:Status-Abbrev} ${Package} ${Architecture} ${Version}\\n' nginx libc6:i386 2>/dev/null; \
             LC_ALL=C apt-cache policy nginx libc6:i386 2>/dev/null | awk '/^[^ ].*:$/ { p = substr($0, 1, length($0) - 1) } /^  Candidate:/ { print \"candidate=\" p \" \" $2 }'; \
             echo \"now=$(date +%s)\"; \
             echo \"updated=$(stat -c %Y /var/lib/apt/lists /var/lib/apt/periodic/update-success-stamp 2>/dev/null | sort -n | tail -n 1)\"; \
             echo \"sources=$(stat -c %Y /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/sources.list.d/* 2>/dev/null | sort -n | tail -n 1)\"; \
             echo \"lists=$(ls /var/lib/apt/lists 2>/dev/null | grep -c _Packages)\""
        );
        assert_eq!(
            gather_command(&["nginx".into()], false),
            "dpkg-query -W -f='pkg=${db:Status-Abbrev} ${Package} ${Architecture} ${Version}\\n' nginx 2>/dev/null"
        );
        assert_eq!(
            install_command(&["nginx".into(), "curl".into()], false, false),
            format!("{INSTALL} nginx curl")
        );
        assert_eq!(
            install_command(
                &["docker-ce=5:27.3.1-1~debian.12~bookworm".into()],
                true,
                true
            ),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=300 'docker-ce=5:27.3.1-1~debian.12~bookworm'"
        );
        assert_eq!(
            remove_command(&["nginx".into()], false),
            "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -o DPkg::Lock::Timeout=300 nginx"
        );
        assert_eq!(
            remove_command(&["nginx".into()], true),
            "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q -o DPkg::Lock::Timeout=300 nginx"
        );
        assert_eq!(
            update_command(),
            "n=0; until out=$(LC_ALL=C apt-get update -q -o DPkg::Lock::Timeout=300 2>&1); do \
             case $out in *'Could not get lock'*) [ \"$n\" -lt 60 ] || { printf '%s\\n' \"$out\" >&2; exit 100; }; n=$((n + 1)); sleep 5;; \
             *) printf '%s\\n' \"$out\" >&2; exit 100;; esac; done; printf '%s\\n' \"$out\"; \
             mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp"
        );
    }

    /// The update script in a real sh, with a fake apt-get that is locked out once.
    #[test]
    fn update_command_retries_only_on_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fake = bin.join("apt-get");
        let count = dir.path().join("count");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho x >> {c}\nif [ \"$(wc -l < {c})\" -eq 1 ]; then echo 'E: Could not get lock /var/lib/apt/lists/lock. It is held by process 9 (apt-get)' >&2; exit 100; fi\n\
                 if [ -e {dir}/broken ]; then echo 'E: The repository is not signed.' >&2; exit 100; fi\necho 'Reading package lists...'\n",
                c = count.display(),
                dir = dir.path().display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stamp = dir.path().join("periodic/stamp");
        let run = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(update_command_with(stamp.to_str().unwrap(), 0))
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap()
        };
        let out = run();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Reading package lists...\n"
        );
        assert!(stamp.exists());
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
        // Any other failure fails at once, with apt's message, and leaves no stamp.
        std::fs::remove_file(&stamp).unwrap();
        std::fs::write(dir.path().join("broken"), "").unwrap();
        let out = run();
        assert_eq!(out.status.code(), Some(100));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "E: The repository is not signed.\n"
        );
        assert!(!stamp.exists());
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
    }

    #[test]
    fn parses_captured_output() {
        let f = parse("pkg=ii  coreutils amd64 9.1-1\npkg=hi  libc6 amd64 2.36-9+deb12u14\npkg=un  nginx  \npkg=rc  apache2 amd64 2.4.62-1~deb12u2\ncandidate=nosuch (none)\nnow=5\nlists=0\n").unwrap();
        assert!(f.dpkg[0].installed() && f.dpkg[1].installed());
        assert!(!f.dpkg[2].installed() && !f.dpkg[2].present(true));
        assert_eq!(
            f.dpkg[2],
            Dpkg {
                status: "un ".into(),
                name: "nginx".into(),
                arch: "".into(),
                version: "".into()
            }
        );
        assert!(!f.dpkg[3].installed() && !f.dpkg[3].present(false) && f.dpkg[3].present(true));
        assert_eq!(f.candidates.get("nosuch"), Some(&None));
        assert_eq!((f.now, f.updated, f.lists), (Some(5), None, Some(0)));
        assert!(
            !Dpkg {
                status: "iHR".into(),
                name: "x".into(),
                arch: "".into(),
                version: "".into()
            }
            .installed()
        );
    }

    #[test]
    fn fresh_host_installs_without_update_when_lists_are_fresh() {
        let s = step("packages = [\"nginx\", \"curl\"]");
        assert_eq!(
            s.check(&Facts::new(FRESH_LISTS)).unwrap(),
            Check::Change(vec![Change::new(
                "install nginx",
                vec![Action::run(format!("{INSTALL} nginx"))]
            )])
        );
    }

    #[test]
    fn stale_lists_are_updated_first() {
        let s = step("packages = [\"nginx\"]");
        let old = FRESH_LISTS.replace("now=1795768133", "now=1795789133");
        assert_eq!(
            s.check(&Facts::new(old)).unwrap(),
            refresh_then_install_nginx("6h")
        );
        // A new source (the Docker repository) since the last update.
        let Check::Change(c) = s
            .check(&Facts::new(
                FRESH_LISTS.replace("sources=1700000000", "sources=1795767600"),
            ))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install nginx (after apt-get update: sources changed since the last update)"
        );
        // A fresh cloud image with no lists at all.
        let Check::Change(c) = s
            .check(&Facts::new(FRESH_LISTS.replace("lists=4", "lists=0")))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install nginx (after apt-get update: no package lists yet)"
        );
        // Fresh lists that do not know the package.
        let s = step("packages = \"docker-ce\"");
        let Check::Change(c) = s.check(&Facts::new(FRESH_LISTS)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install docker-ce (after apt-get update: docker-ce is not in the package lists)"
        );
        // update_cache = false: never.
        let s = step("packages = [\"nginx\"]\nupdate_cache = false");
        let Check::Change(c) = s
            .check(&Facts::new(FRESH_LISTS.replace("lists=4", "lists=0")))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(c[0].summary, "install nginx");
    }

    #[test]
    fn already_installed_needs_no_update() {
        let s = step("packages = [\"curl\"]\ncache_valid_time = 0");
        assert_eq!(
            s.check(&Facts::new(FRESH_LISTS)).unwrap(),
            Check::Ok("curl installed".into())
        );
    }

    #[test]
    fn pinned_version_drift() {
        let s = step("packages = [\"curl=7.88.1-10+deb12u5\"]");
        let Check::Change(c) = s.check(&Facts::new(FRESH_LISTS)).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "install curl=7.88.1-10+deb12u5");
        assert!(c[0].actions[0].describe().contains("--allow-downgrades"));
        let s = step("packages = [\"curl=7.88.1-10+deb12u12\"]");
        assert!(matches!(
            s.check(&Facts::new(FRESH_LISTS)).unwrap(),
            Check::Ok(_)
        ));
    }

    #[test]
    fn latest() {
        let s = step("packages = [\"curl\"]\nstate = \"latest\"");
        assert_eq!(
            s.check(&Facts::new(FRESH_LISTS)).unwrap(),
            Check::Ok("curl at the latest version".into())
        );
        let newer = FRESH_LISTS.replace(
            "candidate=curl 7.88.1-10+deb12u12",
            "candidate=curl 7.88.1-10+deb12u13",
        );
        let Check::Change(c) = s.check(&Facts::new(newer)).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "install or upgrade curl");
        let stale = FRESH_LISTS.replace("now=1795768133", "now=1795789133");
        let Check::Change(c) = s.check(&Facts::new(stale)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install or upgrade curl (after apt-get update: package lists are 6h old)"
        );
    }

    #[test]
    fn absent() {
        let s = step("packages = [\"apache2\", \"nginx\"]\nstate = \"absent\"");
        assert_eq!(
            s.gather().unwrap(),
            gather_command(&["apache2".into(), "nginx".into()], false)
        );
        assert_eq!(
            s.check(&Facts::new("pkg=rc  apache2 amd64 2.4.62-1~deb12u2\n"))
                .unwrap(),
            Check::Ok("apache2, nginx not installed".into())
        );
        assert_eq!(
            s.check(&Facts::new("pkg=ii  apache2 amd64 2.4.62-1~deb12u2\n"))
                .unwrap(),
            Check::Change(vec![Change::new(
                "remove apache2",
                vec![Action::run(remove_command(&["apache2".into()], false))]
            )])
        );
        let s = step("packages = [\"apache2\"]\nstate = \"absent\"\npurge = true");
        let Check::Change(c) = s
            .check(&Facts::new("pkg=rc  apache2 amd64 2.4.62-1~deb12u2\n"))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(c[0].summary, "purge apache2");
    }

    #[test]
    fn package_names() {
        assert_eq!(
            parse_package("libc6:i386"),
            Some(Package {
                name: "libc6".into(),
                arch: Some("i386".into()),
                version: None
            })
        );
        assert_eq!(
            parse_package("docker-ce=5:27.3.1-1~debian.12~bookworm")
                .unwrap()
                .version
                .as_deref(),
            Some("5:27.3.1-1~debian.12~bookworm")
        );
        assert_eq!(
            parse_package("g++:amd64=4:12.2.0-3").unwrap().spec(),
            "g++:amd64=4:12.2.0-3"
        );
        for bad in [
            "Nginx",
            "x",
            "-rf",
            "nginx;reboot",
            "nginx=",
            "nginx:",
            "a b",
            "nginx=abc",
            "../x",
        ] {
            assert_eq!(parse_package(bad), None, "{bad}");
        }
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with(build, "packages = [\"Nginx\"]"));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (
                Some("packages"),
                "\"Nginx\" is not a valid Debian package name"
            )
        );
        assert!(e.help.is_some());
        let e = build_err(build_with(build, "packages = []"));
        assert_eq!(e.message, "`packages` is empty");
        let e = build_err(build_with(build, "package = [\"nginx\"]"));
        assert!(e.help.unwrap().starts_with("did you mean `packages`?"));
        let e = build_err(build_with(
            build,
            "packages = [\"nginx\"]\nstate = \"installed\"",
        ));
        assert_eq!(
            e.message,
            "`state`: unknown variant `installed`, expected one of `present`, `absent`, `latest`"
        );
        let e = build_err(build_with(build, "packages = 3"));
        assert_eq!(
            e.message,
            "`packages`: invalid type: integer `3`, expected a string or a list of strings"
        );
        let e = build_err(build_with(
            build,
            "packages = [\"nginx=1.0\"]\nstate = \"absent\"",
        ));
        assert_eq!(e.help.as_deref(), Some("write \"nginx\""));
        let e = build_err(build_with(
            build,
            "packages = [\"nginx\"]\ncache_valid_time = \"1h\"",
        ));
        assert_eq!(e.key.as_deref(), Some("cache_valid_time"));
        let e = build_err(build_with(
            build,
            "packages = [\"nginx\"]\ncache_valid_time = \"soon\"",
        ));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str(), e.help.as_deref()),
            (
                Some("cache_valid_time"),
                "`cache_valid_time` is \"soon\": it must be a whole number of seconds, 0 or more",
                Some(
                    "e.g. cache_valid_time = 86400 (lists refreshed in the last day are used as they are); 0 refreshes them once per run"
                )
            )
        );
        for bad in ["-1", "1.5", "true"] {
            let e = build_err(build_with(
                build,
                &format!("packages = [\"nginx\"]\ncache_valid_time = {bad}"),
            ));
            assert_eq!(e.key.as_deref(), Some("cache_valid_time"), "{bad}");
        }
        let e = build_err(build_with(build, "packages = [\"nginx\"]\npurge = true"));
        assert_eq!(e.key.as_deref(), Some("purge"));
    }

    /// The install gather command run on this Debian 12 machine (curl installed, nginx not),
    /// its lists refreshed 7 h 32 min before by `apt-get update` (the lists directory's
    /// mtime; nothing writes update-success-stamp on Debian, so only our update makes one).
    const DEBIAN12_7H: &str = "pkg=ii  curl amd64 7.88.1-10+deb12u15\n\
        candidate=curl 7.88.1-10+deb12u15\n\
        candidate=nginx 1.22.1-9+deb12u12\n\
        now=1796682801\nupdated=1796655645\nsources=1796655644\nlists=4\n";

    /// Facts as the runner hands them over after this run refreshed the host's lists.
    /// The plan for `packages = ["nginx"]` on lists `age` old: refresh (marked), then install.
    fn refresh_then_install_nginx(age: &str) -> Check {
        Check::Change(vec![
            Change::new(
                format!("install nginx (after apt-get update: package lists are {age} old)"),
                vec![
                    Action::run(update_command()),
                    Action::run(format!("{INSTALL} nginx")),
                ],
            )
            .marking(LISTS_UPDATED),
        ])
    }

    fn updated_this_run(stdout: &str) -> Facts {
        Facts {
            marks: [LISTS_UPDATED.to_string()].into(),
            ..Facts::new(stdout)
        }
    }

    #[test]
    fn cache_valid_time_decides_over_the_age_of_real_lists() {
        let f = parse(DEBIAN12_7H).unwrap();
        assert_eq!(
            (f.now, f.updated, f.sources, f.lists, f.updated_this_run),
            (
                Some(1796682801),
                Some(1796655645),
                Some(1796655644),
                Some(4),
                false
            )
        );
        // The default (an hour): 7 h is stale, so the lists are refreshed first, and the change
        // marks the host for the rest of the run.
        let s = step("packages = [\"nginx\"]");
        assert_eq!(
            s.check(&Facts::new(DEBIAN12_7H)).unwrap(),
            refresh_then_install_nginx("7h")
        );
        // A day: fresh enough, no refresh and no mark.
        let s = step("packages = [\"nginx\"]\ncache_valid_time = 86400");
        assert_eq!(
            s.check(&Facts::new(DEBIAN12_7H)).unwrap(),
            Check::Change(vec![Change::new(
                "install nginx",
                vec![Action::run(format!("{INSTALL} nginx"))]
            )])
        );
        // Just below and just above the age (27156 s).
        let s = step("packages = [\"nginx\"]\ncache_valid_time = 27156");
        let Check::Change(c) = s.check(&Facts::new(DEBIAN12_7H)).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "install nginx");
        let s = step("packages = [\"nginx\"]\ncache_valid_time = 27155");
        let Check::Change(c) = s.check(&Facts::new(DEBIAN12_7H)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install nginx (after apt-get update: package lists are 7h old)"
        );
    }

    #[test]
    fn lists_refreshed_in_this_run_are_not_refreshed_again() {
        // Stale by age, even with cache_valid_time = 0 (refresh once per run): not again.
        for with in [
            "packages = [\"nginx\"]",
            "packages = [\"nginx\"]\ncache_valid_time = 0",
        ] {
            assert_eq!(
                step(with).check(&updated_this_run(DEBIAN12_7H)).unwrap(),
                Check::Change(vec![Change::new(
                    "install nginx",
                    vec![Action::run(format!("{INSTALL} nginx"))]
                )]),
                "{with}"
            );
        }
        // A package the refreshed lists lack: apt-get install names it, a second update
        // would not find it either.
        let s = step("packages = [\"no-such-package\"]");
        let Check::Change(c) = s.check(&updated_this_run(DEBIAN12_7H)).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "install no-such-package");
        // Lists the update did not produce (a broken source): not again either.
        let Check::Change(c) = s
            .check(&updated_this_run(
                &DEBIAN12_7H.replace("lists=4", "lists=0"),
            ))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(c[0].summary, "install no-such-package");
        // But sources written after that update (Docker's repository) need their lists.
        let newer_sources = DEBIAN12_7H.replace("sources=1796655644", "sources=1796682800");
        let Check::Change(c) = step("packages = [\"nginx\"]")
            .check(&updated_this_run(&newer_sources))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install nginx (after apt-get update: sources changed since the last update)"
        );
        assert_eq!(c[0].marks, vec![LISTS_UPDATED.to_string()]);
        // update_cache = false never refreshes, and marks nothing.
        let Check::Change(c) = step("packages = [\"nginx\"]\nupdate_cache = false")
            .check(&Facts::new(DEBIAN12_7H))
            .unwrap()
        else {
            panic!()
        };
        assert!(c[0].marks.is_empty());
    }

    #[test]
    fn only_changes_that_refresh_the_lists_are_marked() {
        let install = Change::new("install x", vec![Action::run(format!("{INSTALL} x"))]);
        let update = Change::new("refresh", vec![Action::run(update_command())]);
        let marked = mark_updates(vec![install.clone(), update.clone()]);
        assert_eq!(marked, vec![install, update.clone().marking(LISTS_UPDATED)]);
        // Marking twice adds nothing.
        assert_eq!(mark_updates(marked.clone()), marked);
    }

    /// [`lists_command`] run on this Debian 12 machine: lists refreshed 7 h 49 min before.
    const DEBIAN12_LISTS: &str =
        "now=1796683863\nupdated=1796655645\nsources=1796655644\nlists=4\n";

    #[test]
    fn without_packages_the_step_refreshes_stale_lists_only() {
        let s = step("update_cache = true");
        assert_eq!(
            s.gather().unwrap(),
            "echo \"now=$(date +%s)\"; \
             echo \"updated=$(stat -c %Y /var/lib/apt/lists /var/lib/apt/periodic/update-success-stamp 2>/dev/null | sort -n | tail -n 1)\"; \
             echo \"sources=$(stat -c %Y /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/sources.list.d/* 2>/dev/null | sort -n | tail -n 1)\"; \
             echo \"lists=$(ls /var/lib/apt/lists 2>/dev/null | grep -c _Packages)\""
        );
        assert_eq!(s.gather().unwrap(), lists_command());
        assert_eq!(
            s.check(&Facts::new(DEBIAN12_LISTS)).unwrap(),
            Check::Change(vec![
                Change::new(
                    "apt-get update: package lists are 7h old",
                    vec![Action::run(update_command())]
                )
                .marking(LISTS_UPDATED)
            ])
        );
        let s = step("cache_valid_time = 86400");
        assert_eq!(
            s.check(&Facts::new(DEBIAN12_LISTS)).unwrap(),
            Check::Ok("package lists are 7h old".into())
        );
        // cache_valid_time = 0: every run, but once per host and run.
        let s = step("cache_valid_time = 0");
        assert!(matches!(
            s.check(&Facts::new(DEBIAN12_LISTS)).unwrap(),
            Check::Change(_)
        ));
        assert_eq!(
            s.check(&updated_this_run(DEBIAN12_LISTS)).unwrap(),
            Check::Ok("package lists refreshed in this run".into())
        );
        // Unless sources came after that refresh.
        let Check::Change(c) = s
            .check(&updated_this_run(
                &DEBIAN12_LISTS.replace("sources=1796655644", "sources=1796683000"),
            ))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "apt-get update: sources changed since the last update"
        );
    }

    #[test]
    fn without_packages_other_settings_are_refused() {
        let e = build_err(build_with(build, "state = \"absent\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (
                Some("packages"),
                "`packages` is missing: state = \"absent\" needs the packages it applies to"
            )
        );
        let e = build_err(build_with(build, "update_cache = false"));
        assert_eq!(e.key.as_deref(), Some("update_cache"));
        assert_eq!(
            e.message,
            "without `packages` the step only refreshes the package lists, and update_cache = false forbids that"
        );
        let e = build_err(build_with(build, "purge = true"));
        assert_eq!(e.key.as_deref(), Some("purge"));
    }
}

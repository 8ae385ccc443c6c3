//! The host's system facts that templates read as `facts.NAME`
//! (`provision_engine::host_facts::HostFacts`): one read-only command and its pure parser. The
//! distribution's ID and codename are the docker step's own [`OsFact`]; the rest (version,
//! `uname -m`, CPUs, memory, the default routes' source addresses) follows in a section of its
//! own.

use super::docker_repo::OsFact;
use provision_engine::fact::{Fact, Sections, sections, unexpected};
use provision_engine::host_facts::HostFacts;
use provision_engine::step::{Check, Facts, HostStep, PerHost, Step, StepError};

/// The file the distribution is read from.
const OS_RELEASE: &str = "/etc/os-release";

/// Addresses asked for the route to, as Ansible does for its `default_ipv4`: `ip route get`
/// sends nothing, it names the route (and its source address) a packet there would take.
const PROBE_V4: &str = "8.8.8.8";
const PROBE_V6: &str = "2001:4860:4860::8888";

/// `facts.*` of a host.
pub struct HostFactsFact;

impl Fact for HostFactsFact {
    type Value = HostFacts;

    fn command(&self) -> String {
        let os = OsFact {
            os_release: OS_RELEASE,
        };
        // `ip` is in /usr/sbin, not on a plain user's PATH; no default route: empty.
        let host = format!(
            "( . {OS_RELEASE}; echo \"version=$VERSION_ID\" ); echo \"machine=$(uname -m)\"; \
             echo \"cpus=$(getconf _NPROCESSORS_ONLN)\"; \
             sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/memory_kb=\\1/p' /proc/meminfo; \
             ( PATH=\"$PATH:/usr/sbin:/sbin\"; \
             echo \"ipv4=$(ip -4 route get {PROBE_V4} 2>/dev/null | head -n1)\"; \
             echo \"ipv6=$(ip -6 route get {PROBE_V6} 2>/dev/null | head -n1)\" )"
        );
        sections(&[("os", os.command()), ("host", host)])
    }

    fn parse(&self, facts: &Facts) -> Result<HostFacts, StepError> {
        let parts = Sections::parse(facts);
        let os = OsFact {
            os_release: OS_RELEASE,
        }
        .parse(parts.get("os")?)?;
        let host = parts.get("host")?;
        let kv = host.kv();
        let bad = |what: &str| unexpected(what, &facts.stdout);
        let field = |k: &str| -> Result<&str, StepError> {
            kv.get(k)
                .map(|v| v.trim())
                .ok_or_else(|| bad(&format!("host facts (no `{k}`)")))
        };
        let number = |k: &str| -> Result<u64, StepError> {
            field(k)?
                .parse::<u64>()
                .map_err(|_| bad(&format!("host facts (`{k}` is not a number)")))
        };
        let version = field("version")?;
        let machine = field("machine")?;
        let word = |v: &str| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !word(version) || machine.is_empty() || !word(machine) {
            return Err(bad("host facts (version or machine)"));
        }
        let cpus = number("cpus")?;
        if cpus == 0 {
            return Err(bad("host facts (no CPU online)"));
        }
        Ok(HostFacts {
            os: os.id,
            os_version: version.to_string(),
            os_codename: os.codename,
            arch: machine.to_string(),
            memory_mb: number("memory_kb")? / 1024,
            cpus,
            ipv4: source_address(field("ipv4")?, false)
                .ok_or_else(|| bad("host facts (ipv4 route)"))?,
            ipv6: source_address(field("ipv6")?, true)
                .ok_or_else(|| bad("host facts (ipv6 route)"))?,
        })
    }
}

/// The title the gathered facts are reported under.
pub const STEP_TITLE: &str = "facts";

/// What a run gathered before compiling, reported as the run's first step: on each host the
/// facts in one line, or why they could not be gathered (the host fails there and drops out,
/// as at any step). It reads and changes nothing itself.
pub fn report(gathered: Vec<(String, Result<HostFacts, StepError>)>) -> Box<dyn Step> {
    Box::new(PerHost {
        title: STEP_TITLE.to_string(),
        hosts: gathered
            .into_iter()
            .map(|(host, r)| {
                let step: Box<dyn HostStep> = Box::new(Gathered(r.map(|f| f.summary())));
                (host, step)
            })
            .collect(),
    })
}

struct Gathered(Result<String, StepError>);

impl HostStep for Gathered {
    fn gather(&self) -> Option<String> {
        None
    }

    fn check(&self, _: &Facts) -> Result<Check, StepError> {
        self.0.clone().map(Check::Ok)
    }
}

/// The `src` of an `ip route get` line: empty when there is no route (no line) or it names no
/// source; None when what follows `src` is not an address of the family.
fn source_address(route: &str, v6: bool) -> Option<String> {
    let mut words = route.split_whitespace();
    if !words.any(|w| w == "src") {
        return Some(String::new());
    }
    let addr = words.next()?;
    let ok = if v6 {
        addr.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        addr.parse::<std::net::Ipv4Addr>().is_ok()
    };
    ok.then(|| addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command's output on a Debian 12 (bookworm) amd64 host with both default routes,
    /// captured by running [`HostFactsFact::command`] there.
    const DEBIAN_12: &str = include_str!("../../tests/fixtures/host_facts/debian12-bookworm.txt");

    #[test]
    fn the_report_step_shows_each_hosts_facts_or_fails_it() {
        let step = report(vec![
            ("h1".into(), Ok(HostFacts::placeholder())),
            ("h2".into(), Err(StepError::new("unexpected output"))),
        ]);
        assert_eq!(step.title(), "facts");
        assert_eq!(step.targets(), ["h1", "h2"]);
        let plan = step.plan(&Default::default());
        assert_eq!(
            plan.hosts["h1"],
            Ok(Check::Ok(HostFacts::placeholder().summary()))
        );
        assert_eq!(plan.hosts["h2"], Err(StepError::new("unexpected output")));
    }

    #[test]
    fn the_command() {
        assert_eq!(
            HostFactsFact.command(),
            "echo '--- os'; ( . /etc/os-release; echo \"id=$ID\"; echo \"codename=${VERSION_CODENAME:-$UBUNTU_CODENAME}\" ); echo \"arch=$(dpkg --print-architecture)\"; \
             echo '--- host'; ( . /etc/os-release; echo \"version=$VERSION_ID\" ); echo \"machine=$(uname -m)\"; \
             echo \"cpus=$(getconf _NPROCESSORS_ONLN)\"; \
             sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/memory_kb=\\1/p' /proc/meminfo; \
             ( PATH=\"$PATH:/usr/sbin:/sbin\"; \
             echo \"ipv4=$(ip -4 route get 8.8.8.8 2>/dev/null | head -n1)\"; \
             echo \"ipv6=$(ip -6 route get 2001:4860:4860::8888 2>/dev/null | head -n1)\" )"
        );
    }

    #[test]
    fn parses_a_debian_12_host() {
        assert_eq!(
            HostFactsFact.parse(&Facts::new(DEBIAN_12)).unwrap(),
            HostFacts {
                os: "debian".into(),
                os_version: "12".into(),
                os_codename: "bookworm".into(),
                arch: "x86_64".into(),
                memory_mb: 24683772 / 1024,
                cpus: 2,
                ipv4: "192.0.2.2".into(),
                ipv6: "fd00::2".into(),
            }
        );
    }

    #[test]
    fn no_default_route_is_an_empty_address() {
        let out = DEBIAN_12
            .lines()
            .map(|l| match l.split_once('=') {
                Some(("ipv4" | "ipv6", _)) => format!("{}=", &l[..4]),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let f = HostFactsFact.parse(&Facts::new(&out)).unwrap();
        assert_eq!((f.ipv4.as_str(), f.ipv6.as_str()), ("", ""));
        assert_eq!(f.cpus, 2);
    }

    #[test]
    fn malformed_output_is_an_error_naming_what() {
        let with = |from: &str, to: &str| {
            let out = DEBIAN_12.replace(from, to);
            assert_ne!(out, DEBIAN_12, "{from}");
            HostFactsFact.parse(&Facts::new(&out)).unwrap_err().message
        };
        assert!(with("cpus=2", "cpus=two").contains("`cpus` is not a number"));
        assert!(with("cpus=2", "cpus=0").contains("no CPU online"));
        assert!(with("memory_kb=24683772\n", "").contains("no `memory_kb`"));
        assert!(with("machine=x86_64", "machine=").contains("version or machine"));
        assert!(with("src 192.0.2.2", "src fd00::9").contains("ipv4 route"));
        assert!(with("src fd00::2", "src").contains("ipv6 route"));
        assert!(with("--- host\n", "").contains("`host` fact"));
        assert!(with("id=debian", "id=Debian GNU").contains("os-release"));
        assert!(
            HostFactsFact
                .parse(&Facts::new(""))
                .unwrap_err()
                .message
                .contains("`os` fact")
        );
    }
}

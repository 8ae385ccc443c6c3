//! Where the `docker` step's packages come from: apt's proxy (`apt_proxy`), and for source =
//! "docker" Docker's signing key (fetched on the host, or `gpg_key`) and its repository's
//! deb822 sources entry (`repo_url`), replacing the one-line list of Docker's older guide.

use super::docker_engine::{Files, Source};
use super::file::{self, Kind, PathFacts};
use super::util;
use crate::ctx::ParamError;
use provision_engine::fact::Fact;
use provision_engine::step::{Action, Change, Facts, StepError};
use provision_transport::shell::quote;

/// The parameters of where the packages come from, checked.
pub struct Repo {
    apt_proxy: Option<String>,
    gpg_key: Option<String>,
    gpg_key_url: Option<String>,
    repo_url: Option<String>,
}

/// The URL with its `user:password@` replaced by `***@`, when it has one.
pub fn without_credentials(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://***@{}", &rest[at + 1..]))
}

/// An http(s) URL that can go into apt's configuration and a JSON string as is.
pub fn url(key: &str, u: String) -> Result<String, ParamError> {
    let ok = (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() > "https://".len()
        && !u.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | ';' | '\\')
        });
    if ok {
        Ok(u)
    } else {
        Err(util::bad(
            key,
            format!("`{key}` \"{u}\" is not an http(s) URL"),
            "e.g. \"http://10.0.0.2:3142\" (no spaces or quotes)",
        ))
    }
}

/// The apt configuration for `apt_proxy`: https goes through it too (CONNECT),
/// as Docker's repository is served over https.
pub fn proxy_conf(url: &str) -> String {
    format!(
        "// Written by provision (docker step): apt reaches package repositories through this proxy.\nAcquire::http::Proxy \"{url}\";\nAcquire::https::Proxy \"{url}\";\n"
    )
}

/// The deb822 sources entry for Docker's repository.
pub fn sources_content(repo_url: &str, codename: &str, arch: &str, keyring: &str) -> String {
    let mut s = format!(
        "# Docker's apt repository, written by provision (docker step).\nTypes: deb\nURIs: {repo_url}\nSuites: {codename}\nComponents: stable\n"
    );
    if !arch.is_empty() {
        s.push_str(&format!("Architectures: {arch}\n"));
    }
    s.push_str(&format!("Signed-By: {keyring}\n"));
    s
}

/// Fetches Docker's signing key on the host (only when it is missing), and
/// refuses anything that is not a PGP public key (a captive portal's page). With `proxy`, curl
/// reads its proxy from a config on stdin ([`curl_proxy_config`]): a URL with a password must
/// not be in a command line, which every user of the host can read.
pub fn fetch_key_command(url: &str, keyring: &str, proxy: bool) -> String {
    let dir = keyring.rsplit_once('/').map_or("/", |(d, _)| d);
    let mut curl = String::from("curl -fsSL --retry 3");
    if proxy {
        curl.push_str(" -K -");
    }
    format!(
        "set -e; k={}; install -m 0755 -d {}; trap 'rm -f \"$k.provision-new\"' EXIT; {curl} -o \"$k.provision-new\" {}; \
         if ! grep -q 'BEGIN PGP PUBLIC KEY BLOCK' \"$k.provision-new\"; then echo {} >&2; exit 1; fi; \
         chmod 644 \"$k.provision-new\"; mv -f \"$k.provision-new\" \"$k\"",
        quote(keyring),
        quote(dir),
        quote(url),
        quote(&format!("{url} did not return a PGP public key")),
    )
}

/// The curl config (read with `-K -`) naming the proxy; quoted as curl's config format reads it.
pub fn curl_proxy_config(url: &str) -> zeroize::Zeroizing<Vec<u8>> {
    let escaped = url.replace('\\', "\\\\").replace('"', "\\\"");
    zeroize::Zeroizing::new(format!("proxy = \"{escaped}\"\n").into_bytes())
}

/// Reads the distribution's ID, codename and architecture, which Docker's repository is laid
/// out by: [`Os`].
pub struct OsFact<'a> {
    pub os_release: &'a str,
}

/// The distribution's ID, its codename and dpkg's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Os {
    pub id: String,
    pub codename: String,
    pub arch: String,
}

impl Fact for OsFact<'_> {
    type Value = Os;

    fn command(&self) -> String {
        format!(
            "( . {}; echo \"id=$ID\"; echo \"codename=${{VERSION_CODENAME:-$UBUNTU_CODENAME}}\" ); echo \"arch=$(dpkg --print-architecture)\"",
            quote(self.os_release)
        )
    }

    fn parse(&self, os: &Facts) -> Result<Os, StepError> {
        let kv = os.kv();
        let field = |k: &str| kv.get(k).map(|v| v.trim()).unwrap_or("");
        let (id, codename, arch) = (field("id"), field("codename"), field("arch"));
        let word = |v: &str| {
            v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !word(id) || !word(codename) || !word(arch) {
            return Err(util::bad_facts("/etc/os-release", &os.stdout));
        }
        Ok(Os {
            id: id.into(),
            codename: codename.into(),
            arch: arch.into(),
        })
    }
}

/// The sources entry's facts, and `legacy=yes` when the one-line list is there too:
/// [`Sources`].
pub struct SourcesFact<'a> {
    pub files: &'a Files,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub entry: PathFacts,
    pub legacy: bool,
}

impl Fact for SourcesFact<'_> {
    type Value = Sources;

    fn command(&self) -> String {
        format!(
            "{}; if [ -e {} ]; then echo legacy=yes; fi",
            file::gather_command(&self.files.sources, Some(file::DIFF_LIMIT)),
            quote(&self.files.legacy_list)
        )
    }

    fn parse(&self, facts: &Facts) -> Result<Sources, StepError> {
        Ok(Sources {
            entry: file::parse(facts)?,
            legacy: facts.kv().get("legacy") == Some(&"yes"),
        })
    }
}

/// What Docker's repository needs to know of the host (the docker step gathers each part in
/// its place among the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFacts {
    pub os: Os,
    pub key: PathFacts,
    pub sources: Sources,
}

impl Repo {
    /// Checks the parameters in the step's order: the first error is the one reported.
    pub fn new(
        source: Source,
        apt_proxy: Option<String>,
        gpg_key: Option<String>,
        gpg_key_url: Option<String>,
        repo_url: Option<String>,
    ) -> Result<Repo, ParamError> {
        let gpg_key = util::non_empty(gpg_key);
        source.only_docker("gpg_key", gpg_key.is_some())?;
        if let Some(k) = &gpg_key
            && !k.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        {
            return Err(util::bad(
                "gpg_key",
                "`gpg_key` is not an ASCII-armored PGP public key",
                "paste the text of https://download.docker.com/linux/debian/gpg (it starts with -----BEGIN PGP PUBLIC KEY BLOCK-----), or remove `gpg_key` to fetch it on the host",
            ));
        }
        let gpg_key_url = util::non_empty(gpg_key_url)
            .map(|u| url("gpg_key_url", u))
            .transpose()?;
        source.only_docker("gpg_key_url", gpg_key_url.is_some())?;
        let repo_url = util::non_empty(repo_url)
            .map(|u| url("repo_url", u).map(|u| u.trim_end_matches('/').to_string()))
            .transpose()?;
        source.only_docker("repo_url", repo_url.is_some())?;
        let apt_proxy = util::non_empty(apt_proxy)
            .map(|u| url("apt_proxy", u))
            .transpose()?;
        Ok(Repo {
            apt_proxy,
            gpg_key,
            gpg_key_url,
            repo_url,
        })
    }

    /// The apt configuration of `apt_proxy`, removed when it is no longer set.
    pub fn proxy_change(&self, path: &str, now: &PathFacts) -> Result<Option<Change>, StepError> {
        match &self.apt_proxy {
            Some(u) => {
                // A proxy URL with a user and password: the file is root's only, and the
                // password is not shown.
                let (shown, mode) = match without_credentials(u) {
                    Some(bare) => (bare, Some(0o600)),
                    None => (u.clone(), None),
                };
                Ok(
                    file::change_with_mode(path, "apt_proxy", proxy_conf(u).as_bytes(), mode, now)?
                        .map(|mut c| {
                            c.summary = format!("apt uses the proxy {shown} ({path})");
                            c
                        }),
                )
            }
            None if now.kind != Kind::Absent => Ok(Some(Change::new(
                format!("remove {path} (`apt_proxy` is not set)"),
                vec![Action::run(format!("rm -f {}", quote(path)))],
            ))),
            None => Ok(None),
        }
    }

    /// Docker's signing key and sources entry.
    pub fn changes(
        &self,
        f: &Files,
        host: &str,
        now: &RepoFacts,
        changes: &mut Vec<Change>,
    ) -> Result<(), StepError> {
        let Os { id, codename, arch } = &now.os;
        let (id, codename) = (id.as_str(), codename.as_str());
        if self.repo_url.is_none() && !matches!(id, "debian" | "ubuntu") {
            return Err(StepError::new(format!(
                "{}: Docker's repository has no packages for this distribution ({})",
                host,
                if id.is_empty() { "unknown" } else { id }
            ))
            .hint("set source = \"distro\" to use the distribution's docker.io, or repo_url to a repository for it"));
        }
        if codename.is_empty() {
            return Err(StepError::new(format!(
                "{}: {} names no VERSION_CODENAME",
                host, f.os_release
            ))
            .hint("set source = \"distro\" (a testing or unreleased distribution has no Docker repository)"));
        }
        let key_now = &now.key;
        match &self.gpg_key {
            Some(k) => {
                if let Some(mut c) = file::change(&f.keyring, "gpg_key", k.as_bytes(), key_now)? {
                    c.summary = format!("place Docker's signing key in {}", f.keyring);
                    if let Some(dir) = f
                        .keyring
                        .rsplit_once('/')
                        .map(|(d, _)| d)
                        .filter(|d| !d.is_empty())
                    {
                        c.actions
                            .insert(0, Action::run(format!("install -m 0755 -d {}", quote(dir))));
                    }
                    changes.push(c);
                }
            }
            None => {
                let missing = key_now.kind == Kind::Absent
                    || key_now.attrs.as_ref().is_some_and(|a| a.size == 0);
                if missing {
                    let url = self
                        .gpg_key_url
                        .clone()
                        .unwrap_or_else(|| format!("https://download.docker.com/linux/{id}/gpg"));
                    changes.push(Change::new(
                        format!("fetch Docker's signing key from {url} into {}", f.keyring),
                        vec![Action::Run {
                            script: fetch_key_command(&url, &f.keyring, self.apt_proxy.is_some()),
                            stdin: self.apt_proxy.as_deref().map(curl_proxy_config),
                        }],
                    ));
                }
            }
        }
        let repo = self
            .repo_url
            .clone()
            .unwrap_or_else(|| format!("https://download.docker.com/linux/{id}"));
        let want = sources_content(&repo, codename, arch, &f.keyring);
        if let Some(mut c) = file::change(&f.sources, "path", want.as_bytes(), &now.sources.entry)?
        {
            c.summary = format!(
                "add Docker's repository ({repo} {codename} stable) in {}",
                f.sources
            );
            changes.push(c);
        }
        if now.sources.legacy {
            changes.push(Change::new(
                format!("remove {} (replaced by {})", f.legacy_list, f.sources),
                vec![Action::run(format!("rm -f {}", quote(&f.legacy_list)))],
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::docker::testing::*;

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            fetch_key_command(
                "https://download.docker.com/linux/debian/gpg",
                "/etc/apt/keyrings/docker.asc",
                true
            ),
            "set -e; k=/etc/apt/keyrings/docker.asc; install -m 0755 -d /etc/apt/keyrings; trap 'rm -f \"$k.provision-new\"' EXIT; \
             curl -fsSL --retry 3 -K - -o \"$k.provision-new\" https://download.docker.com/linux/debian/gpg; \
             if ! grep -q 'BEGIN PGP PUBLIC KEY BLOCK' \"$k.provision-new\"; then echo 'https://download.docker.com/linux/debian/gpg did not return a PGP public key' >&2; exit 1; fi; \
             chmod 644 \"$k.provision-new\"; mv -f \"$k.provision-new\" \"$k\""
        );
        assert_eq!(
            &*curl_proxy_config("http://u:p\"w\\d@10.0.0.2:3142"),
            b"proxy = \"http://u:p\\\"w\\\\d@10.0.0.2:3142\"\n"
        );
        assert_eq!(
            sources(),
            "# Docker's apt repository, written by provision (docker step).\nTypes: deb\nURIs: https://download.docker.com/linux/debian\nSuites: bookworm\nComponents: stable\nArchitectures: amd64\nSigned-By: /etc/apt/keyrings/docker.asc\n"
        );
        assert_eq!(
            proxy_conf("http://10.0.0.2:3142"),
            "// Written by provision (docker step): apt reaches package repositories through this proxy.\nAcquire::http::Proxy \"http://10.0.0.2:3142\";\nAcquire::https::Proxy \"http://10.0.0.2:3142\";\n"
        );
    }

    #[test]
    fn key_given_inline_and_other_urls() {
        let key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQINBFit2ioBEADhWpZ8/wvZ6hUTiXOwQHXMAlaFHcPH9hAtr4F1y2+OYdbtMuth\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let s = step(&format!(
            "gpg_key = '''{key}'''\nrepo_url = \"https://mirror.example.com/docker-ce/linux/debian/\"\napt_proxy = \"http://10.0.0.2:3142\"\nmirror = \"https://mirror.gcr.io\""
        ));
        let c = s.check(&facts(&fresh(), true, false)).unwrap();
        let sm = summaries(&c);
        assert_eq!(
            sm[0],
            "apt uses the proxy http://10.0.0.2:3142 (/etc/apt/apt.conf.d/01provision-proxy)"
        );
        // With credentials in the URL: the file is 0600 and the summary hides them.
        let with_creds = step("apt_proxy = \"http://apt:pr0xy-pw@10.0.0.2:3142\"");
        let Check::Change(cc) = with_creds.check(&facts(&fresh(), true, false)).unwrap() else {
            panic!()
        };
        assert_eq!(
            cc[0].summary,
            "apt uses the proxy http://***@10.0.0.2:3142 (/etc/apt/apt.conf.d/01provision-proxy)"
        );
        assert!(
            matches!(
                &cc[0].actions[0],
                Action::Upload {
                    mode: Some(0o600),
                    ..
                }
            ),
            "{:?}",
            cc[0].actions[0].describe()
        );
        assert_eq!(
            sm[2],
            "place Docker's signing key in /etc/apt/keyrings/docker.asc"
        );
        assert_eq!(
            sm[3],
            "add Docker's repository (https://mirror.example.com/docker-ce/linux/debian bookworm stable) in /etc/apt/sources.list.d/docker.sources"
        );
        let Check::Change(c) = c else { panic!() };
        assert_eq!(
            c[2].actions[0],
            Action::run("install -m 0755 -d /etc/apt/keyrings")
        );
        let Action::Upload { content, .. } = &c[4].actions[1] else {
            panic!()
        };
        assert!(
            String::from_utf8(content.to_vec())
                .unwrap()
                .contains("\"registry-mirrors\": [\n    \"https://mirror.gcr.io\"\n  ]")
        );
    }

    #[test]
    fn proxy_no_longer_wanted() {
        // A proxy no longer wanted.
        let s = step("");
        let f = facts(&done(), true, false).stdout.replace(
            "--- proxy\nkind=absent\n",
            &format!("--- proxy\n{}", file_facts(Some(&proxy_conf("http://x:1")))),
        );
        let Check::Change(c) = s.check(&Facts::new(f)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "remove /etc/apt/apt.conf.d/01provision-proxy (`apt_proxy` is not set)"
        );
    }

    #[test]
    fn refuses_unknown_systems() {
        let s = step("");
        let f = facts(&fresh(), true, false)
            .stdout
            .replace("id=debian", "id=fedora");
        let e = s.check(&Facts::new(f)).unwrap_err();
        assert_eq!(
            e.message,
            "web-1: Docker's repository has no packages for this distribution (fedora)"
        );
        let f = facts(&fresh(), true, false)
            .stdout
            .replace("codename=bookworm", "codename=");
        let e = s.check(&Facts::new(f)).unwrap_err();
        assert_eq!(
            e.message,
            "web-1: /etc/os-release names no VERSION_CODENAME"
        );
    }

    #[test]
    fn param_errors() {
        assert_eq!(
            without_credentials("http://u:p%40ss@10.0.0.2:3142/x"),
            Some("http://***@10.0.0.2:3142/x".into())
        );
        assert_eq!(without_credentials("http://10.0.0.2:3142/a@b"), None);
        let e = build_err(build_with_ctx(build, "apt_proxy = \"10.0.0.2:3142\""));
        assert_eq!(
            e.message,
            "`apt_proxy` \"10.0.0.2:3142\" is not an http(s) URL"
        );
        let e = build_err(build_with_ctx(build, "mirror = \"https://x\\\"; rm\""));
        assert_eq!(e.key.as_deref(), Some("mirror"));
        let e = build_err(build_with_ctx(build, "gpg_key = \"abc\""));
        assert_eq!(
            e.message,
            "`gpg_key` is not an ASCII-armored PGP public key"
        );
    }
}

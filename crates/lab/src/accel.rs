//! KVM or TCG: chosen by PROVISION_LAB_ACCEL, else by a short probe boot (KVM may exist and still
//! hang guests, as on PVM hosts), whose answer is cached per host kernel and guest kernel.

use crate::argv;
pub use crate::argv::Accel;
use crate::error::{LabError, Result};
use crate::process::command;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Env var forcing the accelerator: `kvm`, `tcg` or `auto`.
pub const ENV_ACCEL: &str = "PROVISION_LAB_ACCEL";

/// How long the KVM probe may take before KVM counts as broken.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// Probe KVM, fall back to TCG.
    #[default]
    Auto,
    Force(Accel),
}

impl AccelChoice {
    /// Parses `auto`, `kvm` or `tcg`.
    pub fn parse(s: &str) -> Result<AccelChoice> {
        match s.trim() {
            "" | "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Force(Accel::Kvm)),
            "tcg" => Ok(AccelChoice::Force(Accel::Tcg)),
            other => Err(LabError::spec(
                ENV_ACCEL,
                None,
                format!("`{other}` is not an accelerator: use kvm, tcg or auto"),
            )),
        }
    }

    /// From PROVISION_LAB_ACCEL, Auto when unset.
    pub fn from_env() -> Result<AccelChoice> {
        match std::env::var(ENV_ACCEL) {
            Ok(v) => AccelChoice::parse(&v),
            Err(_) => Ok(AccelChoice::Auto),
        }
    }
}

/// Decides the accelerator: forced, else cached probe result, else a probe boot of `kernel`.
pub fn resolve(
    choice: AccelChoice,
    kernel: &Path,
    cache_root: &Path,
    progress: &dyn Fn(&str),
) -> Accel {
    if let AccelChoice::Force(a) = choice {
        return a;
    }
    if !kvm_device_usable() {
        return Accel::Tcg;
    }
    let key = probe_key(kernel);
    let cache = cache_root.join("kvm-probe");
    if let Some(cached) = read_cached(&cache, &key) {
        return cached;
    }
    progress(&format!(
        "probing KVM (at most {} s; set {ENV_ACCEL}=tcg or kvm to skip)",
        PROBE_TIMEOUT.as_secs()
    ));
    let accel = if probe_kvm(kernel) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    progress(&format!("accelerator: {}", accel.as_str()));
    // Best effort: a cache that cannot be written only costs a probe next time.
    let _ = std::fs::write(&cache, format!("{key}\n{}\n", accel.as_str()));
    accel
}

fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The probe's answer depends on the host kernel (hypervisor) and the guest kernel.
fn probe_key(kernel: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("host={} guest={}", host.trim(), kernel.display())
}

pub(crate) fn parse_cache(text: &str, key: &str) -> Option<Accel> {
    let mut lines = text.lines();
    if lines.next()? != key {
        return None;
    }
    match lines.next()? {
        "kvm" => Some(Accel::Kvm),
        "tcg" => Some(Accel::Tcg),
        _ => None,
    }
}

fn read_cached(path: &Path, key: &str) -> Option<Accel> {
    parse_cache(&std::fs::read_to_string(path).ok()?, key)
}

/// Boots `kernel` under KVM with no root disk: a working KVM panics and exits in a second or two.
fn probe_kvm(kernel: &Path) -> bool {
    let argv = argv::kvm_probe(kernel);
    let Ok(mut child) = command(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let exited = loop {
        match child.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    exited && String::from_utf8_lossy(&out).contains("Kernel panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parsing() {
        assert_eq!(AccelChoice::parse("auto").unwrap(), AccelChoice::Auto);
        assert_eq!(AccelChoice::parse("").unwrap(), AccelChoice::Auto);
        assert_eq!(
            AccelChoice::parse("tcg").unwrap(),
            AccelChoice::Force(Accel::Tcg)
        );
        assert_eq!(
            AccelChoice::parse(" kvm ").unwrap(),
            AccelChoice::Force(Accel::Kvm)
        );
        assert_eq!(
            AccelChoice::parse("hvf").unwrap_err().to_string(),
            "PROVISION_LAB_ACCEL: `hvf` is not an accelerator: use kvm, tcg or auto"
        );
    }

    #[test]
    fn forced_choice_needs_no_probe() {
        let none = Path::new("/nonexistent");
        let silent = |_: &str| panic!("no probe expected");
        assert_eq!(
            resolve(AccelChoice::Force(Accel::Tcg), none, none, &silent),
            Accel::Tcg
        );
        assert_eq!(
            resolve(AccelChoice::Force(Accel::Kvm), none, none, &silent),
            Accel::Kvm
        );
    }

    #[test]
    fn probe_cache_matches_key() {
        assert_eq!(
            parse_cache("host=6.1 guest=/k\ntcg\n", "host=6.1 guest=/k"),
            Some(Accel::Tcg)
        );
        assert_eq!(
            parse_cache("host=6.1 guest=/k\nkvm\n", "host=6.1 guest=/k"),
            Some(Accel::Kvm)
        );
        assert_eq!(
            parse_cache("host=6.2 guest=/k\nkvm\n", "host=6.1 guest=/k"),
            None
        );
        assert_eq!(
            parse_cache("host=6.1 guest=/k\n", "host=6.1 guest=/k"),
            None
        );
    }
}

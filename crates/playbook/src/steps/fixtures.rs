//! What the tests of the steps that manage a host's files share: a step built for one host of a
//! small cluster, a file's facts as `file::gather_command` prints them, apt's list state, and
//! the summaries of a plan. Test code only.
#![cfg(test)]

use super::system_files::Built;
use super::util;
use crate::ctx::{BuildCtx, HostStepCtor};
use provision_engine::inventory::Inventory;
use provision_engine::step::Check;
use std::path::Path;

/// apt's lists refreshed 10 minutes before `now`, on Debian 12 (captured shape).
pub const LISTS: &str = "now=1795768133\nupdated=1795767533\nsources=1700000000\nlists=4\n";

/// A cluster with a host of each role, each with a private address.
pub const CLUSTER: &str = "name = \"t\"\n\
    [[hosts]]\nname = \"storage-1\"\naddress = \"203.0.113.10\"\nprivate_ip = \"10.0.0.10\"\nroles = [\"storage\"]\n\
    [[hosts]]\nname = \"manager-1\"\naddress = \"203.0.113.11\"\nprivate_ip = \"10.0.0.11\"\nroles = [\"manager\"]\n\
    [[hosts]]\nname = \"worker-1\"\naddress = \"203.0.113.21\"\nprivate_ip = \"10.0.0.21\"\nroles = [\"worker\"]\n\
    [[hosts]]\nname = \"lb-1\"\naddress = \"203.0.113.30\"\nprivate_ip = \"10.0.0.30\"\nroles = [\"lb\"]\n";

/// `ctor` over `with` for `host` of the inventory `cluster` (its first host when there is no
/// such host). Templates render as they are written; nothing is a secret.
pub fn build_in(ctor: HostStepCtor, cluster: &str, host: &str, with: &str) -> Built {
    let inv = Inventory::parse(cluster, Path::new("c.toml"), &Default::default()).unwrap();
    let render = |_: &str, b: &str| Ok(b.to_string());
    let has_secret = |_: &str| false;
    let ctx = BuildCtx {
        host: inv.host(host).unwrap_or(&inv.hosts[0]),
        inventory: &inv,
        base_dir: Path::new("."),
        render: &render,
        has_secret: &has_secret,
        warn: &|_, _| {},
    };
    ctor(&toml::from_str(with).unwrap(), &ctx)
}

/// A file's facts: absent, or root's 0644 file with this content.
pub fn file_facts(content: Option<&str>) -> String {
    match content {
        None => "kind=absent\n".into(),
        Some(c) => format!(
            "kind=file\nattrs=644 root root 0 0 {}\nsha256={}\ncontent={}\n",
            c.len(),
            util::sha256_hex(c.as_bytes()),
            util::base64_encode(c.as_bytes())
        ),
    }
}

/// The summaries of a plan's changes.
pub fn summaries(c: &Check) -> Vec<&str> {
    let Check::Change(c) = c else {
        panic!("expected changes, got {c:?}")
    };
    c.iter().map(|c| c.summary.as_str()).collect()
}

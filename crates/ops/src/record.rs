//! The cluster's last good state: after each successful `provision run` the swarm's id and
//! members are kept in `.provision/last-good.json` next to the cluster file (ignored by git), so
//! that status and the day-2 commands can name the swarm and count its managers when no leader
//! answers (a leaderless manager can list no nodes, and its own count may be stale).

use provision_engine::inventory::Inventory;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file's name inside `.provision/`.
pub const FILE: &str = "last-good.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastGood {
    /// The swarm's full id (Docker's cluster id).
    pub swarm_id: String,
    /// When it was recorded: seconds since the Unix epoch.
    pub recorded_at: u64,
    /// Inventory names of the swarm's managers and workers then (nodes outside the inventory
    /// by their hostname).
    pub managers: Vec<String>,
    pub workers: Vec<String>,
}

impl LastGood {
    /// The id as status shows it (12 characters, as Docker does).
    pub fn short_id(&self) -> &str {
        self.swarm_id.get(..12).unwrap_or(&self.swarm_id)
    }
}

/// Where the record of the cluster file's cluster lives.
pub fn path(inv: &Inventory) -> PathBuf {
    inv.dir.join(".provision").join(FILE)
}

/// The record, if there is a readable one (a missing or damaged file is no record: it only
/// ever adds to what the hosts say).
pub fn load(path: &Path) -> Option<LastGood> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the record atomically (a temporary file beside it, then a rename): a run killed
/// while writing leaves the previous record, never half of one.
pub fn save(path: &Path, record: &LastGood) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(record).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_whole_and_read_back_and_a_damaged_file_is_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        assert_eq!(load(&p), None);
        let r = LastGood {
            swarm_id: "pgrthigctdiqz0b5x3lm9hkq2".into(),
            recorded_at: 1_765_000_000,
            managers: vec!["manager-1".into(), "manager-2".into(), "manager-3".into()],
            workers: vec!["worker-1".into()],
        };
        save(&p, &r).unwrap();
        assert_eq!(load(&p), Some(r.clone()));
        assert_eq!(r.short_id(), "pgrthigctdiq");
        assert!(!dir.path().join("last-good.json.tmp").exists());
        std::fs::write(&p, "{\"swarm_id\": ").unwrap();
        assert_eq!(load(&p), None);
    }
}

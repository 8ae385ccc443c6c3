//! What every swarm step and day-2 operation shares about Docker swarm: the closed sets of
//! values a node reports ([`node`]), the command lines ([`commands`]), and the frame of a
//! step that plans from THE swarm ([`step`]); the gather, parser and view of the swarm are
//! `steps::swarm_facts`.

pub mod commands;
pub mod node;
pub mod step;

#[cfg(test)]
pub(crate) mod testing {
    /// Writes an executable stand-in (for `docker`, `curl`) that a script run
    /// locally finds first on PATH.
    pub fn write_executable(path: &std::path::Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

//! Which host programs the lab needs, where they come from in Debian, and the up-front check.

use crate::error::{LabError, MissingProgram, Result};
use std::path::{Path, PathBuf};

/// A host program and the Debian package that ships it.
pub type Program = MissingProgram;

/// Needed to boot and reach VMs.
pub const BOOT_PROGRAMS: [Program; 4] = [
    Program {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
    },
    Program {
        program: "qemu-img",
        package: "qemu-utils",
    },
    Program {
        program: "ssh",
        package: "openssh-client",
    },
    Program {
        program: "ssh-keygen",
        package: "openssh-client",
    },
];

/// Needed only to build the base image (once per recipe).
pub const BUILD_PROGRAMS: [Program; 2] = [
    Program {
        program: "debootstrap",
        package: "debootstrap",
    },
    Program {
        program: "mkfs.ext4",
        package: "e2fsprogs",
    },
];

/// Finds a program on PATH, then in /usr/sbin and /sbin (not on a normal user's PATH on Debian).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks that every program is installed; the error lists the missing ones with their packages.
pub fn check(programs: &[Program]) -> Result<()> {
    check_with(
        programs,
        &|name| find_program(name).is_some(),
        host_is_bookworm(),
    )
}

/// Checks everything the lab may need (boot and image build).
pub fn check_all() -> Result<()> {
    let all: Vec<Program> = BOOT_PROGRAMS
        .iter()
        .chain(BUILD_PROGRAMS.iter())
        .cloned()
        .collect();
    check(&all)
}

pub(crate) fn check_with(
    programs: &[Program],
    found: &dyn Fn(&str) -> bool,
    bookworm: bool,
) -> Result<()> {
    let missing: Vec<Program> = programs
        .iter()
        .filter(|p| !found(p.program))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::MissingPrerequisites { missing, bookworm })
    }
}

fn host_is_bookworm() -> bool {
    std::fs::read_to_string("/etc/os-release")
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "VERSION_CODENAME=bookworm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_missing_programs() {
        let all: Vec<Program> = BOOT_PROGRAMS
            .iter()
            .chain(BUILD_PROGRAMS.iter())
            .cloned()
            .collect();
        assert!(check_with(&all, &|_| true, true).is_ok());
        let err =
            check_with(&all, &|p| p != "debootstrap" && p != "ssh-keygen", false).unwrap_err();
        match &err {
            LabError::MissingPrerequisites { missing, .. } => {
                let names: Vec<&str> = missing.iter().map(|m| m.program).collect();
                assert_eq!(names, ["ssh-keygen", "debootstrap"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("apt-get install openssh-client debootstrap")
        );
    }

    #[test]
    fn finds_programs_in_sbin() {
        // mkfs.ext4 lives in /usr/sbin, which a non-root PATH lacks; sh is always there.
        assert!(find_program("sh").is_some());
        assert!(find_program("provision-lab-no-such-program").is_none());
    }
}

//! What the steps that manage system files (swap, hostname, docker, nfs_server, nfs_mount,
//! load_balancer) share: their `build` reads and writes the real files, their `build_with`
//! takes a `Files` naming them, so tests build the same step over temporary paths.

use crate::ctx::ParamError;
use provision_engine::step::HostStep;

/// What a step constructor returns: the step, or what is wrong with its parameters.
pub type Built = Result<Box<dyn HostStep>, ParamError>;

/// Declares the step's `pub struct Files`: a `String` field per system file it reads or
/// writes, whose `Default` is the file's real path (field docs are kept).
macro_rules! system_files {
    ($($(#[$doc:meta])* $field:ident: $path:literal),+ $(,)?) => {
        /// The system files the step reads and writes; tests point them elsewhere.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Files {
            $($(#[$doc])* pub $field: String,)+
        }

        impl Default for Files {
            fn default() -> Self {
                Files {
                    $($field: $path.into(),)+
                }
            }
        }
    };
}

pub(crate) use system_files;

#[cfg(test)]
mod tests {
    system_files! {
        /// A field's doc stays on the field.
        first: "/etc/first",
        second: "/var/lib/second",
    }

    #[test]
    fn files_default_to_the_real_paths() {
        assert_eq!(
            Files::default(),
            Files {
                first: "/etc/first".into(),
                second: "/var/lib/second".into(),
            }
        );
    }
}

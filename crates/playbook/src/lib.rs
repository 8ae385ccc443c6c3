//! The built-in steps of provision and the compiler that turns an inventory plus a
//! playbook file into the ordered list of steps the engine runs.
//!
//! Steps never run commands: they build command strings (quoted with
//! `provision_transport::shell::quote`) and return them in plans.

pub mod compile;
pub mod ctx;
pub mod declared_secrets;
pub mod lab_ready;
pub mod registry;
pub mod select;
pub mod steps;
pub mod swarm;

pub use compile::{Compiled, compile};
pub use ctx::{BuildCtx, ParamError, test_inventory};
pub use registry::known_steps;

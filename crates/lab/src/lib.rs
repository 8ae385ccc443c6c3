//! Local lab of real Debian VMs under qemu, reached over SSH on 127.0.0.1.
//!
//! `Lab::up` builds (once, cached by recipe) a bare Debian base image with debootstrap, boots one
//! qemu VM per `LabSpec` entry on copy-on-write overlays, each with SSH forwarded on 127.0.0.1
//! and a private network shared by the lab's VMs, pins their host keys from the serial console,
//! and writes a `cluster.toml` inventory for them. See README.md for LAB.toml and the layout.
//!
//! Every external program is run from an argv built by a pure function in [`argv`].
// The lab prints its own progress and clean-up notes (`Progress::stderr`, `Drop`): it holds
// no secrets (throw-away VMs, keys it made itself), and `provision lab` is its only caller.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

pub mod accel;
pub mod aptcache;
pub mod argv;
mod error;
pub mod hostkeys;
pub mod image;
pub mod inventory;
mod lab;
pub mod layer;
pub mod net;
pub mod paths;
pub mod prereq;
pub mod process;
pub mod recipe;
pub mod spec;

pub use accel::{Accel, AccelChoice};
pub use error::{LabError, MissingProgram, Result};
pub use lab::{
    DEFAULT_BOOT_TIMEOUT, DownReport, DropPolicy, Lab, OnDrop, Progress, STATE_FILE, UpOptions, Vm,
    VmStatus, down_dir,
};
pub use layer::{Provisioner, ReadyLayer};
pub use spec::{LabSpec, LayerName, Role, Subnet, VmSpec};

//! The engine of provision: inventory and playbook files, steps as pure checks over
//! gathered facts, and a runner that applies plans on many hosts through the transport.
//!
//! The engine never imports russh: it talks to hosts only through
//! `provision_transport::{Transport, Connector}`.

pub mod diagnostic;
pub mod event;
pub mod fact;
pub mod facts;
pub mod handlers;
pub mod host_facts;
pub mod inventory;
pub mod pipeline;
pub mod playbook_file;
pub mod registered;
pub mod rollout;
pub mod runner;
pub mod selector;
pub mod step;
pub mod template;

pub use event::{Event, EventSink, HostStatus};
pub use runner::{RunOptions, Runner};
pub use step::{Action, Change, Check, Facts, HostStep, Step, StepPlan};

//! EFFECTS: the only code that touches servers and their APIs. Runs
//! `RemoteCmd` values built by `plan`; never builds commands from input.

pub mod dns;
pub mod fake;
pub mod fleet;
pub mod local;
pub mod pdns;
pub mod remote;
pub mod ssh;

pub use fleet::Fleet;
pub use remote::{CmdOutput, ExecError, Remote, RunningCmd, StreamExit};

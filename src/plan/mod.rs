//! PURE planning: turns inputs and observations into commands and plans.
//! No async, no I/O, no clock, no randomness — everything here is tested
//! without a server.

pub mod backup;
pub mod caddy;
pub mod cmd;
pub mod deploy;
pub mod dns;
pub mod drift;
pub mod env;
pub mod envvars;
pub mod files;
pub mod health;
pub mod names;
pub mod pg;
pub mod podman;
pub mod policy;
pub mod project_delete;
pub mod restore;
pub mod storage;
pub mod switch;

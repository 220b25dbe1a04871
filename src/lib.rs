//! codeb: a self-hosted blue-green deployment platform driven through MCP.
//!
//! Codemap — each module's role, and what it must not do:
//! - `config`: TOML + `CODEB_*` overrides, validated; never holds secrets from the TOML.
//! - `model`: plain data and validators; no I/O.
//! - `plan`: PURE command builders and plans; no async, no I/O, no clock.
//! - `exec`: the only code that touches servers (SSH, local, fake); builds no commands from input.
//! - `state`: PostgreSQL through sqlx with embedded migrations; no business rules.
//! - `ops`: operations that observe, plan and apply, called by tool handlers.
//! - `mcp`: the MCP server, one file per tool; handlers stay thin.
//! - `auth`: API keys, tool roles, key verification; no HTTP and no tool logic.
//! - `cli`: the command line (`serve`, `migrate`, `health`, `schemas`).

pub mod auth;
pub mod cli;
pub mod config;
pub mod exec;
pub mod mcp;
pub mod model;
pub mod ops;
pub mod plan;
pub mod state;

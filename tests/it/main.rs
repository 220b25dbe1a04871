//! codeb's integration tests: one binary, a module per area. Everything
//! here runs against the real testbed (`tools/testbed up`) and the real
//! binary; `tools/test` brings the testbed up and sets DATABASE_URL.

mod app_host;
mod audit;
mod auth;
mod backups;
mod caddy;
mod cli;
mod common;
mod critical;
mod db;
mod domains;
mod drift;
mod env;
mod faults;
mod files;
mod injection;
mod leases;
mod lifecycle;
mod lifecycle_faults;
mod matrix;
mod mcp_http;
mod mcp_stdio;
mod names;
mod pdns;
mod podman_cmds;
mod policy;
mod project_delete;
mod redaction;
mod restore;
mod schemas;
mod secrets;
mod ssh_control;
mod storage;
mod tenant_attacks;
mod validators;
mod zero_downtime;

//! Operations: observe state and servers, plan, apply. Tool handlers call
//! these; these call `state`, `plan` and `exec`.

pub mod caddy;
pub mod health;
pub mod observe;
pub mod slots;

use std::sync::Arc;

use crate::config::Config;
use crate::exec::Fleet;
use crate::state::Db;

/// Shared context of a running codeb: built once, cloned into every
/// MCP session.
pub struct Ctx {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Executors per server.
    pub fleet: Fleet,
    /// State database.
    pub db: Db,
    /// Briefly cached observations of the servers.
    pub observer: observe::Observer,
}

impl Ctx {
    /// Context from config; opens no connection.
    pub fn new(config: Config) -> Self {
        let fleet = Fleet::from_config(&config);
        let db = Db::from_config(&config);
        Self::from_parts(config, fleet, db)
    }

    /// Context from given parts (tests use a fake fleet).
    pub fn from_parts(config: Config, fleet: Fleet, db: Db) -> Self {
        Self {
            config: Arc::new(config),
            fleet,
            db,
            observer: observe::Observer::default(),
        }
    }
}

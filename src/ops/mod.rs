//! Operations: observe state and servers, plan, apply. Tool handlers call
//! these; these call `state`, `plan` and `exec`.

pub mod health;
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
}

impl Ctx {
    /// Context from config; opens no connection.
    pub fn new(config: Config) -> Self {
        let fleet = Fleet::from_config(&config);
        let db = Db::from_config(&config);
        Self {
            config: Arc::new(config),
            fleet,
            db,
        }
    }
}

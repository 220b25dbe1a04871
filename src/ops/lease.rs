//! The lease of a running operation (DESIGN §7). A heartbeat task renews
//! it while the operation runs. However the operation's task ends —
//! finished, failed, cancelled or panicked — the heartbeat stops with it:
//! dropping the `LeaseKeeper` unfinished gives the lease up at once, so the
//! next operation on the (project, environment) recovers the abandoned one
//! instead of finding it busy until codeb restarts.

use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::state::deployments as journal;
use crate::state::Db;

/// Keeps one operation's lease alive; see the module docs.
pub struct LeaseKeeper {
    /// Cancelled when the keeper is dropped unfinished: the heartbeat task
    /// then gives the lease up. Disarmed by `finish`.
    give_up: Option<DropGuard>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Renews the lease of operation `id` (fencing token `token`) to
    /// `lease` from now, every `every`, until finished or dropped.
    pub fn start(db: Db, id: Uuid, token: i64, lease: Duration, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let heartbeat = {
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.cancelled() => {
                            give_up(&db, id, token).await;
                            return;
                        }
                    }
                    let Ok(pool) = db.pool().await else { continue };
                    match journal::deployment_heartbeat(pool, id, token, lease).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => tracing::warn!(%id, error = %e, "lease heartbeat failed"),
                    }
                }
            })
        };
        Self {
            give_up: Some(stop.drop_guard()),
            heartbeat,
        }
    }

    /// The operation is recording its end itself: stop renewing without
    /// giving the lease up (the record's status ends it).
    pub fn finish(mut self) {
        if let Some(guard) = self.give_up.take() {
            guard.disarm();
        }
        self.heartbeat.abort();
    }
}

/// Ends the lease of an operation that stopped without recording its end.
async fn give_up(db: &Db, id: Uuid, token: i64) {
    let released = match db.pool().await {
        Ok(pool) => journal::deployment_give_up_lease(pool, id, token).await,
        Err(e) => Err(e),
    };
    match released {
        Ok(true) => {
            tracing::warn!(%id, "operation ended without finishing; its lease is given up for recovery")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(%id, error = %e, "could not give up the lease of an abandoned operation; it expires by itself")
        }
    }
}

//! Shared observations of the servers, cached briefly so that read-only
//! tools called at a high rate cost one `podman ps` per interval instead of
//! one per call. Refreshes are single-flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::exec::Fleet;
use crate::model::ServerRole;
use crate::plan::podman::{self, Container};

/// How old a container listing may be before it is taken again.
pub const CONTAINER_OBSERVATION_TTL: Duration = Duration::from_secs(1);

/// A container listing of the app server and when it was taken.
#[derive(Debug, Clone)]
pub struct ContainerSnapshot {
    /// Every codeb-labelled container.
    pub containers: Arc<Vec<Container>>,
    /// When the listing finished.
    pub taken_at: Instant,
}

/// The cache of container listings.
#[derive(Default)]
pub struct Observer {
    containers: Mutex<Option<ContainerSnapshot>>,
}

impl Observer {
    /// The app server's codeb containers, at most `CONTAINER_OBSERVATION_TTL` old.
    pub async fn containers(&self, fleet: &Fleet) -> Result<ContainerSnapshot, String> {
        // Holding the lock across the refresh makes concurrent callers wait
        // for one listing instead of each starting their own.
        let mut guard = self.containers.lock().await;
        if let Some(s) = guard.as_ref() {
            if s.taken_at.elapsed() < CONTAINER_OBSERVATION_TTL {
                return Ok(s.clone());
            }
        }
        let (_, remote) = fleet
            .for_role(ServerRole::App)
            .ok_or("no app server configured")?;
        let cmd = podman::ps(None).map_err(|e| e.to_string())?;
        let out = remote.run(&cmd).await.map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!("podman ps failed: {}", out.stderr_tail()));
        }
        let snapshot = ContainerSnapshot {
            containers: Arc::new(podman::parse_ps(&out.stdout_text())?),
            taken_at: Instant::now(),
        };
        *guard = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Forgets the cached listing (after codeb changed containers itself).
    pub async fn invalidate(&self) {
        self.containers.lock().await.take();
    }
}

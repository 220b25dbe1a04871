//! Shared observations of the servers, cached briefly so that read-only
//! tools called at a high rate cost one `podman ps` per interval instead of
//! one per call. A stale listing is served while one background refresh
//! runs (single-flight), so callers do not queue behind an SSH round trip;
//! only the very first caller waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::exec::Fleet;
use crate::model::ServerRole;
use crate::plan::podman::{self, Container};

/// How old a container listing may be before a refresh starts.
pub const CONTAINER_OBSERVATION_TTL: Duration = Duration::from_secs(1);
/// A listing older than this is never served; callers wait for a fresh one.
pub const CONTAINER_OBSERVATION_MAX_AGE: Duration = Duration::from_secs(10);

/// A container listing of the app server and when it was taken.
#[derive(Debug, Clone)]
pub struct ContainerSnapshot {
    /// Every codeb-labelled container.
    pub containers: Arc<Vec<Container>>,
    /// When the listing finished.
    pub taken_at: Instant,
}

#[derive(Default)]
struct Inner {
    latest: std::sync::Mutex<Option<ContainerSnapshot>>,
    /// Held by whoever is listing; others either serve the stale listing
    /// or wait here for the fresh one.
    refresh: Arc<tokio::sync::Mutex<()>>,
}

/// The cache of container listings.
#[derive(Default, Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

impl Observer {
    fn cached(&self) -> Option<ContainerSnapshot> {
        self.inner.latest.lock().expect("observer lock").clone()
    }

    /// The app server's codeb containers: fresh, or at most
    /// `CONTAINER_OBSERVATION_MAX_AGE` old while a refresh runs.
    pub async fn containers(&self, fleet: &Fleet) -> Result<ContainerSnapshot, String> {
        if let Some(s) = self.cached() {
            let age = s.taken_at.elapsed();
            if age < CONTAINER_OBSERVATION_TTL {
                return Ok(s);
            }
            if age < CONTAINER_OBSERVATION_MAX_AGE {
                if let Ok(guard) = self.inner.refresh.clone().try_lock_owned() {
                    let this = self.clone();
                    let fleet = fleet.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        if let Err(e) = this.list(&fleet).await {
                            tracing::debug!(error = %e, "background container listing failed");
                        }
                    });
                }
                return Ok(s);
            }
        }
        let _guard = self.inner.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(s) = self
            .cached()
            .filter(|s| s.taken_at.elapsed() < CONTAINER_OBSERVATION_TTL)
        {
            return Ok(s);
        }
        self.list(fleet).await
    }

    async fn list(&self, fleet: &Fleet) -> Result<ContainerSnapshot, String> {
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
        *self.inner.latest.lock().expect("observer lock") = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Forgets the cached listing (after codeb changed containers itself).
    pub fn invalidate(&self) {
        self.inner.latest.lock().expect("observer lock").take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use crate::exec::fake::{FakeAnswer, FakeRemote};
    use crate::exec::Remote;

    fn fleet(fake: Arc<FakeRemote>) -> Fleet {
        let server = ServerConfig {
            name: "app".into(),
            roles: vec![ServerRole::App],
            address: "local".into(),
            ssh_port: 22,
            ssh_user: "root".into(),
            ssh_key_file: None,
            known_hosts_file: None,
        };
        Fleet::from_parts(vec![(server, fake as Arc<dyn Remote>)])
    }

    #[tokio::test]
    async fn listing_is_shared_within_the_ttl() {
        let fake = Arc::new(FakeRemote::new(
            "app",
            vec![(
                "podman",
                FakeAnswer::Output(
                    0,
                    r#"[{"Names":["a-production-blue"],"State":"running"}]"#.into(),
                ),
            )],
        ));
        let fleet = fleet(fake.clone());
        let obs = Observer::default();
        let a = obs.containers(&fleet).await.unwrap();
        let b = obs.containers(&fleet).await.unwrap();
        assert_eq!(a.containers.len(), 1);
        assert!(Arc::ptr_eq(&a.containers, &b.containers));
        assert_eq!(
            fake.calls.lock().unwrap().len(),
            1,
            "one podman ps for both callers"
        );
        obs.invalidate();
        obs.containers(&fleet).await.unwrap();
        assert_eq!(
            fake.calls.lock().unwrap().len(),
            2,
            "invalidate forces a new listing"
        );
    }

    #[tokio::test]
    async fn failure_is_reported_not_cached() {
        let fake = Arc::new(FakeRemote::new(
            "app",
            vec![("podman", FakeAnswer::Unreachable)],
        ));
        let fleet = fleet(fake.clone());
        let obs = Observer::default();
        assert!(obs
            .containers(&fleet)
            .await
            .unwrap_err()
            .contains("unreachable"));
        assert!(obs.containers(&fleet).await.is_err());
        assert_eq!(fake.calls.lock().unwrap().len(), 2);
    }
}

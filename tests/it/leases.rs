//! The operation runtime's lease (DESIGN §7): an operation whose task
//! ends without recording its end — here, a panic in the middle of a
//! deploy — gives its lease up at once, so the (project, environment) is
//! not busy until codeb restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codeb::exec::{CmdOutput, ExecError, Fleet, Remote, RunningCmd};
use codeb::model::Environment;
use codeb::ops::lifecycle::{deploy, Caller};
use codeb::ops::Ctx;
use codeb::plan::cmd::RemoteCmd;
use codeb::state::deployments::{deployment_begin, Begin, NewDeployment};
use tokio_util::sync::CancellationToken;

use super::common::{testbed, unique_project, FreshStateDb, FAULT_LOCK};

/// A server whose every command panics the task that runs it.
struct PanickingServer(String);

#[async_trait::async_trait]
impl Remote for PanickingServer {
    fn name(&self) -> &str {
        &self.0
    }
    async fn run(&self, cmd: &RemoteCmd) -> Result<CmdOutput, ExecError> {
        panic!("test: `{}` panics on {}", cmd.program, self.0)
    }
    async fn close(&self) {}
    async fn forward_tcp(
        &self,
        remote: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr, ExecError> {
        panic!("test: forward to {remote} panics on {}", self.0)
    }
    async fn spawn(&self, cmd: &RemoteCmd) -> Result<Box<dyn RunningCmd>, ExecError> {
        panic!("test: `{}` panics on {}", cmd.program, self.0)
    }
}

/// The lease of a deploy whose task panicked runs out within one heartbeat
/// instead of being renewed forever, and the next operation finds the
/// environment free (it recovers the abandoned one).
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_operation_gives_its_lease_up() {
    // Fault tests cut the storage host: not while this one polls the database.
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("lease").await;
    let mut config = state.config();
    // A long lease (heartbeat every 10 s): without the guard it would stay
    // alive far past the deadline below.
    config.lifecycle.lease_secs = 30;
    let servers = config.servers.clone();
    let mut ctx = Ctx::new(config);
    ctx.fleet = Fleet::from_parts(
        servers
            .into_iter()
            .map(|s| {
                let remote: Arc<dyn Remote> = Arc::new(PanickingServer(s.name.clone()));
                (s, remote)
            })
            .collect(),
    );
    ctx.db
        .migrate()
        .await
        .expect("migrate the fresh state database");
    let ctx = Arc::new(ctx);
    let pool = ctx.db.pool().await.unwrap().clone();
    let project = unique_project("lease");
    codeb::state::projects::project_insert(&pool, &project, "default", "node")
        .await
        .unwrap();
    let image = format!("{}/demo:v1", testbed().status["registry"].as_str().unwrap());

    let task = {
        let (ctx, project, image) = (ctx.clone(), project.clone(), image.clone());
        tokio::spawn(async move {
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            deploy(
                &ctx,
                &project,
                Environment::Staging,
                &image,
                None,
                None,
                false,
                &Caller::local_owner(),
                tx,
                CancellationToken::new(),
            )
            .await
        })
    };
    let joined = task.await;
    assert!(
        joined.as_ref().is_err_and(|e| e.is_panic()),
        "the deploy task panicked: {:?}",
        joined.map(|r| r.map(|_| ()))
    );
    let (id, status): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, status FROM deployments WHERE operation = 'deploy'")
            .fetch_one(&pool)
            .await
            .expect("the deploy was recorded before it panicked");
    assert_eq!(status, "running", "nothing recorded its end");
    // One heartbeat (10 s) is the promise; the lease itself lasts 30 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let expired: bool =
            sqlx::query_scalar("SELECT lease_expires_at <= now() FROM deployments WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        if expired {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned deploy's lease is still being renewed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next operation on the environment is not refused as busy: it
    // starts and recovers the abandoned one.
    let project_id: i64 = sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
        .bind(&project)
        .fetch_one(&pool)
        .await
        .unwrap();
    let next = NewDeployment {
        id: uuid::Uuid::new_v4(),
        project_id,
        environment: "staging",
        operation: "env_sync",
        slot: None,
        image: None,
        idempotency_key: None,
        principal: "test",
        reason: None,
        lease_owner: "test",
        lease: Duration::from_secs(30),
    };
    match deployment_begin(&pool, &next).await.unwrap() {
        Begin::Started { recovered, .. } => assert!(
            recovered.iter().any(|r| r.id == id),
            "the abandoned deploy was recovered: {recovered:?}"
        ),
        other => panic!("the environment is still busy: {other:?}"),
    }
    pool.close().await;
    state.drop().await;
}

//! The testbed's app host through codeb's own SSH executor, and cleanup
//! that runs even when a test fails.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use codeb::exec::{CmdOutput, Fleet, Remote};
use codeb::model::ServerRole;
use codeb::plan::cmd::RemoteCmd;
use futures::FutureExt;

use super::common::testbed;

/// The fleet of the testbed config and the app server's executor (a real
/// `SshRemote`). Close the fleet when done.
pub fn app_remote() -> (Fleet, Arc<dyn Remote>) {
    let config = codeb::config::Config::load(&testbed().config).expect("load the testbed config");
    let fleet = Fleet::from_config(&config);
    let remote = fleet
        .for_role(ServerRole::App)
        .expect("the testbed has an app server")
        .1
        .clone();
    (fleet, remote)
}

/// Runs `cmd` and returns its output, panicking on a transport error.
pub async fn run(remote: &dyn Remote, cmd: &RemoteCmd) -> CmdOutput {
    remote
        .run(cmd)
        .await
        .unwrap_or_else(|e| panic!("`{cmd}` could not run: {e}"))
}

/// Runs `cmd` and insists on exit status 0.
pub async fn run_ok(remote: &dyn Remote, cmd: &RemoteCmd) -> CmdOutput {
    let out = run(remote, cmd).await;
    assert!(
        out.success(),
        "`{cmd}` exited {:?}: {}",
        out.status,
        out.stderr_tail()
    );
    out
}

/// A test-owned directory on the app host, `/opt/codeb/wtp-{what}-{id}`.
pub fn unique_dir(what: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("/opt/codeb/wtp-{what}-{}", &id[..8])
}

/// `rm -rf -- DIR` for a test-owned directory under /opt/codeb/wtp-*.
pub fn remove_dir(dir: &str) -> RemoteCmd {
    assert!(dir.starts_with("/opt/codeb/wtp-"), "{dir}");
    RemoteCmd::new("rm").args(["-rf", "--"]).arg(dir)
}

/// Runs `body`, then `cleanup` whether `body` passed or panicked, then
/// re-raises the panic.
pub async fn with_cleanup<B, C>(body: B, cleanup: C)
where
    B: Future<Output = ()>,
    C: Future<Output = ()>,
{
    let result = AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

//! Running long operations for MCP: the operation runs in its own task so
//! a client that goes away cannot leave it half-done; progress becomes MCP
//! progress notifications per phase and at least every 5 s.

use std::future::Future;
use std::time::Duration;

use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::lifecycle::{Progress, ProgressTx};

/// Longest silence between two progress notifications.
pub const PROGRESS_HEARTBEAT: Duration = Duration::from_secs(5);

/// Runs `make(progress, abort)` to completion. `abort` fires when the
/// client cancels the request or this future is dropped (disconnect); the
/// operation decides what that means (before the switch: stop cleanly;
/// after: finish).
pub async fn run_long<T, F>(
    context: &RequestContext<RoleServer>,
    make: impl FnOnce(ProgressTx, CancellationToken) -> F,
) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let abort = CancellationToken::new();
    let guard = abort.clone().drop_guard();
    let token = context.meta.get_progress_token();
    let peer = context.peer.clone();
    let mut task = tokio::spawn(make(tx, abort.clone()));
    let mut last: Option<Progress> = None;
    let mut heartbeat = tokio::time::interval(PROGRESS_HEARTBEAT);
    heartbeat.tick().await;
    let send = |p: &Progress| {
        let peer = peer.clone();
        let token = token.clone();
        let p = p.clone();
        async move {
            if let Some(token) = token {
                let param = ProgressNotificationParam::new(token, f64::from(p.phase))
                    .with_total(f64::from(p.total))
                    .with_message(p.message);
                let _ = peer.notify_progress(param).await;
            }
        }
    };
    loop {
        tokio::select! {
            r = &mut task => {
                // Deliver progress sent just before the end.
                while let Ok(p) = rx.try_recv() {
                    send(&p).await;
                }
                guard.disarm();
                return r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            }
            Some(p) = rx.recv() => {
                send(&p).await;
                last = Some(p);
                heartbeat.reset();
            }
            _ = heartbeat.tick() => {
                if let Some(p) = &last {
                    send(&Progress { message: format!("{} (still running)", p.message), ..p.clone() }).await;
                }
            }
            _ = context.ct.cancelled(), if !abort.is_cancelled() => {
                abort.cancel();
            }
        }
    }
}

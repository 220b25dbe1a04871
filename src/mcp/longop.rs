//! Running long operations for MCP: the operation runs in its own task so
//! a client that goes away cannot leave it half-done; progress becomes MCP
//! progress notifications per phase and at least every 5 s.
//!
//! MCP requires the progress value to increase with every notification.
//! A phase starts at its number (phase 3 of 8 → 3.0); reports within the
//! same phase (heartbeats, "still waiting") climb towards the next number
//! without reaching it (3.5, 3.667, 3.75, ...), so `floor(progress)` is
//! always the phase.

use std::future::Future;

use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::ops::lifecycle::PROGRESS_HEARTBEAT;
use crate::ops::lifecycle::{Progress, ProgressTx};

/// Turns phase reports into strictly increasing progress values.
#[derive(Debug, Default)]
struct ProgressValues {
    phase: u32,
    repeats: u32,
}

impl ProgressValues {
    /// The value for the next report of `phase`.
    fn next(&mut self, phase: u32) -> f64 {
        if phase > self.phase {
            self.phase = phase;
            self.repeats = 0;
        } else {
            self.repeats = self.repeats.saturating_add(1);
        }
        let k = f64::from(self.repeats);
        f64::from(self.phase) + k / (k + 1.0)
    }
}

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
    let mut values = ProgressValues::default();
    let mut send = |p: &Progress| {
        let peer = peer.clone();
        let token = token.clone();
        let p = p.clone();
        let value = values.next(p.phase);
        async move {
            if let Some(token) = token {
                let param = ProgressNotificationParam::new(token, value)
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

#[cfg(test)]
mod tests {
    use super::ProgressValues;

    #[test]
    fn progress_values_increase_and_keep_the_phase() {
        let mut v = ProgressValues::default();
        let seen: Vec<f64> = [1, 2, 2, 2, 3, 3, 4].iter().map(|p| v.next(*p)).collect();
        assert_eq!(seen[0], 1.0);
        assert_eq!(seen[1], 2.0);
        assert_eq!(seen[4], 3.0);
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
        let phases: Vec<u32> = seen.iter().map(|x| x.floor() as u32).collect();
        assert_eq!(phases, vec![1, 2, 2, 2, 3, 3, 4]);
        // Many heartbeats in one phase still stay below the next phase.
        for _ in 0..100_000 {
            let x = v.next(4);
            assert!(x > 4.0 && x < 5.0);
        }
    }
}

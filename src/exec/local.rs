//! Local executor: the same commands as local processes, for a server that
//! codeb runs on (`address = "local"`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::exec::remote::{effective_timeout, write_stdin, CmdOutput, ExecError, Remote};
use crate::plan::cmd::RemoteCmd;

/// Runs commands as child processes of codeb.
pub struct LocalRemote {
    name: String,
    command_timeout: Duration,
    slots: Semaphore,
}

impl LocalRemote {
    /// A local server named `name`.
    pub fn new(name: &str, command_timeout: Duration, max_parallel: usize) -> Self {
        Self {
            name: name.to_string(),
            command_timeout,
            slots: Semaphore::new(max_parallel),
        }
    }
}

#[async_trait]
impl Remote for LocalRemote {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, cmd: &RemoteCmd) -> Result<CmdOutput, ExecError> {
        let limit = effective_timeout(cmd, self.command_timeout);
        let _permit = self
            .slots
            .acquire()
            .await
            .expect("semaphore is never closed");
        let started = Instant::now();
        let mut child = tokio::process::Command::new(cmd.program)
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Transport {
                server: self.name.clone(),
                program: cmd.program.to_string(),
                message: e.to_string(),
            })?;
        let writer = child.stdin.take();
        // Feed stdin while the output is read, so neither side can block
        // the other on a full pipe.
        let io = async {
            let (_, out) = tokio::join!(
                write_stdin(writer, cmd.stdin.as_deref()),
                child.wait_with_output()
            );
            out
        };
        match tokio::time::timeout(limit, io).await {
            Ok(Ok(out)) => Ok(CmdOutput {
                status: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
                duration: started.elapsed(),
            }),
            Ok(Err(e)) => Err(ExecError::Transport {
                server: self.name.clone(),
                program: cmd.program.to_string(),
                message: e.to_string(),
            }),
            Err(_) => Err(ExecError::Timeout {
                server: self.name.clone(),
                program: cmd.program.to_string(),
                secs: limit.as_secs(),
            }),
        }
    }

    async fn close(&self) {}

    /// codeb runs on the server: its loopback is ours.
    async fn forward_tcp(&self, remote: SocketAddr) -> Result<SocketAddr, ExecError> {
        Ok(remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_argv_without_a_shell() {
        let r = LocalRemote::new("local", Duration::from_secs(5), 2);
        let out = r
            .run(&RemoteCmd::new("echo").arg("$(id)").arg("a;b"))
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "$(id) a;b\n");
        assert!(out.success());
    }

    #[tokio::test]
    async fn pipes_stdin_while_reading_output() {
        let r = LocalRemote::new("local", Duration::from_secs(5), 2);
        // Larger than any pipe buffer: `cat` must be able to write its
        // output while the payload is still being written.
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let out = r
            .run(&RemoteCmd::new("cat").stdin(payload.clone()))
            .await
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, payload);
        // A command that ignores its stdin still finishes normally.
        let out = r.run(&RemoteCmd::new("true").stdin(payload)).await.unwrap();
        assert!(out.success());
    }

    #[tokio::test]
    async fn times_out() {
        let r = LocalRemote::new("local", Duration::from_secs(5), 2);
        let e = r
            .run(
                &RemoteCmd::new("sleep")
                    .arg("5")
                    .timeout(Duration::from_millis(200)),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
    }
}

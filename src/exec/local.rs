//! Local executor: the same commands as local processes, for a server that
//! codeb runs on (`address = "local"`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::exec::remote::{
    discard, effective_timeout, read_tail, write_stdin, CmdOutput, ExecError, Remote, RunningCmd,
    StreamExit, StreamReader, StreamWriter,
};
use crate::plan::cmd::RemoteCmd;

/// Runs commands as child processes of codeb.
pub struct LocalRemote {
    name: String,
    command_timeout: Duration,
    slots: Arc<Semaphore>,
}

impl LocalRemote {
    /// A local server named `name`.
    pub fn new(name: &str, command_timeout: Duration, max_parallel: usize) -> Self {
        Self {
            name: name.to_string(),
            command_timeout,
            slots: Arc::new(Semaphore::new(max_parallel)),
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

    async fn spawn(&self, cmd: &RemoteCmd) -> Result<Box<dyn RunningCmd>, ExecError> {
        let limit = effective_timeout(cmd, self.command_timeout);
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let started = tokio::time::Instant::now();
        let mut child = tokio::process::Command::new(cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Transport {
                server: self.name.clone(),
                program: cmd.program.to_string(),
                message: e.to_string(),
            })?;
        let stderr = tokio::spawn(read_tail(child.stderr.take().expect("piped stderr")));
        Ok(Box::new(LocalRunning {
            server: self.name.clone(),
            program: cmd.program,
            limit,
            started,
            stdout: child.stdout.take(),
            stdin: child.stdin.take(),
            child,
            stderr,
            _permit: permit,
        }))
    }
}

/// A local child process with streamed stdio.
struct LocalRunning {
    server: String,
    program: &'static str,
    limit: Duration,
    started: tokio::time::Instant,
    child: tokio::process::Child,
    stdout: Option<tokio::process::ChildStdout>,
    stdin: Option<tokio::process::ChildStdin>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl RunningCmd for LocalRunning {
    fn take_stdout(&mut self) -> Option<StreamReader> {
        self.stdout.take().map(|s| Box::new(s) as StreamReader)
    }

    fn take_stdin(&mut self) -> Option<StreamWriter> {
        self.stdin.take().map(|s| Box::new(s) as StreamWriter)
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.started + self.limit
    }

    async fn wait(mut self: Box<Self>) -> Result<StreamExit, ExecError> {
        drop(self.stdin.take());
        let deadline = self.deadline();
        let stdout = self.stdout.take();
        let status = {
            let child = &mut self.child;
            let waited = async {
                let (_, status) = tokio::join!(discard(stdout), child.wait());
                status
            };
            tokio::time::timeout_at(deadline, waited).await
        };
        match status {
            Ok(Ok(status)) => Ok(StreamExit {
                status: status.code(),
                stderr_tail: crate::exec::remote::tail_text(
                    &(&mut self.stderr).await.unwrap_or_default(),
                ),
                duration: self.started.elapsed(),
            }),
            Ok(Err(e)) => Err(ExecError::Transport {
                server: self.server.clone(),
                program: self.program.to_string(),
                message: e.to_string(),
            }),
            Err(_) => {
                let _ = self.child.start_kill();
                Err(ExecError::Timeout {
                    server: self.server.clone(),
                    program: self.program.to_string(),
                    secs: self.limit.as_secs(),
                })
            }
        }
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
    async fn streams_stdin_to_stdout_and_reports_the_exit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let r = LocalRemote::new("local", Duration::from_secs(5), 1);
        let mut cat = r.spawn(&RemoteCmd::new("cat")).await.unwrap();
        let mut out = cat.take_stdout().unwrap();
        let mut inp = cat.take_stdin().unwrap();
        assert!(cat.take_stdin().is_none(), "stdin is handed out once");
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let writer = {
            let payload = payload.clone();
            async move {
                inp.write_all(&payload).await.unwrap();
                inp.shutdown().await.unwrap();
            }
        };
        let mut got = Vec::new();
        let (_, n) = tokio::join!(writer, out.read_to_end(&mut got));
        assert_eq!(n.unwrap(), payload.len());
        assert_eq!(got, payload);
        let exit = cat.wait().await.unwrap();
        assert!(exit.success(), "{exit:?}");
        // While the command runs it holds the only slot: a second waits.
        let running = r.spawn(&RemoteCmd::new("sleep").arg("0.3")).await.unwrap();
        let second =
            tokio::time::timeout(Duration::from_millis(100), r.spawn(&RemoteCmd::new("true")))
                .await;
        assert!(second.is_err(), "the slot is held by the running command");
        running.wait().await.unwrap();
        let fail = r
            .spawn(&RemoteCmd::new("ls").arg("/nonexistent-codeb"))
            .await
            .unwrap();
        let exit = fail.wait().await.unwrap();
        assert_eq!(exit.status, Some(2));
        assert!(exit.stderr_tail.contains("nonexistent-codeb"), "{exit:?}");
    }

    #[tokio::test]
    async fn streamed_command_times_out() {
        let r = LocalRemote::new("local", Duration::from_secs(5), 1);
        let c = r
            .spawn(
                &RemoteCmd::new("sleep")
                    .arg("5")
                    .timeout(Duration::from_millis(200)),
            )
            .await
            .unwrap();
        let e = c.wait().await.unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
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

//! A fake `Remote` for fast unit tests of planning and error paths: it
//! records every command and answers from a script. It adds to the
//! real-testbed tests; it never replaces them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::exec::remote::{
    discard, CmdOutput, ExecError, Remote, RunningCmd, StreamExit, StreamReader, StreamWriter,
};
use crate::plan::cmd::RemoteCmd;

/// How the fake answers a command.
#[derive(Debug, Clone)]
pub enum FakeAnswer {
    /// Exit status and stdout.
    Output(i32, String),
    /// Exit status and stderr (a failing command's message).
    Stderr(i32, String),
    /// The server is unreachable.
    Unreachable,
    /// The command timed out.
    Timeout,
}

/// Records commands; answers by the first rule whose program matches.
pub struct FakeRemote {
    name: String,
    rules: Vec<(&'static str, FakeAnswer)>,
    /// Every command run, in order.
    pub calls: Mutex<Vec<Vec<String>>>,
    /// Port forwards it answers: server-side address → local address.
    forwards: HashMap<SocketAddr, SocketAddr>,
    /// Every `forward_tcp` request, in order.
    pub forward_calls: Mutex<Vec<SocketAddr>>,
    /// The stdin payload length of each call, in the same order (never
    /// the payload itself).
    pub stdin_lens: Mutex<Vec<Option<usize>>>,
    /// What was written to the stdin of each spawned command, in spawn
    /// order, complete once that command's `wait` returned.
    pub streamed_stdin: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl FakeRemote {
    /// A fake server answering `Output(0, "")` to anything not in `rules`.
    pub fn new(name: &str, rules: Vec<(&'static str, FakeAnswer)>) -> Self {
        Self {
            name: name.to_string(),
            rules,
            calls: Mutex::new(Vec::new()),
            forwards: HashMap::new(),
            forward_calls: Mutex::new(Vec::new()),
            stdin_lens: Mutex::new(Vec::new()),
            streamed_stdin: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn answer(&self, cmd: &RemoteCmd) -> FakeAnswer {
        self.rules
            .iter()
            .find(|(p, _)| *p == cmd.program)
            .map(|(_, a)| a.clone())
            .unwrap_or(FakeAnswer::Output(0, String::new()))
    }

    /// Answers `forward_tcp(remote)` with `local` (e.g. a test server);
    /// any other forward fails with a transport error.
    pub fn with_forward(mut self, remote: SocketAddr, local: SocketAddr) -> Self {
        self.forwards.insert(remote, local);
        self
    }
}

#[async_trait]
impl Remote for FakeRemote {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, cmd: &RemoteCmd) -> Result<CmdOutput, ExecError> {
        self.calls.lock().unwrap().push(cmd.argv());
        self.stdin_lens.lock().unwrap().push(cmd.stdin_len());
        match self.answer(cmd) {
            FakeAnswer::Output(code, out) => Ok(CmdOutput {
                status: Some(code),
                stdout: out.into_bytes(),
                stderr: Vec::new(),
                duration: Duration::from_millis(1),
            }),
            FakeAnswer::Stderr(code, err) => Ok(CmdOutput {
                status: Some(code),
                stdout: Vec::new(),
                stderr: err.into_bytes(),
                duration: Duration::from_millis(1),
            }),
            FakeAnswer::Unreachable => Err(ExecError::Unreachable {
                server: self.name.clone(),
                message: "fake: link down".into(),
            }),
            FakeAnswer::Timeout => Err(ExecError::Timeout {
                server: self.name.clone(),
                program: cmd.program.to_string(),
                secs: 4,
            }),
        }
    }

    async fn close(&self) {}

    /// Streams the answer's stdout (or stderr) and records everything
    /// written to stdin. `Unreachable` fails the spawn; `Timeout` fails
    /// the wait.
    async fn spawn(&self, cmd: &RemoteCmd) -> Result<Box<dyn RunningCmd>, ExecError> {
        self.calls.lock().unwrap().push(cmd.argv());
        self.stdin_lens.lock().unwrap().push(None);
        let (status, out, err) = match self.answer(cmd) {
            FakeAnswer::Output(code, out) => (Some(code), out, String::new()),
            FakeAnswer::Stderr(code, err) => (Some(code), String::new(), err),
            FakeAnswer::Unreachable => {
                return Err(ExecError::Unreachable {
                    server: self.name.clone(),
                    message: "fake: link down".into(),
                })
            }
            FakeAnswer::Timeout => (None, String::new(), String::new()),
        };
        // Small pipes, so a large answer really streams.
        let (mut out_w, out_r) = tokio::io::duplex(1024);
        let (in_w, mut in_r) = tokio::io::duplex(1024);
        let feeder = tokio::spawn(async move {
            let _ = out_w.write_all(out.as_bytes()).await;
            let _ = out_w.shutdown().await;
        });
        let sink = self.streamed_stdin.clone();
        let index = {
            let mut s = sink.lock().unwrap();
            s.push(Vec::new());
            s.len() - 1
        };
        let drain = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = in_r.read_to_end(&mut got).await;
            sink.lock().unwrap()[index] = got;
        });
        Ok(Box::new(FakeRunning {
            server: self.name.clone(),
            program: cmd.program,
            status,
            stderr: err,
            stdout: Some(Box::new(out_r)),
            stdin: Some(Box::new(in_w)),
            feeder,
            drain,
        }))
    }

    async fn forward_tcp(&self, remote: SocketAddr) -> Result<SocketAddr, ExecError> {
        self.forward_calls.lock().unwrap().push(remote);
        self.forwards
            .get(&remote)
            .copied()
            .ok_or_else(|| ExecError::Transport {
                server: self.name.clone(),
                program: "forward_tcp".into(),
                message: "fake: no forwarding".into(),
            })
    }
}

/// A spawned fake command.
struct FakeRunning {
    server: String,
    program: &'static str,
    /// `None`: the command times out.
    status: Option<i32>,
    stderr: String,
    stdout: Option<StreamReader>,
    stdin: Option<StreamWriter>,
    feeder: tokio::task::JoinHandle<()>,
    drain: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl RunningCmd for FakeRunning {
    fn take_stdout(&mut self) -> Option<StreamReader> {
        self.stdout.take()
    }

    fn take_stdin(&mut self) -> Option<StreamWriter> {
        self.stdin.take()
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(60)
    }

    async fn wait(mut self: Box<Self>) -> Result<StreamExit, ExecError> {
        drop(self.stdin.take());
        discard(self.stdout.take()).await;
        let _ = (&mut self.feeder).await;
        let _ = (&mut self.drain).await;
        match self.status {
            Some(code) => Ok(StreamExit {
                status: Some(code),
                stderr_tail: self.stderr.trim().to_string(),
                duration: Duration::from_millis(1),
            }),
            None => Err(ExecError::Timeout {
                server: self.server.clone(),
                program: self.program.to_string(),
                secs: 4,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_answers_and_records_stdin() {
        let big = "x".repeat(100_000);
        let f = FakeRemote::new(
            "storage",
            vec![
                ("pg_dump", FakeAnswer::Output(0, big.clone())),
                ("false", FakeAnswer::Stderr(1, "no such database\n".into())),
                ("slow", FakeAnswer::Timeout),
                ("ssh", FakeAnswer::Unreachable),
            ],
        );
        let mut dump = f.spawn(&RemoteCmd::new("pg_dump").arg("db")).await.unwrap();
        let mut sink = f.spawn(&RemoteCmd::new("install")).await.unwrap();
        let mut out = dump.take_stdout().unwrap();
        let mut inp = sink.take_stdin().unwrap();
        let copied = tokio::io::copy(&mut out, &mut inp).await.unwrap();
        inp.shutdown().await.unwrap();
        assert_eq!(copied, big.len() as u64);
        assert!(dump.wait().await.unwrap().success());
        assert!(sink.wait().await.unwrap().success());
        assert_eq!(f.streamed_stdin.lock().unwrap()[1], big.as_bytes());
        assert!(f.streamed_stdin.lock().unwrap()[0].is_empty());
        assert_eq!(
            *f.calls.lock().unwrap(),
            vec![
                vec!["pg_dump".to_string(), "db".into()],
                vec!["install".into()]
            ]
        );

        let exit = f
            .spawn(&RemoteCmd::new("false"))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(exit.status, Some(1));
        assert_eq!(exit.stderr_tail, "no such database");
        let e = f
            .spawn(&RemoteCmd::new("slow"))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
        assert!(matches!(
            f.spawn(&RemoteCmd::new("ssh")).await.err(),
            Some(ExecError::Unreachable { .. })
        ));
    }
}

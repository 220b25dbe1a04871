//! A fake `Remote` for fast unit tests of planning and error paths: it
//! records every command and answers from a script. It adds to the
//! real-testbed tests; it never replaces them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::exec::remote::{CmdOutput, ExecError, Remote};
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
        }
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
        let answer = self
            .rules
            .iter()
            .find(|(p, _)| *p == cmd.program)
            .map(|(_, a)| a.clone())
            .unwrap_or(FakeAnswer::Output(0, String::new()));
        match answer {
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

//! The `Remote` trait: run one `RemoteCmd` on one server.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::plan::cmd::RemoteCmd;

/// Longest stderr tail kept for journals and errors.
pub const STDERR_TAIL_BYTES: usize = 2048;

/// The result of a command that ran (whatever its exit status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit status; `None` when killed by a signal.
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Wall time including the round trip.
    pub duration: Duration,
}

impl CmdOutput {
    /// True on exit status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
    /// Stdout as (lossy) text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// The last `STDERR_TAIL_BYTES` of stderr as text.
    pub fn stderr_tail(&self) -> String {
        let s = String::from_utf8_lossy(&self.stderr);
        let mut start = s.len().saturating_sub(STDERR_TAIL_BYTES);
        while !s.is_char_boundary(start) {
            start += 1;
        }
        s[start..].trim().to_string()
    }
}

/// Why a command could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The server could not be reached (connect failed or timed out).
    #[error("server {server} is unreachable: {message}")]
    Unreachable {
        /// Server name.
        server: String,
        /// What failed.
        message: String,
    },
    /// The command did not finish within its time limit.
    #[error("`{program}` on {server} did not finish within {secs} s")]
    Timeout {
        /// Server name.
        server: String,
        /// Program name.
        program: String,
        /// The limit.
        secs: u64,
    },
    /// The transport failed while the command ran.
    #[error("running `{program}` on {server} failed: {message}")]
    Transport {
        /// Server name.
        server: String,
        /// Program name.
        program: String,
        /// What failed.
        message: String,
    },
}

/// Runs commands on one server.
#[async_trait]
pub trait Remote: Send + Sync {
    /// Server name, for messages.
    fn name(&self) -> &str;
    /// Runs `cmd` and returns its output; a non-zero exit is not an error here.
    async fn run(&self, cmd: &RemoteCmd) -> Result<CmdOutput, ExecError>;
    /// Closes connections (called once on shutdown).
    async fn close(&self);
    /// A local address that reaches `remote` (an address on the server's own
    /// loopback), e.g. the PowerDNS API. Over SSH this is a port forward kept
    /// for the life of the connection; asking again returns the same address
    /// while it lives and a new one after a reconnect.
    async fn forward_tcp(&self, remote: SocketAddr) -> Result<SocketAddr, ExecError>;
    /// Starts `cmd` with its standard output and input as streams (a
    /// database dump read as it is made, a file written as it arrives),
    /// under the same channel limit and time limit as `run`. `cmd.stdin`'s
    /// payload is not used: write through `RunningCmd::take_stdin`.
    async fn spawn(&self, cmd: &RemoteCmd) -> Result<Box<dyn RunningCmd>, ExecError>;
}

/// A spawned command's standard output.
pub type StreamReader = Box<dyn AsyncRead + Send + Unpin>;
/// A spawned command's standard input; shut it down (or drop it) to send EOF.
pub type StreamWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// How a streamed command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamExit {
    /// Exit status; `None` when killed by a signal.
    pub status: Option<i32>,
    /// The last `STDERR_TAIL_BYTES` of stderr as text.
    pub stderr_tail: String,
    /// Wall time from spawn to exit.
    pub duration: Duration,
}

impl StreamExit {
    /// True on exit status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// A command started by `Remote::spawn`. It holds one of its server's
/// channels until `wait` returns or it is dropped (dropping it abandons the
/// command: a local one is killed, a remote one ends at its remote
/// `timeout` or when its pipes close).
#[async_trait]
pub trait RunningCmd: Send {
    /// The command's standard output, once (later calls return `None`).
    fn take_stdout(&mut self) -> Option<StreamReader>;
    /// The command's standard input, once (later calls return `None`).
    fn take_stdin(&mut self) -> Option<StreamWriter>;
    /// When the command's time limit runs out; a caller streaming data
    /// stops waiting at this instant.
    fn deadline(&self) -> tokio::time::Instant;
    /// Closes stdin if it was not taken, discards stdout if it was not
    /// taken, and waits (until `deadline` at most) for the exit status.
    async fn wait(self: Box<Self>) -> Result<StreamExit, ExecError>;
}

/// Reads a stream to its end keeping only its last `STDERR_TAIL_BYTES`
/// (a stderr that never stops cannot grow codeb's memory).
pub(crate) async fn read_tail<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
        }
    }
    tail
}

/// Reads a stream to its end and throws the bytes away.
pub(crate) async fn discard<R: AsyncRead + Unpin>(r: Option<R>) {
    if let Some(mut r) = r {
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    }
}

/// Text of the last `STDERR_TAIL_BYTES` of `stderr`, trimmed.
pub(crate) fn tail_text(stderr: &[u8]) -> String {
    CmdOutput {
        status: None,
        stdout: Vec::new(),
        stderr: stderr.to_vec(),
        duration: Duration::ZERO,
    }
    .stderr_tail()
}

/// The effective limit of a command: its own, else the configured default.
pub fn effective_timeout(cmd: &RemoteCmd, default: Duration) -> Duration {
    cmd.timeout.unwrap_or(default)
}

/// Writes a command's stdin payload, then closes the pipe so the command
/// sees EOF. Executors run this concurrently with reading the command's
/// output. A command that exits without reading all its input breaks the
/// pipe; its exit status and stderr say why, so the write error itself is
/// only logged (without the payload).
pub(crate) async fn write_stdin<W: AsyncWrite + Unpin>(writer: Option<W>, data: Option<&[u8]>) {
    if let (Some(mut w), Some(data)) = (writer, data) {
        if let Err(e) = w.write_all(data).await {
            tracing::debug!(error = %e, bytes = data.len(), "stdin closed before the payload was written");
        }
        let _ = w.shutdown().await;
    }
}

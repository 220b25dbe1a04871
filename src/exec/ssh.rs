//! SSH executor (DESIGN §8): one multiplexed master per server through the
//! `openssh` crate's native mux, strict known hosts from a pinned file,
//! connect timeout and keepalive, at most `max_channels` commands at once,
//! a remote `timeout` around every command plus a local bound, and a
//! reconnect when the master has died or a command timed out. Port forwards
//! (DESIGN §8: admin APIs on the app server's loopback) ride the same master
//! and are remembered for as long as it lives.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use openssh::{ForwardType, KnownHosts, Session, SessionBuilder};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::config::{ServerConfig, SshConfig};
use crate::exec::remote::{
    discard, effective_timeout, read_tail, tail_text, write_stdin, CmdOutput, ExecError, Remote,
    RunningCmd, StreamExit, StreamReader, StreamWriter,
};
use crate::plan::cmd::RemoteCmd;

/// Extra time the remote `timeout` gives a command after TERM before KILL.
const REMOTE_KILL_AFTER_SECS: u64 = 2;
/// Extra local margin over the remote limit for the round trip.
const LOCAL_MARGIN: Duration = Duration::from_secs(1);
/// Local ports tried for one forward: a port picked free can be taken by
/// someone else before the master binds it.
const FORWARD_ATTEMPTS: usize = 4;

/// The port forwards of one master: server-side address → local address.
/// Keyed by the session (weakly, so the cache never keeps a master alive):
/// a reconnect starts with no forwards.
#[derive(Default)]
struct Forwards {
    session: Weak<Session>,
    local: HashMap<SocketAddr, SocketAddr>,
}

/// A server reached over SSH.
pub struct SshRemote {
    name: String,
    destination: String,
    builder: SessionBuilder,
    connect_timeout: Duration,
    command_timeout: Duration,
    session: Arc<Mutex<Option<Arc<Session>>>>,
    channels: Arc<Semaphore>,
    forwards: Mutex<Forwards>,
}

impl SshRemote {
    /// Prepares (does not open) the connection to `server`.
    pub fn new(server: &ServerConfig, ssh: &SshConfig, control_dir: PathBuf) -> Self {
        let mut b = SessionBuilder::default();
        b.user(server.ssh_user.clone())
            .port(server.ssh_port)
            .known_hosts_check(KnownHosts::Strict)
            .connect_timeout(ssh.connect_timeout())
            .server_alive_interval(Duration::from_secs(ssh.keepalive_secs))
            .control_directory(control_dir)
            // Ignore the operator's ~/.ssh/config: the fleet config is the whole truth.
            .config_file("/dev/null");
        if let Some(k) = &server.ssh_key_file {
            b.keyfile(k);
        }
        if let Some(kh) = &server.known_hosts_file {
            b.user_known_hosts_file(kh);
        }
        Self {
            name: server.name.clone(),
            destination: server.address.clone(),
            builder: b,
            connect_timeout: ssh.connect_timeout(),
            command_timeout: ssh.command_timeout(),
            session: Arc::new(Mutex::new(None)),
            channels: Arc::new(Semaphore::new(ssh.max_channels)),
            forwards: Mutex::new(Forwards::default()),
        }
    }

    async fn session(&self) -> Result<Arc<Session>, ExecError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let started = Instant::now();
        let connect = self.builder.connect_mux(&self.destination);
        let session = match tokio::time::timeout(self.connect_timeout + LOCAL_MARGIN, connect).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(ExecError::Unreachable {
                    server: self.name.clone(),
                    message: error_chain(&e),
                })
            }
            Err(_) => {
                return Err(ExecError::Unreachable {
                    server: self.name.clone(),
                    message: format!(
                        "no SSH connection within {} s",
                        self.connect_timeout.as_secs()
                    ),
                })
            }
        };
        tracing::debug!(server = %self.name, ms = started.elapsed().as_millis() as u64, "ssh master connected");
        let s = Arc::new(session);
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Drops the master so the next command reconnects.
    async fn invalidate(&self, seen: &Arc<Session>) {
        invalidate(&self.session, seen).await;
    }

    /// Asks the master to listen on a free local port and forward it to
    /// `remote`; retries with another port when the chosen one was taken.
    async fn open_forward(
        &self,
        session: &Arc<Session>,
        remote: SocketAddr,
    ) -> Result<SocketAddr, ExecError> {
        let transport = |message: String| ExecError::Transport {
            server: self.name.clone(),
            program: "port forward".into(),
            message,
        };
        let mut last = String::new();
        for _ in 0..FORWARD_ATTEMPTS {
            let listen =
                free_loopback_port().map_err(|e| transport(format!("no free local port: {e}")))?;
            let request = session.request_port_forward(ForwardType::Local, listen, remote);
            match tokio::time::timeout(self.connect_timeout + LOCAL_MARGIN, request).await {
                Ok(Ok(())) => {
                    tracing::debug!(server = %self.name, %listen, %remote, "ssh port forward");
                    return Ok(listen);
                }
                Ok(Err(e)) => {
                    if session.check().await.is_err() {
                        self.invalidate(session).await;
                        return Err(ExecError::Unreachable {
                            server: self.name.clone(),
                            message: error_chain(&e),
                        });
                    }
                    last = error_chain(&e);
                }
                Err(_) => {
                    self.invalidate(session).await;
                    return Err(ExecError::Timeout {
                        server: self.name.clone(),
                        program: "port forward".into(),
                        secs: self.connect_timeout.as_secs(),
                    });
                }
            }
        }
        Err(transport(format!(
            "forwarding a local port to {remote} failed {FORWARD_ATTEMPTS} times: {last}"
        )))
    }
}

/// Forgets the master `seen` if it is still the current one.
async fn invalidate(current: &Mutex<Option<Arc<Session>>>, seen: &Arc<Session>) {
    let mut guard = current.lock().await;
    if guard.as_ref().is_some_and(|s| Arc::ptr_eq(s, seen)) {
        guard.take();
    }
}

/// The remote `timeout` wrapper every command runs in: it stops the
/// command on the server even when this side gives up.
fn remote_command(
    session: &Arc<Session>,
    cmd: &RemoteCmd,
    limit: Duration,
) -> openssh::OwningCommand<Arc<Session>> {
    let mut c = Session::to_command(session.clone(), "timeout");
    c.arg(format!("--kill-after={REMOTE_KILL_AFTER_SECS}"))
        .arg(limit.as_secs().max(1).to_string())
        .arg(cmd.program)
        .args(&cmd.args);
    c
}

/// The local bound of a command with remote limit `limit`.
fn local_limit(limit: Duration) -> Duration {
    limit + Duration::from_secs(REMOTE_KILL_AFTER_SECS) + LOCAL_MARGIN
}

/// A remote command with streamed stdio over the master.
struct SshRunning {
    server: String,
    program: &'static str,
    limit: Duration,
    started: tokio::time::Instant,
    child: openssh::Child<Arc<Session>>,
    stdout: Option<openssh::ChildStdout>,
    stdin: Option<openssh::ChildStdin>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    session_slot: Arc<Mutex<Option<Arc<Session>>>>,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl RunningCmd for SshRunning {
    fn take_stdout(&mut self) -> Option<StreamReader> {
        self.stdout.take().map(|s| Box::new(s) as StreamReader)
    }

    fn take_stdin(&mut self) -> Option<StreamWriter> {
        self.stdin.take().map(|s| Box::new(s) as StreamWriter)
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.started + local_limit(self.limit)
    }

    async fn wait(mut self: Box<Self>) -> Result<StreamExit, ExecError> {
        drop(self.stdin.take());
        let deadline = self.deadline();
        let stdout = self.stdout.take();
        let SshRunning {
            server,
            program,
            limit,
            started,
            child,
            mut stderr,
            session_slot,
            ..
        } = *self;
        let session = child.session();
        let waited = async {
            let (_, status) = tokio::join!(discard(stdout), child.wait());
            status
        };
        match tokio::time::timeout_at(deadline, waited).await {
            Ok(Ok(status)) => Ok(StreamExit {
                status: status.code(),
                stderr_tail: tail_text(&(&mut stderr).await.unwrap_or_default()),
                duration: started.elapsed(),
            }),
            Ok(Err(e)) => {
                let dead = session.check().await.is_err();
                if dead {
                    invalidate(&session_slot, &session).await;
                    Err(ExecError::Unreachable {
                        server,
                        message: error_chain(&e),
                    })
                } else {
                    Err(ExecError::Transport {
                        server,
                        program: program.to_string(),
                        message: error_chain(&e),
                    })
                }
            }
            Err(_) => {
                invalidate(&session_slot, &session).await;
                Err(ExecError::Timeout {
                    server,
                    program: program.to_string(),
                    secs: limit.as_secs(),
                })
            }
        }
    }
}

/// A loopback address whose port was free a moment ago (bound to port 0 and
/// released): the master binds it next.
fn free_loopback_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    l.local_addr()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s.replace('\n', " ")
}

#[async_trait]
impl Remote for SshRemote {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, cmd: &RemoteCmd) -> Result<CmdOutput, ExecError> {
        let limit = effective_timeout(cmd, self.command_timeout);
        let _permit = self
            .channels
            .acquire()
            .await
            .expect("semaphore is never closed");
        let started = Instant::now();
        let session = self.session().await?;
        // The remote `timeout` stops the command on the server even when
        // this side gives up; the local bound covers a dead link.
        let mut c = remote_command(&session, cmd, limit);
        c.stdin(if cmd.stdin.is_some() {
            openssh::Stdio::piped()
        } else {
            openssh::Stdio::null()
        })
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped());
        let io = async {
            let mut child = c.spawn().await?;
            let writer = child.stdin().take();
            // Feed stdin while stdout and stderr are read: a command that
            // writes output before it has read all its input must not
            // deadlock against a full pipe.
            let (_, out) = tokio::join!(
                write_stdin(writer, cmd.stdin.as_deref()),
                child.wait_with_output()
            );
            out
        };
        match tokio::time::timeout(local_limit(limit), io).await {
            Ok(Ok(out)) => Ok(CmdOutput {
                status: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
                duration: started.elapsed(),
            }),
            Ok(Err(e)) => {
                let dead = session.check().await.is_err();
                if dead {
                    self.invalidate(&session).await;
                }
                Err(if dead {
                    ExecError::Unreachable {
                        server: self.name.clone(),
                        message: error_chain(&e),
                    }
                } else {
                    ExecError::Transport {
                        server: self.name.clone(),
                        program: cmd.program.to_string(),
                        message: error_chain(&e),
                    }
                })
            }
            Err(_) => {
                // A command that outlived its remote timeout means the link
                // (or the master) is gone: start over next time.
                self.invalidate(&session).await;
                Err(ExecError::Timeout {
                    server: self.name.clone(),
                    program: cmd.program.to_string(),
                    secs: limit.as_secs(),
                })
            }
        }
    }

    async fn forward_tcp(&self, remote: SocketAddr) -> Result<SocketAddr, ExecError> {
        // One forward request at a time, so two callers never open two
        // forwards for the same address.
        let mut forwards = self.forwards.lock().await;
        let mut session = self.session().await?;
        if Weak::ptr_eq(&forwards.session, &Arc::downgrade(&session)) {
            if let Some(local) = forwards.local.get(&remote).copied() {
                // The forward lives in the master process: if the master is
                // alive, so is the forward; a dead one took it along.
                if session.check().await.is_ok() {
                    return Ok(local);
                }
                self.invalidate(&session).await;
                session = self.session().await?;
            }
        }
        if !Weak::ptr_eq(&forwards.session, &Arc::downgrade(&session)) {
            *forwards = Forwards {
                session: Arc::downgrade(&session),
                local: HashMap::new(),
            };
        }
        let local = self.open_forward(&session, remote).await?;
        forwards.local.insert(remote, local);
        Ok(local)
    }

    async fn spawn(&self, cmd: &RemoteCmd) -> Result<Box<dyn RunningCmd>, ExecError> {
        let limit = effective_timeout(cmd, self.command_timeout);
        let permit = self
            .channels
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let started = tokio::time::Instant::now();
        let session = self.session().await?;
        let mut c = remote_command(&session, cmd, limit);
        c.stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let spawned = tokio::time::timeout(self.connect_timeout + LOCAL_MARGIN, c.spawn()).await;
        let mut child = match spawned {
            Ok(Ok(child)) => child,
            Ok(Err(e)) => {
                let dead = session.check().await.is_err();
                if dead {
                    self.invalidate(&session).await;
                    return Err(ExecError::Unreachable {
                        server: self.name.clone(),
                        message: error_chain(&e),
                    });
                }
                return Err(ExecError::Transport {
                    server: self.name.clone(),
                    program: cmd.program.to_string(),
                    message: error_chain(&e),
                });
            }
            Err(_) => {
                self.invalidate(&session).await;
                return Err(ExecError::Unreachable {
                    server: self.name.clone(),
                    message: format!(
                        "the SSH master did not open a channel within {} s",
                        self.connect_timeout.as_secs()
                    ),
                });
            }
        };
        let stderr = tokio::spawn(read_tail(child.stderr().take().expect("piped stderr")));
        Ok(Box::new(SshRunning {
            server: self.name.clone(),
            program: cmd.program,
            limit,
            started,
            stdout: child.stdout().take(),
            stdin: child.stdin().take(),
            child,
            stderr,
            session_slot: self.session.clone(),
            _permit: permit,
        }))
    }

    async fn close(&self) {
        *self.forwards.lock().await = Forwards::default();
        let session = self.session.lock().await.take();
        if let Some(s) = session {
            // If a finishing command still holds the session, dropping our
            // handle lets the last user's drop end the master.
            if let Ok(s) = Arc::try_unwrap(s) {
                if let Err(e) = s.close().await {
                    tracing::debug!(server = %self.name, error = %e, "ssh close");
                }
            }
        }
    }
}

//! The fleet: one executor per configured server, created lazily-connecting
//! (no SSH connection is opened until the first command).

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ServerConfig};
use crate::exec::local::LocalRemote;
use crate::exec::remote::Remote;
use crate::exec::ssh::SshRemote;
use crate::model::ServerRole;

/// Every server with its executor.
#[derive(Clone)]
pub struct Fleet {
    servers: Arc<Vec<(ServerConfig, Arc<dyn Remote>)>>,
    /// The private SSH control directory this fleet made, if any; removed
    /// when the last clone of the fleet is dropped (held only for that).
    #[allow(dead_code)]
    control_dir: Option<Arc<ControlDir>>,
}

impl Fleet {
    /// Executors for every server in `config`; connects nothing yet.
    pub fn from_config(config: &Config) -> Self {
        let control_dir = config
            .servers
            .iter()
            .any(|s| !s.is_local())
            .then(control_directory);
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let remote: Arc<dyn Remote> = if s.is_local() {
                    Arc::new(LocalRemote::new(
                        &s.name,
                        config.ssh.command_timeout(),
                        config.ssh.max_channels,
                    ))
                } else {
                    let dir = control_dir.clone().expect("made for SSH servers");
                    Arc::new(SshRemote::new(s, &config.ssh, dir))
                };
                (s.clone(), remote)
            })
            .collect();
        Self {
            servers: Arc::new(servers),
            control_dir: control_dir.map(|d| Arc::new(ControlDir(d))),
        }
    }

    /// A fleet of given executors (tests).
    pub fn from_parts(parts: Vec<(ServerConfig, Arc<dyn Remote>)>) -> Self {
        Self {
            servers: Arc::new(parts),
            control_dir: None,
        }
    }

    /// All servers in config order.
    pub fn servers(&self) -> impl Iterator<Item = &(ServerConfig, Arc<dyn Remote>)> {
        self.servers.iter()
    }

    /// The executor of the first server holding `role`.
    pub fn for_role(&self, role: ServerRole) -> Option<&(ServerConfig, Arc<dyn Remote>)> {
        self.servers.iter().find(|(s, _)| s.roles.contains(&role))
    }

    /// Closes every connection.
    pub async fn close(&self) {
        for (_, r) in self.servers.iter() {
            r.close().await;
        }
    }
}

/// Where SSH control sockets live: a directory this process creates for
/// itself, exclusively and with mode 0700, under `$XDG_RUNTIME_DIR` or
/// else the system temp dir. Whoever can write to the control directory
/// can stand in for a server's control socket, so no existing directory is
/// trusted — not even one of the same name left by a run before. It is
/// removed when the fleet is dropped.
fn control_directory() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(std::env::temp_dir);
    let mut last_error = None;
    for _ in 0..CONTROL_DIR_ATTEMPTS {
        let dir = base.join(format!(
            "codeb-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..CONTROL_DIR_RANDOM_CHARS]
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(&dir) {
            Ok(()) => return dir,
            Err(e) => last_error = Some(e),
        }
    }
    // SSH then fails to open its master and says so on the first command;
    // nothing is ever placed in a directory codeb did not make.
    tracing::error!(base = %base.display(), error = ?last_error, "cannot create a private SSH control directory");
    base.join("codeb-ssh-unavailable")
}

/// The fleet's own SSH control directory: it outlives `close` (a closed
/// fleet reconnects on the next command) and goes with the fleet.
struct ControlDir(PathBuf);

impl Drop for ControlDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fresh names tried for the control directory before giving up.
const CONTROL_DIR_ATTEMPTS: usize = 5;
/// Random hex digits in its name: short, because the sockets inside must
/// fit a Unix socket path (108 bytes) with openssh's own additions.
const CONTROL_DIR_RANDOM_CHARS: usize = 12;

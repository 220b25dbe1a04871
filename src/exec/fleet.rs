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
}

impl Fleet {
    /// Executors for every server in `config`; connects nothing yet.
    pub fn from_config(config: &Config) -> Self {
        let control_dir = control_directory();
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
                    Arc::new(SshRemote::new(s, &config.ssh, control_dir.clone()))
                };
                (s.clone(), remote)
            })
            .collect();
        Self {
            servers: Arc::new(servers),
        }
    }

    /// A fleet of given executors (tests).
    pub fn from_parts(parts: Vec<(ServerConfig, Arc<dyn Remote>)>) -> Self {
        Self {
            servers: Arc::new(parts),
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

/// Where SSH control sockets live: `$XDG_RUNTIME_DIR/codeb` or the temp dir.
fn control_directory() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("codeb-ssh");
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        dir
    } else {
        std::env::temp_dir()
    }
}

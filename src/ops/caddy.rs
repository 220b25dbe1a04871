//! Installs Caddy's one static config on the app server (DESIGN §2, §7):
//! backed up, validated by `caddy validate` before it takes the config's
//! place, and left byte-identical to before on any failure. Runs only when
//! a server is set up or its TLS policy changes; callers serialise it per
//! app server. Reloading Caddy is not part of it.
//!
//! The steps, all through `remote`:
//! 1. `test -f PATH` — is there a config to keep?
//! 2. if so, `cp -p -T -- PATH PATH.bak` — the backup (kept afterwards, one
//!    generation, for a human to diff or restore);
//! 3. write the new content atomically to the candidate `PATH.codeb-new`
//!    (`plan::files::write_file_atomic`, mode 0644);
//! 4. `caddy validate --config PATH.codeb-new --adapter caddyfile`;
//! 5. only if valid: `mv -f -T -- PATH.codeb-new PATH` (one rename(2): Caddy
//!    or a human reading PATH sees the old config or the new, never a
//!    broken one).
//!
//! `PATH` itself is written only by step 5, so a refused config never
//! touches it. Still, after any failure past the backup, the function
//! checks `cmp -s -- PATH PATH.bak` and, if they differ (a rename whose
//! outcome is unknown after a lost link), restores the backup with an
//! atomic copy-then-rename; then the candidate is removed.

use crate::exec::{CmdOutput, ExecError, Remote};
use crate::model::Invalid;
use crate::plan::caddy::{validate_cmd, validation_errors};
use crate::plan::cmd::RemoteCmd;
use crate::plan::files::{
    copy_file, file_exists, files_equal, remove_file, rename_file, validate_remote_path,
    write_file_atomic, TMP_SUFFIX,
};

/// Mode of the installed Caddyfile (not secret; Caddy may run as its own user).
pub const CADDYFILE_MODE: u32 = 0o644;
/// Suffix of the backup copy of the previous config.
pub const BACKUP_SUFFIX: &str = ".bak";
/// Suffix of the candidate config that is validated before it is renamed
/// into place.
pub const CANDIDATE_SUFFIX: &str = ".codeb-new";
/// Suffix of the copy of the backup that a restore renames into place.
pub const RESTORE_SUFFIX: &str = ".codeb-restore";

/// Why a Caddy config was not installed.
#[derive(Debug, thiserror::Error)]
pub enum CaddyInstallError {
    /// The path is not acceptable.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// `caddy validate` refused the new config; the installed one is unchanged.
    #[error("`caddy validate` refused the new Caddy config for {path} on {server}, so {path} is unchanged: {}", errors.join(" | "))]
    Refused {
        /// Server name.
        server: String,
        /// Config path.
        path: String,
        /// The validator's first error lines (bounded).
        errors: Vec<String>,
    },
    /// A step exited non-zero; the installed config is unchanged (verified).
    #[error("installing the Caddy config {path} on {server} stopped at `{step}` ({status}): {stderr}; {path} is unchanged")]
    StepFailed {
        /// Server name.
        server: String,
        /// Config path.
        path: String,
        /// The failing command as displayed in journals.
        step: String,
        /// Its exit status in words.
        status: String,
        /// The tail of its stderr.
        stderr: String,
    },
    /// A step could not be run (unreachable, timeout); the installed config
    /// is unchanged (verified, or no step had touched it yet).
    #[error("installing the Caddy config {path} on {server} stopped; {path} is unchanged")]
    Exec {
        /// Server name.
        server: String,
        /// Config path.
        path: String,
        /// What went wrong.
        #[source]
        source: ExecError,
    },
    /// The install failed, and the config could not be shown to equal its
    /// backup afterwards: it needs a human.
    #[error("the Caddy config {path} on {server} may differ from its backup {backup} and was not restored ({reason}); restore it by hand")]
    NotRestored {
        /// Server name.
        server: String,
        /// Config path.
        path: String,
        /// Backup path.
        backup: String,
        /// Why the restore failed.
        reason: String,
        /// The failure that started the restore.
        #[source]
        cause: Box<CaddyInstallError>,
    },
}

/// Where the install is, which decides what a failure must undo.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing written yet: a failure needs no cleanup.
    Start,
    /// Backup taken (or nothing to back up); PATH may have to be checked.
    BackedUp,
}

struct Install<'a> {
    remote: &'a dyn Remote,
    path: &'a str,
    backup: String,
    candidate: String,
    /// Whether a config existed before (and so a backup was taken).
    existed: bool,
}

impl Install<'_> {
    fn exec_error(&self, source: ExecError) -> CaddyInstallError {
        CaddyInstallError::Exec {
            server: self.remote.name().to_string(),
            path: self.path.to_string(),
            source,
        }
    }

    fn step_failed(&self, cmd: &RemoteCmd, out: &CmdOutput) -> CaddyInstallError {
        CaddyInstallError::StepFailed {
            server: self.remote.name().to_string(),
            path: self.path.to_string(),
            step: cmd.to_string(),
            status: match out.status {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".into(),
            },
            stderr: out.stderr_tail(),
        }
    }

    /// Runs `cmd` and insists on exit status 0.
    async fn run_ok(&self, cmd: &RemoteCmd) -> Result<CmdOutput, CaddyInstallError> {
        let out = self.remote.run(cmd).await.map_err(|e| self.exec_error(e))?;
        if out.success() {
            Ok(out)
        } else {
            Err(self.step_failed(cmd, &out))
        }
    }

    /// Steps 1-5.
    async fn apply(&mut self, content: String, stage: &mut Stage) -> Result<(), CaddyInstallError> {
        let probe = file_exists(self.path)?;
        let out = self
            .remote
            .run(&probe)
            .await
            .map_err(|e| self.exec_error(e))?;
        self.existed = match out.status {
            Some(0) => true,
            Some(1) => false,
            _ => return Err(self.step_failed(&probe, &out)),
        };
        if self.existed {
            self.run_ok(&copy_file(self.path, &self.backup)?).await?;
        }
        *stage = Stage::BackedUp;
        for cmd in write_file_atomic(&self.candidate, content.into_bytes(), CADDYFILE_MODE)? {
            self.run_ok(&cmd).await?;
        }
        let check = validate_cmd(&self.candidate);
        let out = self
            .remote
            .run(&check)
            .await
            .map_err(|e| self.exec_error(e))?;
        if !out.success() {
            let mut errors = validation_errors(&String::from_utf8_lossy(&out.stderr));
            if errors.is_empty() {
                errors.push(self.step_failed(&check, &out).to_string());
            }
            return Err(CaddyInstallError::Refused {
                server: self.remote.name().to_string(),
                path: self.path.to_string(),
                errors,
            });
        }
        self.run_ok(&rename_file(&self.candidate, self.path)?)
            .await?;
        Ok(())
    }

    /// After a failure past the backup: makes PATH what it was (equal to
    /// the backup, or absent if there was none), then removes the
    /// candidate. Returns why PATH could not be shown to be restored.
    async fn restore(&self) -> Result<(), String> {
        let result = if self.existed {
            self.restore_from_backup().await
        } else {
            self.restore_absent().await
        };
        for leftover in [
            self.candidate.clone(),
            format!("{}{TMP_SUFFIX}", self.candidate),
        ] {
            if let Ok(cmd) = remove_file(&leftover) {
                if let Err(e) = self.remote.run(&cmd).await {
                    tracing::debug!(error = %e, path = %leftover, "could not remove a leftover");
                }
            }
        }
        result
    }

    async fn same_as_backup(&self) -> Result<bool, String> {
        let cmd = files_equal(self.path, &self.backup).map_err(|e| e.to_string())?;
        let out = self.remote.run(&cmd).await.map_err(|e| e.to_string())?;
        Ok(out.success())
    }

    async fn restore_from_backup(&self) -> Result<(), String> {
        if self.same_as_backup().await? {
            return Ok(());
        }
        tracing::warn!(
            server = self.remote.name(),
            path = self.path,
            "restoring the Caddy config from its backup"
        );
        let staging = format!("{}{RESTORE_SUFFIX}", self.path);
        for cmd in [
            copy_file(&self.backup, &staging).map_err(|e| e.to_string())?,
            rename_file(&staging, self.path).map_err(|e| e.to_string())?,
        ] {
            let out = self.remote.run(&cmd).await.map_err(|e| e.to_string())?;
            if !out.success() {
                return Err(format!("`{cmd}` failed: {}", out.stderr_tail()));
            }
        }
        if self.same_as_backup().await? {
            Ok(())
        } else {
            Err(format!("{} still differs from {}", self.path, self.backup))
        }
    }

    async fn restore_absent(&self) -> Result<(), String> {
        let cmd = file_exists(self.path).map_err(|e| e.to_string())?;
        let out = self.remote.run(&cmd).await.map_err(|e| e.to_string())?;
        if out.status == Some(1) {
            return Ok(());
        }
        let rm = remove_file(self.path).map_err(|e| e.to_string())?;
        let out = self.remote.run(&rm).await.map_err(|e| e.to_string())?;
        if out.success() {
            Ok(())
        } else {
            Err(format!("`{rm}` failed: {}", out.stderr_tail()))
        }
    }
}

/// Installs `content` as the Caddy config at `path` on `remote`: backup to
/// `{path}.bak`, atomic write of a candidate, `caddy validate` of the
/// candidate, rename over `path` only if valid. On any failure `path` is
/// left (or restored) byte-identical to before, and the error says why —
/// for a refused config, in the validator's own first error lines. Does
/// not reload Caddy.
pub async fn install_caddy_config(
    remote: &dyn Remote,
    path: &str,
    content: String,
) -> Result<(), CaddyInstallError> {
    validate_remote_path(path)?;
    let mut install = Install {
        remote,
        path,
        backup: format!("{path}{BACKUP_SUFFIX}"),
        candidate: format!("{path}{CANDIDATE_SUFFIX}"),
        existed: false,
    };
    validate_remote_path(&install.backup)?;
    validate_remote_path(&install.candidate)?;
    let mut stage = Stage::Start;
    match install.apply(content, &mut stage).await {
        Ok(()) => {
            tracing::info!(server = remote.name(), path, "Caddy config installed");
            Ok(())
        }
        Err(e) if stage == Stage::Start => Err(e),
        Err(e) => match install.restore().await {
            Ok(()) => Err(e),
            Err(reason) => Err(CaddyInstallError::NotRestored {
                server: remote.name().to_string(),
                path: path.to_string(),
                backup: install.backup.clone(),
                reason,
                cause: Box::new(e),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::{FakeAnswer, FakeRemote};

    const PATH: &str = "/etc/caddy/Caddyfile";

    fn programs(f: &FakeRemote) -> Vec<String> {
        f.calls
            .lock()
            .unwrap()
            .iter()
            .map(|argv| argv[..2.min(argv.len())].join(" "))
            .collect()
    }

    #[tokio::test]
    async fn valid_config_is_backed_up_validated_then_renamed() {
        let f = FakeRemote::new("app", vec![]);
        install_caddy_config(&f, PATH, ":80 {\n}\n".into())
            .await
            .unwrap();
        let calls = f.calls.lock().unwrap().clone();
        assert_eq!(calls[0], vec!["test", "-f", PATH]);
        assert_eq!(
            calls[1],
            vec!["cp", "-p", "-T", "--", PATH, "/etc/caddy/Caddyfile.bak"]
        );
        assert_eq!(calls[2][0], "mkdir");
        assert_eq!(
            calls[3],
            vec![
                "install",
                "-T",
                "-m",
                "0644",
                "--",
                "/dev/stdin",
                "/etc/caddy/Caddyfile.codeb-new.tmp-codeb"
            ]
        );
        assert_eq!(f.stdin_lens.lock().unwrap()[3], Some(":80 {\n}\n".len()));
        assert_eq!(calls[4][0], "sync");
        assert_eq!(calls[5][0], "mv");
        assert_eq!(
            calls[6],
            vec![
                "caddy",
                "validate",
                "--config",
                "/etc/caddy/Caddyfile.codeb-new",
                "--adapter",
                "caddyfile"
            ]
        );
        assert_eq!(
            calls[7],
            vec![
                "mv",
                "-f",
                "-T",
                "--",
                "/etc/caddy/Caddyfile.codeb-new",
                PATH
            ]
        );
        assert_eq!(calls.len(), 8);
    }

    #[tokio::test]
    async fn refused_config_never_touches_path_and_names_the_problem() {
        let stderr = r#"{"level":"info","msg":"using config from file"}
{"level":"error","msg":"adapting config using caddyfile: /etc/caddy/Caddyfile.codeb-new:3: unrecognized directive: bogus"}"#;
        let f = FakeRemote::new("app", vec![("caddy", FakeAnswer::Stderr(1, stderr.into()))]);
        let e = install_caddy_config(&f, PATH, "bogus".into())
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CaddyInstallError::Refused { .. }), "{msg}");
        assert!(msg.contains("unrecognized directive: bogus"), "{msg}");
        assert!(msg.contains("is unchanged"), "{msg}");
        assert!(!msg.contains("using config from file"), "{msg}");
        let calls = f.calls.lock().unwrap().clone();
        // No command after validation renames anything onto PATH; the
        // check finds PATH equal to the backup and the candidate is removed.
        let after: Vec<&Vec<String>> = calls.iter().skip_while(|c| c[0] != "caddy").collect();
        assert!(after.iter().all(|c| c[0] != "mv" && c[0] != "cp"));
        assert!(after
            .iter()
            .any(|c| c[..] == ["cmp", "-s", "--", PATH, "/etc/caddy/Caddyfile.bak"]));
        assert!(after
            .iter()
            .any(|c| c[..] == ["rm", "-f", "--", "/etc/caddy/Caddyfile.codeb-new"]));
    }

    #[tokio::test]
    async fn a_differing_config_is_restored_from_the_backup() {
        // cmp reports a difference (as after a rename whose outcome was
        // lost): the backup is copied aside and renamed over PATH.
        let f = FakeRemote::new(
            "app",
            vec![
                ("caddy", FakeAnswer::Stderr(1, "Error: bad".into())),
                ("cmp", FakeAnswer::Output(1, String::new())),
            ],
        );
        let e = install_caddy_config(&f, PATH, "x".into())
            .await
            .unwrap_err();
        // The fake's cmp keeps answering "differs", so the restore cannot be
        // verified and the error says a human is needed.
        assert!(matches!(e, CaddyInstallError::NotRestored { .. }), "{e}");
        assert!(e.to_string().contains("restore it by hand"), "{e}");
        let calls = f.calls.lock().unwrap().clone();
        assert!(calls.iter().any(|c| c[..]
            == [
                "cp",
                "-p",
                "-T",
                "--",
                "/etc/caddy/Caddyfile.bak",
                "/etc/caddy/Caddyfile.codeb-restore"
            ]));
        assert!(calls.iter().any(|c| c[..]
            == [
                "mv",
                "-f",
                "-T",
                "--",
                "/etc/caddy/Caddyfile.codeb-restore",
                PATH
            ]));
    }

    #[tokio::test]
    async fn first_install_has_no_backup_and_removes_a_failed_file() {
        let f = FakeRemote::new(
            "app",
            vec![
                ("test", FakeAnswer::Output(1, String::new())),
                ("caddy", FakeAnswer::Stderr(1, "Error: bad".into())),
            ],
        );
        let e = install_caddy_config(&f, PATH, "x".into())
            .await
            .unwrap_err();
        assert!(matches!(e, CaddyInstallError::Refused { .. }), "{e}");
        assert!(e.to_string().contains("Error: bad"), "{e}");
        assert!(!programs(&f).iter().any(|p| p.starts_with("cp")));
    }

    #[tokio::test]
    async fn unreachable_before_any_write_needs_no_restore() {
        let f = FakeRemote::new("app", vec![("test", FakeAnswer::Unreachable)]);
        let e = install_caddy_config(&f, PATH, "x".into())
            .await
            .unwrap_err();
        assert!(matches!(e, CaddyInstallError::Exec { .. }), "{e}");
        assert_eq!(f.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn refuses_bad_paths() {
        let f = FakeRemote::new("app", vec![]);
        for bad in ["Caddyfile", "/etc/../x", "/etc/caddy/-x"] {
            let e = install_caddy_config(&f, bad, "x".into()).await.unwrap_err();
            assert!(matches!(e, CaddyInstallError::Invalid(_)), "{e}");
        }
        assert!(f.calls.lock().unwrap().is_empty());
    }
}

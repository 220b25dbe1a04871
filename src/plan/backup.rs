//! Database backups (DESIGN §1: `pg_dump` on the storage server, dump files
//! on the backup server): where a dump goes and the commands that make,
//! check, move and remove it. Pure: the time and id of a backup are inputs.
//!
//! A dump is streamed: `pg_dump` writes to its stdout on the storage server,
//! codeb reads it (counting bytes and hashing), and `install` writes codeb's
//! stream into `{file}.partial` on the backup server. Only a verified file
//! is renamed to its final name, so a file without `.partial` is complete.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::StorageConfig;
use crate::model::{Environment, Invalid, StorageNames};
use crate::plan::cmd::RemoteCmd;
use crate::plan::files::{remove_file, rename_file, validate_remote_path, FILE_CMD_TIMEOUT};
use crate::plan::pg::{tenant_dbname, TenantLogin};

/// Directory on the backup server holding every dump.
pub const BACKUP_ROOT: &str = "/opt/codeb/backups";
/// Suffix of a dump still being written (or left by a failed one).
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Mode of a dump file: owner only.
pub const BACKUP_FILE_MODE: u32 = 0o600;
/// Mode of the per-project and per-environment directories.
pub const BACKUP_DIR_MODE: u32 = 0o700;
/// Longest time one dump (and the write of its stream) may take.
pub const BACKUP_DUMP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Time limit of reading a dump back for its checksum.
pub const BACKUP_VERIFY_TIMEOUT: Duration = Duration::from_secs(600);

/// Where one backup is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPaths {
    /// `/opt/codeb/backups/{project}`.
    pub project_dir: String,
    /// `/opt/codeb/backups/{project}/{environment}`.
    pub env_dir: String,
    /// The final file: `{env_dir}/{YYYYMMDDTHHMMSSZ}-{first 8 hex of id}.dump`.
    pub file: String,
    /// The file while it is written: `{file}.partial`.
    pub partial: String,
}

/// The paths of backup `id` of (`project`, `environment`) started at `at`.
pub fn backup_paths(
    project: &str,
    environment: Environment,
    at: DateTime<Utc>,
    id: Uuid,
) -> Result<BackupPaths, Invalid> {
    // Validates the project name (the paths are built from it).
    StorageNames::new(project, environment)?;
    let project_dir = format!("{BACKUP_ROOT}/{project}");
    let env_dir = format!("{project_dir}/{}", environment.as_str());
    let short = &id.simple().to_string()[..8];
    let file = format!("{env_dir}/{}-{short}.dump", at.format("%Y%m%dT%H%M%SZ"));
    let partial = format!("{file}{PARTIAL_SUFFIX}");
    validate_remote_path(&partial)?;
    Ok(BackupPaths {
        project_dir,
        env_dir,
        file,
        partial,
    })
}

/// Checks a PostgreSQL database name made by `StorageNames`: a lowercase
/// letter, then lowercase letters, digits and '_', at most 63 bytes.
pub fn validate_database_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "database name {} is invalid: use lowercase letters, digits and '_'",
            crate::model::describe_input(name)
        )))
    }
}

/// `runuser -u USER --`: the OS account of the storage server's
/// PostgreSQL (`storage.pg_os_user`), which runs PostgreSQL's client
/// tools. Over the unix socket its peer authentication is the superuser,
/// which only catalogue sessions in the maintenance database use (see
/// `plan::pg`); tools that work inside a project's database log in as the
/// project's role instead.
pub(crate) fn as_pg_user(storage: &StorageConfig, program: &str) -> RemoteCmd {
    RemoteCmd::new("runuser").args(["-u", storage.pg_os_user.as_str(), "--", program])
}

/// Dumps the project's database in PostgreSQL's custom format to stdout,
/// logged in as the project's own role (never a superuser, see
/// `plan::pg`): `runuser -u postgres -- pg_dump --format=custom
/// --no-password --dbname=TENANT`.
pub fn pg_dump(storage: &StorageConfig, login: &TenantLogin) -> RemoteCmd {
    as_pg_user(storage, "pg_dump")
        .args(["--format=custom", "--no-password"])
        .arg(tenant_dbname(storage, login))
        .timeout(BACKUP_DUMP_TIMEOUT)
}

/// Creates the project and environment directories with mode 0700, and
/// sets that mode on them if they exist: `install -d -m 0700 -- P P/ENV`.
pub fn make_backup_dirs(paths: &BackupPaths) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(&paths.project_dir)?;
    validate_remote_path(&paths.env_dir)?;
    Ok(RemoteCmd::new("install")
        .args(["-d", "-m"])
        .arg(format!("{BACKUP_DIR_MODE:04o}"))
        .arg("--")
        .arg(paths.project_dir.clone())
        .arg(paths.env_dir.clone())
        .timeout(FILE_CMD_TIMEOUT))
}

/// Writes its stdin stream to the partial file with mode 0600 (created
/// owner-only, a leftover replaced): `install -T -m 0600 -- /dev/stdin PARTIAL`.
pub fn write_partial(paths: &BackupPaths) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(&paths.partial)?;
    Ok(RemoteCmd::new("install")
        .args(["-T", "-m"])
        .arg(format!("{BACKUP_FILE_MODE:04o}"))
        .args(["--", "/dev/stdin"])
        .arg(paths.partial.clone())
        .timeout(BACKUP_DUMP_TIMEOUT))
}

/// Flushes the partial file to disk before it is checked and renamed:
/// `sync -- PARTIAL`.
pub fn sync_partial(paths: &BackupPaths) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(&paths.partial)?;
    Ok(RemoteCmd::new("sync")
        .arg("--")
        .arg(paths.partial.clone())
        .timeout(BACKUP_VERIFY_TIMEOUT))
}

/// The SHA-256 of a file as the backup server computes it:
/// `sha256sum -- PATH`; read with `parse_sha256sum`.
pub fn sha256_of(path: &str) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(path)?;
    Ok(RemoteCmd::new("sha256sum")
        .arg("--")
        .arg(path)
        .timeout(BACKUP_VERIFY_TIMEOUT))
}

/// A file's size in bytes: `stat --format=%s -- PATH`; read with `parse_size`.
pub fn size_of(path: &str) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(path)?;
    Ok(RemoteCmd::new("stat")
        .arg("--format=%s")
        .arg("--")
        .arg(path)
        .timeout(FILE_CMD_TIMEOUT))
}

/// The lowercase hex digest of `sha256sum` output (`HEX  PATH`).
pub fn parse_sha256sum(output: &str) -> Option<String> {
    let hex = output.split_whitespace().next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// The number `stat --format=%s` printed.
pub fn parse_size(output: &str) -> Option<u64> {
    output.trim().parse().ok()
}

/// Renames the verified partial file to its final name.
pub fn finish_file(paths: &BackupPaths) -> Result<RemoteCmd, Invalid> {
    rename_file(&paths.partial, &paths.file)
}

/// Removes what a failed backup may have left: the partial file and
/// (if the failure came after the rename) the final one.
pub fn remove_backup_files(paths: &BackupPaths) -> Result<Vec<RemoteCmd>, Invalid> {
    Ok(vec![
        remove_file(&paths.partial)?,
        remove_file(&paths.file)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn paths() -> BackupPaths {
        backup_paths(
            "shop",
            Environment::Production,
            Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap(),
            Uuid::parse_str("0123abcd-0000-4000-8000-000000000000").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn paths_carry_the_utc_time_and_short_id() {
        let p = paths();
        assert_eq!(p.project_dir, "/opt/codeb/backups/shop");
        assert_eq!(p.env_dir, "/opt/codeb/backups/shop/production");
        assert_eq!(
            p.file,
            "/opt/codeb/backups/shop/production/20250304T050607Z-0123abcd.dump"
        );
        assert_eq!(p.partial, format!("{}.partial", p.file));
        for bad in ["", "-rf", "../etc", "Shop", "a b"] {
            assert!(
                backup_paths(bad, Environment::Staging, Utc::now(), Uuid::nil()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn golden_dump() {
        let storage = StorageConfig::default();
        let login = TenantLogin::new(
            &StorageNames::new("shop", Environment::Production).unwrap(),
            Uuid::nil(),
        )
        .unwrap();
        let dump = pg_dump(&storage, &login);
        assert_eq!(
            dump.argv(),
            vec![
                "runuser".to_string(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
                "pg_dump".into(),
                "--format=custom".into(),
                "--no-password".into(),
                tenant_dbname(&storage, &login),
            ]
        );
        assert!(dump.argv()[7].contains("user='shop_production'"));
        assert_eq!(dump.timeout, Some(BACKUP_DUMP_TIMEOUT));
    }

    #[test]
    fn golden_file_commands() {
        let p = paths();
        assert_eq!(
            make_backup_dirs(&p).unwrap().argv(),
            vec![
                "install",
                "-d",
                "-m",
                "0700",
                "--",
                "/opt/codeb/backups/shop",
                "/opt/codeb/backups/shop/production"
            ]
        );
        assert_eq!(
            write_partial(&p).unwrap().argv(),
            vec![
                "install",
                "-T",
                "-m",
                "0600",
                "--",
                "/dev/stdin",
                p.partial.as_str()
            ]
        );
        assert_eq!(
            sync_partial(&p).unwrap().argv(),
            vec!["sync", "--", p.partial.as_str()]
        );
        assert_eq!(
            sha256_of(&p.partial).unwrap().argv(),
            vec!["sha256sum", "--", p.partial.as_str()]
        );
        assert_eq!(
            size_of(&p.partial).unwrap().argv(),
            vec!["stat", "--format=%s", "--", p.partial.as_str()]
        );
        assert_eq!(
            finish_file(&p).unwrap().argv(),
            vec!["mv", "-f", "-T", "--", p.partial.as_str(), p.file.as_str()]
        );
        let rm: Vec<Vec<String>> = remove_backup_files(&p)
            .unwrap()
            .iter()
            .map(RemoteCmd::argv)
            .collect();
        assert_eq!(
            rm,
            vec![
                vec!["rm", "-f", "--", p.partial.as_str()],
                vec!["rm", "-f", "--", p.file.as_str()]
            ]
        );
    }

    #[test]
    fn parses_checksum_and_size() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            parse_sha256sum(&format!("{hex}  /opt/codeb/backups/x.dump\n")).as_deref(),
            Some(hex)
        );
        assert_eq!(parse_sha256sum(&hex.to_uppercase()).as_deref(), Some(hex));
        assert_eq!(parse_sha256sum("sha256sum: /x: No such file"), None);
        assert_eq!(parse_sha256sum(""), None);
        assert_eq!(parse_size("1234\n"), Some(1234));
        assert_eq!(parse_size("stat: cannot"), None);
    }
}

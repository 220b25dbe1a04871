//! File commands on a server: atomic writes, copies and renames, as
//! argument vectors of Debian's coreutils (DESIGN §3 env files, §2 the
//! Caddy config).
//!
//! An atomic write installs the payload into `{path}.tmp-codeb` from the
//! command's stdin (the payload never appears in an argument, a process
//! list or a journal), flushes it to disk, then renames it over `path` in
//! the same directory, so readers see the old file or the new one, never a
//! part. Tested byte for byte over SSH in `tests/it/caddy.rs`.

use std::time::Duration;

use crate::model::{describe_input, Invalid};
use crate::plan::cmd::RemoteCmd;

/// Suffix of the temporary file an atomic write renames into place.
pub const TMP_SUFFIX: &str = ".tmp-codeb";
/// Mode of directories an atomic write creates (existing ones keep theirs).
pub const NEW_DIR_MODE: u32 = 0o700;
/// Time limit of one file command.
pub const FILE_CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest remote path accepted.
pub const REMOTE_PATH_MAX_LEN: usize = 1024;

/// Checks a path on a server: absolute, printable ASCII without spaces,
/// no empty, `.` or `..` components, no component starting with '-', at
/// most `REMOTE_PATH_MAX_LEN` bytes, not the root itself.
pub fn validate_remote_path(path: &str) -> Result<(), Invalid> {
    let why = if path.is_empty() {
        Some("it is empty")
    } else if path.len() > REMOTE_PATH_MAX_LEN {
        Some("it is too long")
    } else if !path.bytes().all(|b| b.is_ascii_graphic()) {
        Some("it contains whitespace, control or non-ASCII characters")
    } else if !path.starts_with('/') {
        Some("it is not absolute")
    } else if path == "/" {
        Some("it is the root directory")
    } else if path[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        Some("it has an empty, '.' or '..' component")
    } else if path.split('/').any(|c| c.starts_with('-')) {
        Some("a component starts with '-'")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Invalid(format!(
            "server path {} is invalid: {why}; use an absolute path of printable ASCII characters",
            describe_input(path)
        ))),
    }
}

/// The directory holding `path` (a validated path, not the root).
pub fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Writes `data` to `path` with `mode` atomically, as four commands to run
/// in order, stopping at the first failure:
///
/// 1. `mkdir -p -m 0700 -- PARENT` (creates missing directories; the mode
///    applies to the last one only, existing ones keep theirs);
/// 2. `install -T -m MODE -- /dev/stdin PATH.tmp-codeb` with `data` on
///    stdin (install creates the file owner-only and sets `MODE` before
///    any other user could open it, and replaces a leftover temp file);
/// 3. `sync -- PATH.tmp-codeb` (the data is on disk before the rename, so a
///    crash never leaves a short file under the final name);
/// 4. `mv -f -T -- PATH.tmp-codeb PATH` (rename(2) in one directory).
///
/// `mode` is at most `0o777` (no setuid/setgid/sticky bits). A failure
/// before step 4 leaves `path` untouched (and maybe a temp file).
pub fn write_file_atomic(path: &str, data: Vec<u8>, mode: u32) -> Result<Vec<RemoteCmd>, Invalid> {
    validate_remote_path(path)?;
    let tmp = format!("{path}{TMP_SUFFIX}");
    validate_remote_path(&tmp)?;
    if mode > 0o777 {
        return Err(Invalid(format!(
            "file mode {mode:o} is invalid: use permission bits up to 0777"
        )));
    }
    Ok(vec![
        RemoteCmd::new("mkdir")
            .args(["-p", "-m"])
            .arg(format!("{NEW_DIR_MODE:04o}"))
            .arg("--")
            .arg(parent_dir(path))
            .timeout(FILE_CMD_TIMEOUT),
        RemoteCmd::new("install")
            .args(["-T", "-m"])
            .arg(format!("{mode:04o}"))
            .args(["--", "/dev/stdin"])
            .arg(tmp.clone())
            .stdin(data)
            .timeout(FILE_CMD_TIMEOUT),
        RemoteCmd::new("sync")
            .arg("--")
            .arg(tmp.clone())
            .timeout(FILE_CMD_TIMEOUT),
        rename_file(&tmp, path)?,
    ])
}

/// Copies a file keeping mode, owner and times: `cp -p -T -- SRC DST`
/// (`-T`: DST is the file itself, never a directory to copy into).
pub fn copy_file(src: &str, dst: &str) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(src)?;
    validate_remote_path(dst)?;
    Ok(RemoteCmd::new("cp")
        .args(["-p", "-T", "--"])
        .arg(src)
        .arg(dst)
        .timeout(FILE_CMD_TIMEOUT))
}

/// Renames a file over another: `mv -f -T -- SRC DST` (`-T`: if DST is a
/// directory, fail instead of moving SRC into it).
pub fn rename_file(src: &str, dst: &str) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(src)?;
    validate_remote_path(dst)?;
    Ok(RemoteCmd::new("mv")
        .args(["-f", "-T", "--"])
        .arg(src)
        .arg(dst)
        .timeout(FILE_CMD_TIMEOUT))
}

/// Removes a file if present: `rm -f -- PATH` (exits 0 when absent).
pub fn remove_file(path: &str) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(path)?;
    Ok(RemoteCmd::new("rm")
        .args(["-f", "--"])
        .arg(path)
        .timeout(FILE_CMD_TIMEOUT))
}

/// Exits 0 when `path` is a regular file (`test -f PATH`; `test` takes no
/// options, and the path is absolute).
pub fn file_exists(path: &str) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(path)?;
    Ok(RemoteCmd::new("test")
        .arg("-f")
        .arg(path)
        .timeout(FILE_CMD_TIMEOUT))
}

/// Exits 0 when both files have the same bytes, 1 when they differ, 2 on
/// trouble (e.g. one is missing): `cmp -s -- A B`.
pub fn files_equal(a: &str, b: &str) -> Result<RemoteCmd, Invalid> {
    validate_remote_path(a)?;
    validate_remote_path(b)?;
    Ok(RemoteCmd::new("cmp")
        .args(["-s", "--"])
        .arg(a)
        .arg(b)
        .timeout(FILE_CMD_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_write_file_atomic() {
        let data = b"KEY=va'l\"ue=$HOME\n".to_vec();
        let cmds =
            write_file_atomic("/opt/codeb/env/shop/.env.production", data.clone(), 0o600).unwrap();
        let argvs: Vec<Vec<String>> = cmds.iter().map(RemoteCmd::argv).collect();
        assert_eq!(
            argvs,
            vec![
                vec!["mkdir", "-p", "-m", "0700", "--", "/opt/codeb/env/shop"],
                vec![
                    "install",
                    "-T",
                    "-m",
                    "0600",
                    "--",
                    "/dev/stdin",
                    "/opt/codeb/env/shop/.env.production.tmp-codeb"
                ],
                vec![
                    "sync",
                    "--",
                    "/opt/codeb/env/shop/.env.production.tmp-codeb"
                ],
                vec![
                    "mv",
                    "-f",
                    "-T",
                    "--",
                    "/opt/codeb/env/shop/.env.production.tmp-codeb",
                    "/opt/codeb/env/shop/.env.production"
                ],
            ]
        );
        // Only the install step carries the payload, and no argument does.
        assert_eq!(cmds[1].stdin.as_deref(), Some(&data[..]));
        assert!(cmds
            .iter()
            .enumerate()
            .all(|(i, c)| (i == 1) == c.stdin.is_some()));
        assert!(cmds.iter().all(|c| c.timeout == Some(FILE_CMD_TIMEOUT)));
        assert_eq!(
            write_file_atomic("/etc/caddy/Caddyfile", vec![], 0o644).unwrap()[1].args[2],
            "0644"
        );
    }

    #[test]
    fn golden_copy_rename_remove() {
        assert_eq!(
            copy_file("/etc/caddy/Caddyfile", "/etc/caddy/Caddyfile.bak")
                .unwrap()
                .argv(),
            vec![
                "cp",
                "-p",
                "-T",
                "--",
                "/etc/caddy/Caddyfile",
                "/etc/caddy/Caddyfile.bak"
            ]
        );
        assert_eq!(
            rename_file("/a/b.new", "/a/b").unwrap().argv(),
            vec!["mv", "-f", "-T", "--", "/a/b.new", "/a/b"]
        );
        assert_eq!(
            remove_file("/a/b").unwrap().argv(),
            vec!["rm", "-f", "--", "/a/b"]
        );
        assert_eq!(
            file_exists("/a/b").unwrap().argv(),
            vec!["test", "-f", "/a/b"]
        );
        assert_eq!(
            files_equal("/a/b", "/a/b.bak").unwrap().argv(),
            vec!["cmp", "-s", "--", "/a/b", "/a/b.bak"]
        );
    }

    #[test]
    fn refuses_bad_paths_and_modes() {
        for bad in [
            "",
            "/",
            "relative/path",
            "/opt/../etc/passwd",
            "/opt/./x",
            "/opt//x",
            "/opt/x/",
            "/opt/-rf",
            "/opt/a b",
            "/opt/a\nb",
            "/opt/ü",
        ] {
            assert!(validate_remote_path(bad).is_err(), "{bad:?}");
            assert!(write_file_atomic(bad, vec![], 0o600).is_err(), "{bad:?}");
            assert!(copy_file(bad, "/x").is_err(), "{bad:?}");
            assert!(rename_file("/x", bad).is_err(), "{bad:?}");
        }
        assert!(validate_remote_path(&format!("/{}", "a".repeat(REMOTE_PATH_MAX_LEN))).is_err());
        assert!(write_file_atomic("/x/y", vec![], 0o4755).is_err());
        assert!(validate_remote_path("/opt/codeb/env/shop/.env.production").is_ok());
        let e = validate_remote_path("/opt/../x").unwrap_err().to_string();
        assert!(e.contains("'..'"), "{e}");
    }

    #[test]
    fn parents() {
        assert_eq!(parent_dir("/a/b/c"), "/a/b");
        assert_eq!(parent_dir("/a"), "/");
    }
}

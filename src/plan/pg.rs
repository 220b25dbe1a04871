//! PURE: how codeb talks to the storage server's PostgreSQL (DESIGN §6,
//! "tenants are hostile"). A project's database and everything in it —
//! functions, operators, CHECK constraints, defaults, triggers, role and
//! database settings — belong to the tenant, so codeb keeps two kinds of
//! sessions strictly apart:
//!
//! - **Catalogue sessions** run as the PostgreSQL superuser
//!   (`runuser -u postgres -- psql` over the unix socket, peer
//!   authentication), and only in the maintenance database `postgres`,
//!   which no project role may connect to (`harden_cluster` revokes
//!   CONNECT, TEMPORARY and CREATE from PUBLIC there, on `template1` and on
//!   codeb's state database). They set `search_path = pg_catalog` through
//!   the connection's `options` and name every relation, function and
//!   operator with its schema, so even an object someone managed to create
//!   in `postgres` could not be picked instead of the built-in one. They
//!   read the catalogue (a database's OID and owner) and apply the
//!   hardening; they never connect to a project's database.
//! - **Tenant sessions** — `pg_dump` for backup_create, the restore's
//!   `psql`, the row counts — connect to the project's database *as the
//!   project's own role*: its session user is that role, so whatever the
//!   tenant's code does during them (`RESET ROLE` included) it does with
//!   the privileges it already has. Never `SET ROLE` from a superuser.
//!
//! How a tenant session logs in: with the role's password, which codeb
//! generated and keeps encrypted in its env store (`POSTGRES_PASSWORD`),
//! over TCP to `storage.tenant_pg_host` (default `127.0.0.1`, which
//! PostgreSQL's stock `pg_hba.conf` lets log in with a password). The
//! password reaches libpq through a password file: codeb writes one line
//! to `install`'s stdin (never an argument, so it is in no process list
//! and no journal) into `PASSFILE_DIR/{random id}`, mode 0600, owned by
//! the OS account that runs the tools (`storage.pg_os_user`), in a
//! directory only that account can enter; the connection string names it
//! (`passfile=`), and codeb removes it when the operation ends (a file a
//! crash left behind goes with the next removal once older than
//! `PASSFILE_MAX_AGE_MINUTES`). Chosen over the alternatives because it
//! works on any storage server with stock settings: no `pg_hba.conf` or
//! `pg_ident.conf` edits (PostgreSQL 15's `pg_ident` cannot map one OS
//! user to every project role without a line per role), no second
//! credential for the role (PostgreSQL has one password per role, and
//! changing it would break the application), and no environment variable,
//! which an SSH command can only set through its argument vector.

use std::time::Duration;

use uuid::Uuid;

use crate::config::StorageConfig;
use crate::model::{describe_input, Invalid, StorageNames};
use crate::plan::backup::{as_pg_user, validate_database_name};
use crate::plan::cmd::RemoteCmd;
use crate::plan::files::FILE_CMD_TIMEOUT;

/// The database catalogue sessions connect to: it exists on every
/// PostgreSQL server, and after `harden_cluster` no project role can
/// connect to it, let alone create anything in it.
pub const MAINTENANCE_DATABASE: &str = "postgres";
/// `options` of every session codeb opens: built-in names only. A role or
/// database setting cannot override it (connection options come later).
pub const SESSION_OPTIONS: &str = "-csearch_path=pg_catalog";
/// `application_name` of codeb's sessions (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "codeb";
/// Directory of the password files of tenant sessions on the storage
/// server (on the `/run` tmpfs, so nothing survives a reboot).
pub const PASSFILE_DIR: &str = "/run/codeb/pgpass";
/// Mode of `PASSFILE_DIR`: only the account running the tools enters it.
pub const PASSFILE_DIR_MODE: u32 = 0o700;
/// Mode of one password file (libpq ignores a file others can read).
pub const PASSFILE_MODE: u32 = 0o600;
/// A password file older than this is a leftover of a crashed codeb (a
/// restore with its row counts ends well within it) and is removed.
pub const PASSFILE_MAX_AGE_MINUTES: u32 = 240;
/// Seconds a tenant session may take to connect.
pub const TENANT_CONNECT_TIMEOUT_SECS: u32 = 10;
/// Time limit of one catalogue query or the hardening.
pub const CATALOG_TIMEOUT: Duration = Duration::from_secs(30);
/// Advisory lock key (in `postgres`) serialising concurrent hardenings, so
/// two codeb calls never update the same `pg_database` row at once
/// ("tuple concurrently updated"). The ASCII of "codeb".
pub const HARDEN_LOCK_KEY: i64 = 0x63_6f_64_65_62;

/// A libpq connection string from (keyword, value) pairs, every value
/// single-quoted with `\` and `'` escaped, so no value can add a keyword.
pub fn conninfo(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let escaped = v.replace('\\', "\\\\").replace('\'', "\\'");
            format!("{k}='{escaped}'")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--dbname=` of a catalogue session: the maintenance database over the
/// unix socket, `search_path = pg_catalog`.
fn catalog_dbname(storage: &StorageConfig) -> String {
    let port = storage.postgres_port.to_string();
    format!(
        "--dbname={}",
        conninfo(&[
            ("host", &storage.pg_socket_dir),
            ("port", &port),
            ("dbname", MAINTENANCE_DATABASE),
            ("options", SESSION_OPTIONS),
            ("application_name", APPLICATION_NAME),
        ])
    )
}

/// `runuser -u postgres -- psql --no-psqlrc --no-password --tuples-only
/// --no-align --set=ON_ERROR_STOP=1 --dbname=CATALOG --command=SQL`: one
/// constant query as the superuser in the maintenance database.
fn catalog_query(storage: &StorageConfig, sql: String) -> RemoteCmd {
    as_pg_user(storage, "psql")
        .args([
            "--no-psqlrc",
            "--no-password",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
        ])
        .arg(catalog_dbname(storage))
        .arg(format!("--command={sql}"))
        .timeout(CATALOG_TIMEOUT)
}

/// The identity of `database`: `OID|OWNER`, or nothing when it does not
/// exist. Every name is qualified and the only operator is
/// `OPERATOR(pg_catalog.=)`; the database name is validated (`[a-z0-9_]`)
/// before it becomes a literal.
pub fn database_identity_sql(database: &str) -> Result<String, Invalid> {
    validate_database_name(database)?;
    Ok(format!(
        "SELECT d.oid, pg_catalog.pg_get_userbyid(d.datdba) FROM pg_catalog.pg_database d \
         WHERE d.datname OPERATOR(pg_catalog.=) '{database}'"
    ))
}

/// Reads the identity of `database` from the maintenance database (see
/// `database_identity_sql`); read with `parse_database_identity`.
pub fn database_identity(storage: &StorageConfig, database: &str) -> Result<RemoteCmd, Invalid> {
    Ok(catalog_query(storage, database_identity_sql(database)?))
}

/// (OID, owner) from `database_identity` output; `Ok(None)` when the
/// database does not exist (no output), `Err` for anything unexpected.
pub fn parse_database_identity(stdout: &str) -> Result<Option<(u32, String)>, String> {
    let line = stdout.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let parsed = line.split_once('|').and_then(|(oid, owner)| {
        let owner = owner.trim();
        (!owner.is_empty() && !owner.contains('\n'))
            .then(|| Some((oid.trim().parse().ok()?, owner.to_string())))
            .flatten()
    });
    parsed
        .map(Some)
        .ok_or_else(|| format!("unexpected database identity {}", describe_input(line)))
}

/// The hardening `harden_cluster` runs, as psql input with the variables
/// `state_db` and `state_role`. Under an advisory lock, for `postgres`,
/// `template1` and codeb's state database (when it is in this cluster):
/// if PUBLIC still holds any privilege on it, codeb's role is granted
/// CONNECT on its state database (so revoking PUBLIC never locks codeb
/// out), then everything is revoked from PUBLIC; and CREATE on `public` of
/// `postgres` is revoked from PUBLIC (PostgreSQL before 15 granted it).
/// A database that is already hardened is not written to.
pub const HARDEN_SQL: &str = r#"BEGIN;
SELECT pg_catalog.pg_advisory_xact_lock(:harden_lock);
SELECT pg_catalog.set_config('codeb.state_db', :'state_db', true);
SELECT pg_catalog.set_config('codeb.state_role', :'state_role', true);
DO $codeb$
DECLARE
  state_db text := pg_catalog.current_setting('codeb.state_db');
  state_role text := pg_catalog.current_setting('codeb.state_role');
  db text;
BEGIN
  FOREACH db IN ARRAY ARRAY['postgres', 'template1', state_db] LOOP
    CONTINUE WHEN NOT EXISTS (
      SELECT FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) db);
    IF pg_catalog.has_database_privilege('public', db, 'CONNECT')
       OR pg_catalog.has_database_privilege('public', db, 'TEMPORARY')
       OR pg_catalog.has_database_privilege('public', db, 'CREATE') THEN
      IF db OPERATOR(pg_catalog.=) state_db THEN
        EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO %I', db, state_role);
      END IF;
      EXECUTE pg_catalog.format('REVOKE ALL ON DATABASE %I FROM PUBLIC', db);
    END IF;
  END LOOP;
  IF EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'public')
     AND pg_catalog.has_schema_privilege('public', 'public', 'CREATE') THEN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
  END IF;
END
$codeb$;
COMMIT;
"#;

fn check_state_name(what: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > 63 || value.chars().any(char::is_control) {
        return Err(Invalid(format!(
            "{what} {} is not a PostgreSQL name codeb can harden: 1 to 63 bytes, no control \
             characters",
            describe_input(value)
        )));
    }
    Ok(())
}

/// Hardens the cluster (see `HARDEN_SQL`) as the superuser in the
/// maintenance database: `runuser -u postgres -- psql --no-psqlrc
/// --no-password --quiet --set=ON_ERROR_STOP=1 --set=harden_lock=KEY
/// --set=state_db=DB --set=state_role=ROLE --dbname=CATALOG --file=-`
/// with the SQL on stdin. psql quotes the variables (`:'x'`), and the
/// names go into statements only through `format('%I')`. Idempotent.
pub fn harden_cluster(
    storage: &StorageConfig,
    state_db: &str,
    state_role: &str,
) -> Result<RemoteCmd, Invalid> {
    check_state_name("state database", state_db)?;
    check_state_name("state role", state_role)?;
    Ok(as_pg_user(storage, "psql")
        .args([
            "--no-psqlrc",
            "--no-password",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
        ])
        .arg(format!("--set=harden_lock={HARDEN_LOCK_KEY}"))
        .arg(format!("--set=state_db={state_db}"))
        .arg(format!("--set=state_role={state_role}"))
        .arg(catalog_dbname(storage))
        .arg("--file=-")
        .stdin(HARDEN_SQL)
        .timeout(CATALOG_TIMEOUT))
}

/// A login to a project's database as its own role, through the password
/// file `passfile` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantLogin {
    /// The project's database.
    pub database: String,
    /// The project's role (it owns the database).
    pub role: String,
    /// `PASSFILE_DIR/{id}`.
    pub passfile: String,
}

impl TenantLogin {
    /// The login of one project environment, its password file named by
    /// `id` (random, drawn by the caller).
    pub fn new(names: &StorageNames, id: Uuid) -> Result<Self, Invalid> {
        validate_database_name(&names.pg)?;
        Ok(Self {
            database: names.pg.clone(),
            role: names.pg.clone(),
            passfile: format!("{PASSFILE_DIR}/{}", id.simple()),
        })
    }

    /// The password file's name inside `PASSFILE_DIR`.
    fn passfile_name(&self) -> &str {
        self.passfile
            .rsplit_once('/')
            .map_or(self.passfile.as_str(), |(_, n)| n)
    }
}

/// `--dbname=` of a tenant session: TCP to `storage.tenant_pg_host`, the
/// project's database as its role, the password from the login's file,
/// `search_path = pg_catalog`.
pub fn tenant_dbname(storage: &StorageConfig, login: &TenantLogin) -> String {
    let port = storage.postgres_port.to_string();
    let timeout = TENANT_CONNECT_TIMEOUT_SECS.to_string();
    format!(
        "--dbname={}",
        conninfo(&[
            ("host", &storage.tenant_pg_host),
            ("port", &port),
            ("dbname", &login.database),
            ("user", &login.role),
            ("passfile", &login.passfile),
            ("connect_timeout", &timeout),
            ("options", SESSION_OPTIONS),
            ("application_name", APPLICATION_NAME),
        ])
    )
}

/// Makes `PASSFILE_DIR` (and sets its owner and mode if it exists):
/// `install -d -o USER -m 0700 -- /run/codeb/pgpass`.
pub fn make_passfile_dir(storage: &StorageConfig) -> RemoteCmd {
    RemoteCmd::new("install")
        .args(["-d", "-o", storage.pg_os_user.as_str(), "-m"])
        .arg(format!("{PASSFILE_DIR_MODE:04o}"))
        .args(["--", PASSFILE_DIR])
        .timeout(FILE_CMD_TIMEOUT)
}

/// Writes the login's password file from stdin, owner-only and owned by
/// the account running the tools: `install -o USER -m 0600 -T --
/// /dev/stdin PASSFILE`, stdin `*:*:DATABASE:ROLE:PASSWORD` (`:` and `\`
/// escaped as libpq expects). The password must be printable: it is one
/// line of the file.
pub fn write_passfile(
    storage: &StorageConfig,
    login: &TenantLogin,
    password: &str,
) -> Result<RemoteCmd, Invalid> {
    if password.is_empty() || password.chars().any(char::is_control) {
        return Err(Invalid(
            "the stored PostgreSQL password (POSTGRES_PASSWORD) is empty or has control \
             characters, so it cannot be used to log in as the project's role"
                .into(),
        ));
    }
    let field = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    let line = format!(
        "*:*:{}:{}:{}\n",
        field(&login.database),
        field(&login.role),
        field(password)
    );
    Ok(RemoteCmd::new("install")
        .args(["-o", storage.pg_os_user.as_str(), "-m"])
        .arg(format!("{PASSFILE_MODE:04o}"))
        .args(["-T", "--", "/dev/stdin"])
        .arg(login.passfile.clone())
        .stdin(line)
        .timeout(FILE_CMD_TIMEOUT))
}

/// Removes the login's password file and any leftover older than
/// `PASSFILE_MAX_AGE_MINUTES`: `find /run/codeb/pgpass -maxdepth 1 -type
/// f ( -name ID -o -mmin +240 ) -delete`.
pub fn remove_passfile(login: &TenantLogin) -> RemoteCmd {
    RemoteCmd::new("find")
        .args([PASSFILE_DIR, "-maxdepth", "1", "-type", "f", "(", "-name"])
        .arg(login.passfile_name())
        .args(["-o", "-mmin"])
        .arg(format!("+{PASSFILE_MAX_AGE_MINUTES}"))
        .args([")", "-delete"])
        .timeout(FILE_CMD_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Environment;

    fn login() -> TenantLogin {
        TenantLogin::new(
            &StorageNames::new("shop", Environment::Production).unwrap(),
            Uuid::parse_str("0123abcd-0000-4000-8000-000000000000").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn conninfo_quotes_every_value() {
        assert_eq!(
            conninfo(&[("host", "/run/postgresql"), ("user", "a' b\\")]),
            r"host='/run/postgresql' user='a\' b\\'"
        );
    }

    #[test]
    fn catalogue_queries_run_in_postgres_with_built_in_names_only() {
        let s = StorageConfig::default();
        let c = database_identity(&s, "shop_production").unwrap();
        assert_eq!(
            c.to_string(),
            "runuser -u postgres -- psql --no-psqlrc --no-password --tuples-only --no-align \
             --set=ON_ERROR_STOP=1 \"--dbname=host='/run/postgresql' port='5432' \
             dbname='postgres' options='-csearch_path=pg_catalog' application_name='codeb'\" \
             \"--command=SELECT d.oid, pg_catalog.pg_get_userbyid(d.datdba) FROM \
             pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) \
             'shop_production'\""
        );
        for bad in ["", "-d", "a'b", "Shop", "x y"] {
            assert!(database_identity(&s, bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_database_identity("16384|shop_production\n"),
            Ok(Some((16384, "shop_production".to_string())))
        );
        assert_eq!(parse_database_identity("\n"), Ok(None));
        for bad in ["16384", "x|shop", "16384|", "psql: error"] {
            assert!(parse_database_identity(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hardening_is_one_locked_transaction_with_quoted_names() {
        let s = StorageConfig::default();
        let c = harden_cluster(&s, "codeb", "codeb").unwrap();
        assert_eq!(
            c.to_string(),
            format!(
                "runuser -u postgres -- psql --no-psqlrc --no-password --quiet \
                 --set=ON_ERROR_STOP=1 --set=harden_lock={HARDEN_LOCK_KEY} --set=state_db=codeb \
                 --set=state_role=codeb \"--dbname=host='/run/postgresql' port='5432' \
                 dbname='postgres' options='-csearch_path=pg_catalog' \
                 application_name='codeb'\" --file=-"
            )
        );
        assert_eq!(c.stdin.as_deref(), Some(HARDEN_SQL.as_bytes()));
        assert!(HARDEN_SQL.starts_with("BEGIN;\n") && HARDEN_SQL.ends_with("COMMIT;\n"));
        for needle in [
            "ARRAY['postgres', 'template1', state_db]",
            "REVOKE ALL ON DATABASE %I FROM PUBLIC",
            "GRANT CONNECT ON DATABASE %I TO %I",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        ] {
            assert!(HARDEN_SQL.contains(needle), "{needle}");
        }
        // Any name is fine as a psql variable, except control characters.
        assert!(harden_cluster(&s, "codeb-prod", "Codeb \"x\"").is_ok());
        for bad in ["", "a\nb", &"x".repeat(64)] {
            assert!(harden_cluster(&s, bad, "codeb").is_err(), "{bad:?}");
            assert!(harden_cluster(&s, "codeb", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenant_sessions_log_in_as_the_role_through_a_password_file() {
        let s = StorageConfig::default();
        let l = login();
        assert_eq!(
            l.passfile,
            format!("{PASSFILE_DIR}/0123abcd000040008000000000000000")
        );
        assert_eq!(
            tenant_dbname(&s, &l),
            "--dbname=host='127.0.0.1' port='5432' dbname='shop_production' \
             user='shop_production' passfile='/run/codeb/pgpass/0123abcd000040008000000000000000' \
             connect_timeout='10' options='-csearch_path=pg_catalog' application_name='codeb'"
        );
        assert_eq!(
            make_passfile_dir(&s).to_string(),
            "install -d -o postgres -m 0700 -- /run/codeb/pgpass"
        );
        let w = write_passfile(&s, &l, "pw:with\\odd").unwrap();
        assert_eq!(
            w.to_string(),
            format!(
                "install -o postgres -m 0600 -T -- /dev/stdin {}",
                l.passfile
            )
        );
        assert_eq!(
            w.stdin.as_deref(),
            Some(&b"*:*:shop_production:shop_production:pw\\:with\\\\odd\n"[..])
        );
        assert!(
            !w.to_string().contains("pw"),
            "the password is on stdin only"
        );
        for bad in ["", "a\nb", "tab\there"] {
            assert!(write_passfile(&s, &l, bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            remove_passfile(&l).to_string(),
            "find /run/codeb/pgpass -maxdepth 1 -type f \"(\" -name \
             0123abcd000040008000000000000000 -o -mmin \"+240\" \")\" -delete"
        );
    }
}

//! PURE: restoring a database backup (DESIGN §6, a critical operation).
//!
//! A restore is three streamed commands joined by codeb:
//!
//! 1. `cat` of the dump on the backup server; codeb counts and hashes the
//!    bytes (they must be the recorded backup's),
//! 2. `pg_restore --file=-` on the storage server, which turns the
//!    custom-format archive into SQL without connecting anywhere,
//! 3. `psql` on the storage server, connected to the project's own
//!    database only and logged in *as the project's role* (see
//!    `plan::pg`: never a superuser, never `SET ROLE`), reading
//!    `restore_prelude` and then that SQL.
//!
//! The prelude refuses to go on unless the session is the project's role
//! and no superuser, opens a transaction and empties the database (every
//! schema dropped, `public` recreated as a fresh database has it); every
//! restored object is owned by the role. Whatever the restored data runs —
//! a CHECK constraint, a default, a trigger, even `RESET ROLE` — runs with
//! the role's own privileges and nothing more. codeb
//! sends `COMMIT` only once the stream was complete and matched the
//! recorded size and SHA-256 and `pg_restore` succeeded; any failure, or a
//! stream that just ends, leaves the transaction open when psql reaches
//! the end of its input, and PostgreSQL rolls it back: a failed restore
//! changes nothing. Afterwards the database holds exactly the backup —
//! tables created since then are gone too.

use crate::plan::backup::as_pg_user;
use crate::plan::pg::{tenant_dbname, TenantLogin};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::StorageConfig;
use crate::model::{describe_input, Invalid};
use crate::plan::backup::{BACKUP_DUMP_TIMEOUT, BACKUP_ROOT};
use crate::plan::cmd::RemoteCmd;
use crate::plan::files::validate_remote_path;
use crate::plan::storage::pg_ident;

/// How long the restore waits for a lock (an application transaction
/// holding one of the tables) before it gives up and rolls back.
pub const RESTORE_LOCK_TIMEOUT_SECS: u32 = 60;
/// Time limit of counting the rows of the restored tables.
pub const ROW_COUNT_TIMEOUT: Duration = Duration::from_secs(600);
/// What codeb sends after the restore SQL once everything checked out.
pub const RESTORE_COMMIT: &str = "\nCOMMIT;\n";

/// Checks a recorded backup path: a `.dump` file under `BACKUP_ROOT`.
pub fn validate_backup_path(path: &str) -> Result<(), Invalid> {
    validate_remote_path(path)?;
    if !path.starts_with(&format!("{BACKUP_ROOT}/")) || !path.ends_with(".dump") {
        return Err(Invalid(format!(
            "backup path {} is not a dump file under {BACKUP_ROOT}",
            describe_input(path)
        )));
    }
    Ok(())
}

/// Streams a backup file to stdout: `cat -- PATH`.
pub fn read_backup_file(path: &str) -> Result<RemoteCmd, Invalid> {
    validate_backup_path(path)?;
    Ok(RemoteCmd::new("cat")
        .arg("--")
        .arg(path)
        .timeout(BACKUP_DUMP_TIMEOUT))
}

/// Turns the custom-format archive on stdin into SQL on stdout:
/// `runuser -u postgres -- pg_restore --format=custom --clean --if-exists
/// --no-owner --no-privileges --exit-on-error --file=-`. It connects to no
/// database: the SQL goes to `psql_apply`.
pub fn pg_restore_to_sql(storage: &StorageConfig) -> RemoteCmd {
    as_pg_user(storage, "pg_restore")
        .args([
            "--format=custom",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--file=-",
        ])
        .timeout(BACKUP_DUMP_TIMEOUT)
}

/// Runs the SQL on stdin in the project's database, logged in as its role,
/// and stops at the first error: `runuser -u postgres -- psql --no-psqlrc
/// --no-password --quiet --set=ON_ERROR_STOP=1 --output=/dev/null
/// --dbname=TENANT --file=-`. Without an explicit `COMMIT` in its input
/// nothing it did survives (see `restore_prelude`).
pub fn psql_apply(storage: &StorageConfig, login: &TenantLogin) -> RemoteCmd {
    as_pg_user(storage, "psql")
        .args([
            "--no-psqlrc",
            "--no-password",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--output=/dev/null",
        ])
        .arg(tenant_dbname(storage, login))
        .arg("--file=-")
        .timeout(BACKUP_DUMP_TIMEOUT)
}

/// The SQL psql reads before the restore: a transaction that first makes
/// sure the session is `role` itself and no superuser (the restore never
/// runs with more than the project's privileges), then empties the
/// database. `public` is made again as PostgreSQL 15 makes it (owned by
/// `pg_database_owner`, usable by everyone), so the database owner may
/// create in it.
pub fn restore_prelude(role: &str) -> Result<String, Invalid> {
    // Validated [a-z0-9_]: safe inside a literal.
    pg_ident(role).map_err(|e| Invalid(e.to_string()))?;
    Ok(format!(
        "BEGIN;\n\
         SET LOCAL lock_timeout = '{RESTORE_LOCK_TIMEOUT_SECS}s';\n\
         SET client_min_messages = warning;\n\
         DO $codeb$\n\
         BEGIN\n\
         \x20 IF pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.<>) 'off'\n\
         \x20    OR SESSION_USER OPERATOR(pg_catalog.<>) '{role}' THEN\n\
         \x20   RAISE EXCEPTION 'codeb restores only as role {role} itself, not as %', SESSION_USER;\n\
         \x20 END IF;\n\
         END\n\
         $codeb$;\n\
         DO $codeb$\n\
         DECLARE s text;\n\
         BEGIN\n\
         \x20 FOR s IN SELECT nspname FROM pg_catalog.pg_namespace\n\
         \x20           WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'\n\
         \x20 LOOP\n\
         \x20   EXECUTE pg_catalog.format('DROP SCHEMA %I CASCADE', s);\n\
         \x20 END LOOP;\n\
         END\n\
         $codeb$;\n\
         CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n\
         COMMENT ON SCHEMA public IS 'standard public schema';\n\
         GRANT USAGE ON SCHEMA public TO PUBLIC;\n"
    ))
}

/// The query counting the rows of every user table (ordinary and
/// partitioned) exactly, as one JSON array of `[schema, table, rows]`:
/// `query_to_xml` runs one `count(*)` per table, the identifiers quoted by
/// `format('%I')`. A constant: nothing from input is in it. It runs as the
/// project's role with `search_path = pg_catalog` (see `row_counts`), and
/// its functions are qualified all the same.
pub const ROW_COUNT_SQL: &str = "SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(n.nspname, c.relname, \
(pg_catalog.xpath('/row/n/text()', pg_catalog.query_to_xml(pg_catalog.format('SELECT pg_catalog.count(*) AS n FROM %I.%I', \
n.nspname, c.relname), false, true, '')))[1]::text::bigint) ORDER BY n.nspname, c.relname), '[]') \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'";

/// Counts the rows of every user table of the project's database, logged
/// in as its role: `runuser -u postgres -- psql --no-psqlrc --no-password
/// --tuples-only --no-align --set=ON_ERROR_STOP=1 --dbname=TENANT
/// --command=SQL`; read with `parse_row_counts`.
pub fn row_counts(storage: &StorageConfig, login: &TenantLogin) -> RemoteCmd {
    as_pg_user(storage, "psql")
        .args([
            "--no-psqlrc",
            "--no-password",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
        ])
        .arg(tenant_dbname(storage, login))
        .arg(format!("--command={ROW_COUNT_SQL}"))
        .timeout(ROW_COUNT_TIMEOUT)
}

/// `schema.table → rows` from `row_counts` output.
pub fn parse_row_counts(stdout: &str) -> Result<BTreeMap<String, i64>, String> {
    let rows: Vec<(String, String, i64)> = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("unexpected row count output ({e})"))?;
    Ok(rows
        .into_iter()
        .map(|(schema, table, n)| (format!("{schema}.{table}"), n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Environment, StorageNames};

    #[test]
    fn golden_commands() {
        let s = StorageConfig::default();
        let path = "/opt/codeb/backups/shop/production/20250102T030405Z-0123abcd.dump";
        assert_eq!(
            read_backup_file(path).unwrap().argv(),
            vec!["cat", "--", path]
        );
        assert_eq!(
            pg_restore_to_sql(&s).argv(),
            vec![
                "runuser",
                "-u",
                "postgres",
                "--",
                "pg_restore",
                "--format=custom",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--file=-"
            ]
        );
        let login = TenantLogin::new(
            &StorageNames::new("shop", Environment::Production).unwrap(),
            uuid::Uuid::nil(),
        )
        .unwrap();
        let tenant = tenant_dbname(&s, &login);
        assert!(tenant.contains("user='shop_production'"), "{tenant}");
        assert_eq!(
            psql_apply(&s, &login).argv(),
            vec![
                "runuser",
                "-u",
                "postgres",
                "--",
                "psql",
                "--no-psqlrc",
                "--no-password",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                "--output=/dev/null",
                tenant.as_str(),
                "--file=-"
            ]
        );
        let counts = row_counts(&s, &login).argv();
        assert_eq!(
            counts[4..10],
            [
                "psql",
                "--no-psqlrc",
                "--no-password",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1"
            ]
        );
        assert_eq!(counts[10], tenant);
        assert_eq!(counts[11], format!("--command={ROW_COUNT_SQL}"));
        for bad in [
            "/etc/passwd",
            "/opt/codeb/backups/../x.dump",
            "/opt/codeb/backups/shop/production/x.dump.partial",
            "/opt/codeb/backupsx/a.dump",
            "relative.dump",
        ] {
            assert!(read_backup_file(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prelude_opens_a_transaction_and_refuses_any_other_session_user() {
        let p = restore_prelude("shop_production").unwrap();
        assert!(p.starts_with("BEGIN;\n"), "{p}");
        assert!(!p.contains("SET ROLE"), "{p}");
        assert!(!p.contains("COMMIT"), "{p}");
        assert!(
            p.contains(
                "  IF pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.<>) 'off'\n\
                 \x20    OR SESSION_USER OPERATOR(pg_catalog.<>) 'shop_production' THEN\n\
                 \x20   RAISE EXCEPTION"
            ),
            "{p}"
        );
        assert!(p.contains("NOT LIKE 'pg\\_%'"), "{p}");
        assert!(p.ends_with(
            "CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n\
             COMMENT ON SCHEMA public IS 'standard public schema';\n\
             GRANT USAGE ON SCHEMA public TO PUBLIC;\n"
        ));
        for bad in ["", "x\"; DROP ROLE codeb; --", "x'y", "Shop", "a-b"] {
            assert!(restore_prelude(bad).is_err(), "{bad:?}");
        }
        assert_eq!(RESTORE_COMMIT.trim(), "COMMIT;");
    }

    #[test]
    fn parses_counts() {
        let out = "[[\"other\", \"x\", 0], [\"public\", \"items\", 50000]]\n";
        let m = parse_row_counts(out).unwrap();
        assert_eq!(m["public.items"], 50000);
        assert_eq!(m["other.x"], 0);
        assert_eq!(parse_row_counts("[]\n").unwrap().len(), 0);
        assert!(parse_row_counts("ERROR").is_err());
    }
}

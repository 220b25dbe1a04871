//! PURE: restoring a database backup (DESIGN §6, a critical operation).
//!
//! A restore is three streamed commands joined by codeb:
//!
//! 1. `cat` of the dump on the backup server; codeb counts and hashes the
//!    bytes (they must be the recorded backup's),
//! 2. `pg_restore --file=-` on the storage server, which turns the
//!    custom-format archive into SQL without connecting anywhere,
//! 3. `psql` on the storage server, connected to the project's own
//!    database only, reading `restore_prelude` and then that SQL.
//!
//! The prelude opens a transaction, empties the database (every schema
//! dropped, `public` recreated as a fresh database has it) and switches to
//! the project's role, so every restored object is owned by it. codeb
//! sends `COMMIT` only once the stream was complete and matched the
//! recorded size and SHA-256 and `pg_restore` succeeded; any failure, or a
//! stream that just ends, leaves the transaction open when psql reaches
//! the end of its input, and PostgreSQL rolls it back: a failed restore
//! changes nothing. Afterwards the database holds exactly the backup —
//! tables created since then are gone too.

use crate::plan::backup::as_pg_user;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::StorageConfig;
use crate::model::{describe_input, Invalid};
use crate::plan::backup::{validate_database_name, BACKUP_DUMP_TIMEOUT, BACKUP_ROOT};
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

/// `runuser -u postgres -- psql --no-psqlrc --no-password --tuples-only
/// --no-align --host=SOCKET --port=PORT --dbname=DATABASE --command=SQL`:
/// one constant query in the project's database, unaligned output.
fn psql_query(
    storage: &StorageConfig,
    database: &str,
    sql: &str,
    timeout: Duration,
) -> Result<RemoteCmd, Invalid> {
    validate_database_name(database)?;
    Ok(as_pg_user(storage, "psql")
        .args([
            "--no-psqlrc",
            "--no-password",
            "--tuples-only",
            "--no-align",
        ])
        .arg(format!("--host={}", storage.pg_socket_dir))
        .arg(format!("--port={}", storage.postgres_port))
        .arg(format!("--dbname={database}"))
        .arg(format!("--command={sql}"))
        .timeout(timeout))
}

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

/// Runs the SQL on stdin in `database` and stops at the first error:
/// `runuser -u postgres -- psql --no-psqlrc --no-password --quiet
/// --set=ON_ERROR_STOP=1 --output=/dev/null --host=SOCKET --port=PORT
/// --dbname=DATABASE --file=-`. Without an explicit `COMMIT` in its input
/// nothing it did survives (see `restore_prelude`).
pub fn psql_apply(storage: &StorageConfig, database: &str) -> Result<RemoteCmd, Invalid> {
    validate_database_name(database)?;
    Ok(as_pg_user(storage, "psql")
        .args([
            "--no-psqlrc",
            "--no-password",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--output=/dev/null",
        ])
        .arg(format!("--host={}", storage.pg_socket_dir))
        .arg(format!("--port={}", storage.postgres_port))
        .arg(format!("--dbname={database}"))
        .arg("--file=-")
        .timeout(BACKUP_DUMP_TIMEOUT))
}

/// The SQL psql reads before the restore: a transaction that empties the
/// database (as the superuser) and then acts as `role`. `public` is made
/// again as PostgreSQL 15 makes it (owned by `pg_database_owner`, usable
/// by everyone), so the database owner may create in it.
pub fn restore_prelude(role: &str) -> Result<String, Invalid> {
    let role = pg_ident(role).map_err(|e| Invalid(e.to_string()))?;
    Ok(format!(
        "BEGIN;\n\
         SET LOCAL lock_timeout = '{RESTORE_LOCK_TIMEOUT_SECS}s';\n\
         SET client_min_messages = warning;\n\
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
         GRANT USAGE ON SCHEMA public TO PUBLIC;\n\
         SET ROLE {role};\n"
    ))
}

/// The query counting the rows of every user table (ordinary and
/// partitioned) exactly, as one JSON array of `[schema, table, rows]`:
/// `query_to_xml` runs one `count(*)` per table, the identifiers quoted by
/// `format('%I')`. A constant: nothing from input is in it.
pub const ROW_COUNT_SQL: &str = "SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname, \
(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), \
false, true, '')))[1]::text::bigint) ORDER BY n.nspname, c.relname), '[]') \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'";

/// Counts the rows of every user table of `database`:
/// `runuser -u postgres -- psql --no-psqlrc --no-password --tuples-only
/// --no-align --host=SOCKET --port=PORT --dbname=DATABASE --command=SQL`;
/// read with `parse_row_counts`.
pub fn row_counts(storage: &StorageConfig, database: &str) -> Result<RemoteCmd, Invalid> {
    psql_query(storage, database, ROW_COUNT_SQL, ROW_COUNT_TIMEOUT)
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

/// The identity of the database psql connects to: its OID and owner, as
/// `OID|OWNER`. A database dropped and made again under the same name has
/// another OID. A constant: nothing from input is in it.
pub const DATABASE_IDENTITY_SQL: &str =
    "SELECT d.oid::text || '|' || pg_catalog.pg_get_userbyid(d.datdba) \
FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()";

/// Reads the identity of `database`: `runuser -u postgres -- psql
/// --no-psqlrc --no-password --tuples-only --no-align --host=SOCKET
/// --port=PORT --dbname=DATABASE --command=SQL`; read with
/// `parse_database_identity`.
pub fn database_identity(storage: &StorageConfig, database: &str) -> Result<RemoteCmd, Invalid> {
    psql_query(
        storage,
        database,
        DATABASE_IDENTITY_SQL,
        crate::plan::backup::DATABASE_LIST_TIMEOUT,
    )
}

/// (OID, owner) from `database_identity` output.
pub fn parse_database_identity(stdout: &str) -> Option<(u32, String)> {
    let (oid, owner) = stdout.trim().split_once('|')?;
    let owner = owner.trim();
    (!owner.is_empty()).then_some(())?;
    Some((oid.trim().parse().ok()?, owner.to_string()))
}

/// The owner of `database` in `psql --list` output (`name|owner|...`,
/// see `plan::backup::list_databases`), if it is listed.
pub fn database_owner(listing: &str, database: &str) -> Option<String> {
    listing.lines().find_map(|l| {
        let mut fields = l.split('|');
        (fields.next() == Some(database))
            .then(|| fields.next().map(str::to_string))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            psql_apply(&s, "shop_production").unwrap().argv(),
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
                "--host=/run/postgresql",
                "--port=5432",
                "--dbname=shop_production",
                "--file=-"
            ]
        );
        let counts = row_counts(&s, "shop_production").unwrap().argv();
        assert_eq!(
            counts[4..9],
            [
                "psql",
                "--no-psqlrc",
                "--no-password",
                "--tuples-only",
                "--no-align"
            ]
        );
        assert_eq!(counts[11], "--dbname=shop_production");
        assert_eq!(counts[12], format!("--command={ROW_COUNT_SQL}"));
        for bad in ["", "-d", "a=b", "x y", "shop-production", "Shop"] {
            assert!(psql_apply(&s, bad).is_err(), "{bad:?}");
            assert!(row_counts(&s, bad).is_err(), "{bad:?}");
        }
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
    fn prelude_opens_a_transaction_and_acts_as_the_role() {
        let p = restore_prelude("shop_production").unwrap();
        assert!(p.starts_with("BEGIN;\n"), "{p}");
        assert!(p.ends_with("SET ROLE \"shop_production\";\n"), "{p}");
        assert!(!p.contains("COMMIT"), "{p}");
        assert!(p.contains("NOT LIKE 'pg\\_%'"), "{p}");
        assert!(p.contains("CREATE SCHEMA public AUTHORIZATION pg_database_owner;"));
        for bad in ["", "x\"; DROP ROLE codeb; --", "Shop", "a-b"] {
            assert!(restore_prelude(bad).is_err(), "{bad:?}");
        }
        assert_eq!(RESTORE_COMMIT.trim(), "COMMIT;");
    }

    #[test]
    fn parses_counts_and_owners() {
        let out = "[[\"other\", \"x\", 0], [\"public\", \"items\", 50000]]\n";
        let m = parse_row_counts(out).unwrap();
        assert_eq!(m["public.items"], 50000);
        assert_eq!(m["other.x"], 0);
        assert_eq!(parse_row_counts("[]\n").unwrap().len(), 0);
        assert!(parse_row_counts("ERROR").is_err());
        let listing = "codeb|codeb|UTF8|C.UTF-8|C.UTF-8||libc|\n\
                       shop_production|shop_production|UTF8|C.UTF-8|C.UTF-8||libc|=Tc/x\n";
        assert_eq!(
            database_owner(listing, "shop_production").as_deref(),
            Some("shop_production")
        );
        assert_eq!(database_owner(listing, "shop"), None);
        assert_eq!(
            parse_database_identity("16384|shop_production\n"),
            Some((16384, "shop_production".to_string()))
        );
        for bad in ["", "16384", "x|shop", "16384|", "psql: error"] {
            assert_eq!(parse_database_identity(bad), None, "{bad:?}");
        }
        let id = database_identity(&StorageConfig::default(), "shop_production")
            .unwrap()
            .argv();
        assert_eq!(id[11], "--dbname=shop_production");
        assert_eq!(id[12], format!("--command={DATABASE_IDENTITY_SQL}"));
        assert!(database_identity(&StorageConfig::default(), "-x").is_err());
    }
}

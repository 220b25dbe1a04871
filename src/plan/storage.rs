//! Per-project storage on the storage server (DESIGN §1, §3), as values:
//! the SQL that creates and drops a project's PostgreSQL role and database,
//! the SCRAM-SHA-256 verifier sent instead of a plaintext password, the
//! `redis-cli` session that creates or deletes a Redis ACL user, and the
//! env variables and `.env.local` text handed to the project.
//!
//! Pure: randomness (passwords, salts) comes in as arguments. Identifiers
//! are validated and double-quoted; the only literal interpolated into SQL
//! is a verifier built here from base64 text.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::model::{Environment, StorageNames};
use crate::plan::cmd::RemoteCmd;

/// PBKDF2 iterations of the SCRAM verifier (PostgreSQL's default, RFC 7677's minimum).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Salt length of the SCRAM verifier in bytes (PostgreSQL's default).
pub const SCRAM_SALT_BYTES: usize = 16;
/// Length of a generated project password: alphanumeric, about 190 bits.
pub const PASSWORD_LEN: usize = 32;
/// The alphabet of generated passwords: safe in URLs and env files unquoted.
pub const PASSWORD_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Connections one project role may hold at once.
pub const PG_CONNECTION_LIMIT: u32 = 50;
/// Time limit of one `redis-cli` session on the storage server.
pub const REDIS_CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// The protected env keys codeb owns (DESIGN §3), in the order they are listed.
pub const PROTECTED_KEYS: [&str; 5] = [
    "DATABASE_URL",
    "DIRECT_URL",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "REDIS_URL",
];
/// Non-secret key codeb also sets: the Redis key prefix the project's user may use.
pub const REDIS_PREFIX_KEY: &str = "REDIS_PREFIX";

/// Rules after the password and key/channel patterns of every project's
/// Redis user. Everything except: administration and the commands Redis
/// itself calls dangerous (FLUSHALL, FLUSHDB, KEYS, CONFIG, INFO, SORT,
/// SWAPDB, DEBUG, MONITOR, ...); commands that list or pick keys and
/// channels regardless of key patterns (SCAN, RANDOMKEY, PUBSUB CHANNELS),
/// which would show other projects' key names; and the server-wide Lua
/// function library and script cache (FUNCTION, SCRIPT FLUSH/KILL), which
/// one project could wipe for all.
pub const REDIS_COMMAND_RULES: &[&str] = &[
    "+@all",
    "-@admin",
    "-@dangerous",
    "-scan",
    "-randomkey",
    "-pubsub|channels",
    "-pubsub|shardchannels",
    "-function",
    "-script|flush",
    "-script|kill",
];

/// Why a storage plan cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoragePlanError {
    /// A name is not a plain identifier.
    #[error("{what} {value:?} is not allowed: {why}")]
    BadName {
        /// Which name.
        what: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

fn bad(what: &'static str, value: &str, why: &'static str) -> StoragePlanError {
    StoragePlanError::BadName {
        what,
        value: value.to_string(),
        why,
    }
}

/// A PostgreSQL identifier (role or database) checked to be
/// `[a-z][a-z0-9_]{0,62}` and returned double-quoted.
pub fn pg_ident(name: &str) -> Result<String, StoragePlanError> {
    let ok_start = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if !ok_start || name.len() > 63 {
        return Err(bad(
            "PostgreSQL name",
            name,
            "must start with a-z and have at most 63 characters",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad(
            "PostgreSQL name",
            name,
            "only a-z, 0-9 and '_' are allowed",
        ));
    }
    Ok(format!("\"{name}\""))
}

/// A SCRAM-SHA-256 password verifier in PostgreSQL's `rolpassword` format,
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802,
/// RFC 7677). Only `scram_sha256_verifier` builds one, so its text is
/// always base64 and digits — safe inside a SQL string literal.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier(String);

impl ScramVerifier {
    /// The verifier text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ScramVerifier {
    /// Not secret in the way a password is, but a target for guessing:
    /// kept out of logs all the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

/// The SCRAM keys derived from a password: (ClientKey, StoredKey, ServerKey).
pub fn scram_sha256_keys(
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> ([u8; 32], [u8; 32], [u8; 32]) {
    // PostgreSQL applies SASLprep to the password; generated passwords are
    // ASCII letters and digits, which SASLprep leaves unchanged.
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac_sha256(&salted, b"Server Key");
    (client_key, stored_key, server_key)
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The verifier PostgreSQL stores for `password` with this salt.
pub fn scram_sha256_verifier(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
    let (_, stored_key, server_key) = scram_sha256_keys(password, salt, iterations);
    ScramVerifier(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    ))
}

/// A password of `PASSWORD_LEN` characters from `PASSWORD_ALPHABET`, drawn
/// from random bytes by rejection sampling (no modulo bias). Returns
/// `None` when `random` ran out before enough characters were drawn.
pub fn password_from_random(random: &[u8]) -> Option<String> {
    // 248 is the largest multiple of 62 below 256.
    let limit = (256 / PASSWORD_ALPHABET.len() * PASSWORD_ALPHABET.len()) as u8;
    let out: String = random
        .iter()
        .filter(|&&b| b < limit)
        .take(PASSWORD_LEN)
        .map(|&b| PASSWORD_ALPHABET[b as usize % PASSWORD_ALPHABET.len()] as char)
        .collect();
    (out.len() == PASSWORD_LEN).then_some(out)
}

/// The statements that create one project environment's role and
/// database, in order, each run on its own (CREATE DATABASE cannot run in
/// a transaction). The role logs in with the verifier's password only;
/// codeb joins the role so it may own-create (and later drop) the
/// database; nobody but the owner may connect.
pub fn pg_create_statements(
    names: &StorageNames,
    verifier: &ScramVerifier,
) -> Result<Vec<String>, StoragePlanError> {
    let ident = pg_ident(&names.pg)?;
    Ok(vec![
        format!(
            "CREATE ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT {PG_CONNECTION_LIMIT} PASSWORD '{}'",
            verifier.as_str()
        ),
        format!("GRANT {ident} TO CURRENT_USER"),
        format!("CREATE DATABASE {ident} OWNER {ident} ENCODING 'UTF8'"),
        format!("REVOKE ALL ON DATABASE {ident} FROM PUBLIC"),
    ])
}

/// The statement that drops the database (closing its sessions).
pub fn pg_drop_database_statement(names: &StorageNames) -> Result<String, StoragePlanError> {
    Ok(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        pg_ident(&names.pg)?
    ))
}

/// The statement that drops the role (after its database).
pub fn pg_drop_role_statement(names: &StorageNames) -> Result<String, StoragePlanError> {
    Ok(format!("DROP ROLE IF EXISTS {}", pg_ident(&names.pg)?))
}

/// One argument quoted for `redis-cli`'s line splitting: inside double
/// quotes, every byte outside printable ASCII and every `"` and `\` as
/// `\xHH`, so no input can end the argument or start another.
pub fn redis_quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for b in arg.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

fn check_redis_user(user: &str) -> Result<(), StoragePlanError> {
    if user.is_empty()
        || user.starts_with('-')
        || !user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad(
            "Redis user",
            user,
            "only a-z, 0-9 and '-' are allowed, not first '-'",
        ));
    }
    Ok(())
}

fn check_redis_prefix(prefix: &str) -> Result<(), StoragePlanError> {
    if prefix.is_empty()
        || !prefix.ends_with(':')
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b':')
    {
        return Err(bad(
            "Redis key prefix",
            prefix,
            "only a-z, 0-9, '-' and ':' are allowed, ending in ':'",
        ));
    }
    Ok(())
}

/// Hex SHA-256 of a password, the form Redis ACLs store (`#<hash>`).
pub fn redis_password_hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// `ACL SETUSER` for one project environment: a fresh user (reset), on,
/// only this password, only keys and channels under the prefix, and the
/// commands of `REDIS_COMMAND_RULES`.
pub fn redis_setuser_line(
    names: &StorageNames,
    password_sha256_hex: &str,
) -> Result<String, StoragePlanError> {
    check_redis_user(&names.redis_user)?;
    check_redis_prefix(&names.redis_prefix)?;
    if password_sha256_hex.len() != 64
        || !password_sha256_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad(
            "Redis password hash",
            "(not shown)",
            "must be 64 lowercase hex digits",
        ));
    }
    let prefix = &names.redis_prefix;
    Ok(format!(
        "ACL SETUSER {} reset on #{password_sha256_hex} ~{prefix}* &{prefix}* {}",
        names.redis_user,
        REDIS_COMMAND_RULES.join(" ")
    ))
}

/// `ACL GETUSER` for one project environment (nil when the user is absent).
pub fn redis_getuser_line(names: &StorageNames) -> Result<String, StoragePlanError> {
    check_redis_user(&names.redis_user)?;
    Ok(format!("ACL GETUSER {}", names.redis_user))
}

/// `ACL DELUSER` for project environments.
pub fn redis_deluser_line(names: &[&StorageNames]) -> Result<String, StoragePlanError> {
    let mut line = String::from("ACL DELUSER");
    for n in names {
        check_redis_user(&n.redis_user)?;
        line.push(' ');
        line.push_str(&n.redis_user);
    }
    Ok(line)
}

/// How ACL changes survive a Redis restart: `ACL SAVE` when Redis keeps
/// users in an ACL file, else `CONFIG REWRITE` (users live in redis.conf).
pub fn redis_persist_line(aclfile_configured: bool) -> &'static str {
    if aclfile_configured {
        "ACL SAVE"
    } else {
        "CONFIG REWRITE"
    }
}

/// A `redis-cli` session on the storage server: connects to Redis on the
/// server's loopback, reads `lines` from stdin (after `AUTH` with the
/// admin password, when one is set) and prints one JSON reply per line.
/// The password and every command travel on stdin, never in the argv.
pub fn redis_cli_session(port: u16, admin_password: Option<&str>, lines: &[String]) -> RemoteCmd {
    let mut input = String::new();
    if let Some(pw) = admin_password {
        input.push_str("AUTH ");
        input.push_str(&redis_quote(pw));
        input.push('\n');
    }
    for l in lines {
        input.push_str(l);
        input.push('\n');
    }
    RemoteCmd::new("redis-cli")
        .args(["-e", "--json", "-2", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .timeout(REDIS_CLI_TIMEOUT)
        .stdin(input)
}

/// One reply printed by `redis-cli --json`.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisReply {
    /// A value (status, string, integer, array or null).
    Value(serde_json::Value),
    /// An error reply, e.g. `NOPERM ...` or `WRONGPASS ...`.
    Error(String),
}

impl RedisReply {
    /// True for the status reply `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, RedisReply::Value(serde_json::Value::String(s)) if s == "OK")
    }
}

/// Splits `redis-cli --json` output into replies, one per line: JSON
/// values, or `error:"..."` for error replies. A line that is neither is
/// kept as an error (the tool printed something unexpected).
pub fn parse_redis_replies(stdout: &str) -> Vec<RedisReply> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            if let Some(rest) = l.strip_prefix("error:") {
                let text = serde_json::from_str::<String>(rest).unwrap_or_else(|_| rest.into());
                RedisReply::Error(text)
            } else {
                match serde_json::from_str(l) {
                    Ok(v) => RedisReply::Value(v),
                    Err(_) => RedisReply::Error(format!("unexpected output {l:?}")),
                }
            }
        })
        .collect()
}

/// Where the project's services reach PostgreSQL and Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEndpoint {
    /// Host name or address (validated by config).
    pub host: String,
    /// PostgreSQL port.
    pub postgres_port: u16,
    /// Redis port.
    pub redis_port: u16,
}

fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The env variables codeb sets for one project environment: the five
/// protected keys plus `REDIS_PREFIX`. The password is alphanumeric and
/// the names plain, so nothing needs percent-encoding.
pub fn storage_env_vars(
    names: &StorageNames,
    password: &str,
    endpoint: &StorageEndpoint,
) -> BTreeMap<String, String> {
    let host = url_host(&endpoint.host);
    let database_url = format!(
        "postgresql://{}:{password}@{host}:{}/{}",
        names.pg, endpoint.postgres_port, names.pg
    );
    BTreeMap::from([
        ("DATABASE_URL".to_string(), database_url.clone()),
        ("DIRECT_URL".to_string(), database_url),
        ("POSTGRES_USER".to_string(), names.pg.clone()),
        ("POSTGRES_PASSWORD".to_string(), password.to_string()),
        (
            "REDIS_URL".to_string(),
            format!(
                "redis://{}:{password}@{host}:{}/0",
                names.redis_user, endpoint.redis_port
            ),
        ),
        (REDIS_PREFIX_KEY.to_string(), names.redis_prefix.clone()),
    ])
}

/// A `.env.local` for local development of one environment: the same keys
/// pointing at a local PostgreSQL and Redis with well-known development
/// credentials. It holds no server secret.
pub fn env_local_text(project: &str, environment: Environment, names: &StorageNames) -> String {
    let db = &names.pg;
    format!(
        "# .env.local for {project} ({environment}): local development only.\n\
         # Points at a local PostgreSQL and Redis; codeb's server credentials are not here.\n\
         DATABASE_URL=postgresql://postgres:postgres@localhost:5432/{db}\n\
         DIRECT_URL=postgresql://postgres:postgres@localhost:5432/{db}\n\
         POSTGRES_USER=postgres\n\
         POSTGRES_PASSWORD=postgres\n\
         REDIS_URL=redis://localhost:6379/0\n\
         REDIS_PREFIX={}\n",
        names.redis_prefix
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> StorageNames {
        StorageNames::new("shop", Environment::Production).unwrap()
    }

    fn b64(s: &str) -> Vec<u8> {
        BASE64.decode(s).unwrap()
    }

    /// RFC 7677 §3: user "user", password "pencil", salt
    /// W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations. The keys derived here
    /// must reproduce the exchange's client proof and server signature.
    #[test]
    fn scram_keys_match_the_rfc_7677_example() {
        let salt = b64("W22ZaJ0SNY7soEsUEjb6gQ==");
        let (client_key, stored_key, server_key) = scram_sha256_keys("pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let client_signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            BASE64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = hmac_sha256(&server_key, auth_message.as_bytes());
        assert_eq!(
            BASE64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let v = scram_sha256_verifier("pencil", &salt, 4096);
        assert_eq!(
            v.as_str(),
            format!(
                "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==${}:{}",
                BASE64.encode(stored_key),
                BASE64.encode(server_key)
            )
        );
        assert_eq!(format!("{v:?}"), "ScramVerifier(..)");
    }

    #[test]
    fn pg_statements_are_golden() {
        let v = ScramVerifier("SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB".into());
        assert_eq!(
            pg_create_statements(&shop(), &v).unwrap(),
            vec![
                "CREATE ROLE \"shop_production\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS CONNECTION LIMIT 50 PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB'",
                "GRANT \"shop_production\" TO CURRENT_USER",
                "CREATE DATABASE \"shop_production\" OWNER \"shop_production\" ENCODING 'UTF8'",
                "REVOKE ALL ON DATABASE \"shop_production\" FROM PUBLIC",
            ]
        );
        assert_eq!(
            pg_drop_database_statement(&shop()).unwrap(),
            "DROP DATABASE IF EXISTS \"shop_production\" WITH (FORCE)"
        );
        assert_eq!(
            pg_drop_role_statement(&shop()).unwrap(),
            "DROP ROLE IF EXISTS \"shop_production\""
        );
    }

    #[test]
    fn pg_identifiers_are_refused_unless_plain() {
        for bad in [
            "",
            "Shop",
            "1shop",
            "shop\"; DROP ROLE codeb; --",
            "shop-x",
            "shöp",
            &"a".repeat(64),
        ] {
            assert!(pg_ident(bad).is_err(), "{bad:?}");
        }
        assert_eq!(pg_ident("a_1").unwrap(), "\"a_1\"");
        let mut n = shop();
        n.pg = "x\" SUPERUSER".into();
        let v = scram_sha256_verifier("pw", b"salt", 1);
        assert!(pg_create_statements(&n, &v).is_err());
        assert!(pg_drop_role_statement(&n).is_err());
    }

    #[test]
    fn passwords_are_alphanumeric_and_unbiased_by_rejection() {
        let random: Vec<u8> = (0..=255u8).cycle().take(512).collect();
        let pw = password_from_random(&random).unwrap();
        assert_eq!(pw.len(), PASSWORD_LEN);
        assert!(pw.bytes().all(|b| b.is_ascii_alphanumeric()));
        // Bytes 248..=255 are rejected, not folded onto the first letters.
        assert_eq!(password_from_random(&[255; 64]), None);
        assert_eq!(password_from_random(&[0; 31]), None);
        assert_eq!(password_from_random(&[61; 40]).unwrap(), "9".repeat(32));
    }

    #[test]
    fn redis_lines_are_golden() {
        let hash = redis_password_hash("abc");
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            redis_setuser_line(&shop(), &hash).unwrap(),
            format!(
                "ACL SETUSER shop-production reset on #{hash} ~shop:production:* &shop:production:* \
                 +@all -@admin -@dangerous -scan -randomkey -pubsub|channels -pubsub|shardchannels \
                 -function -script|flush -script|kill"
            )
        );
        assert_eq!(
            redis_getuser_line(&shop()).unwrap(),
            "ACL GETUSER shop-production"
        );
        let staging = StorageNames::new("shop", Environment::Staging).unwrap();
        assert_eq!(
            redis_deluser_line(&[&shop(), &staging]).unwrap(),
            "ACL DELUSER shop-production shop-staging"
        );
        assert!(redis_setuser_line(&shop(), "not-hex").is_err());
        let mut n = shop();
        n.redis_user = "x allkeys".into();
        assert!(redis_setuser_line(&n, &hash).is_err());
        let mut n = shop();
        n.redis_prefix = "*".into();
        assert!(redis_setuser_line(&n, &hash).is_err());
        assert_eq!(redis_persist_line(true), "ACL SAVE");
        assert_eq!(redis_persist_line(false), "CONFIG REWRITE");
    }

    #[test]
    fn redis_quoting_keeps_any_password_one_argument() {
        assert_eq!(redis_quote("abc"), "\"abc\"");
        assert_eq!(
            redis_quote("a\"b\\c d\n'é"),
            "\"a\\x22b\\x5cc d\\x0a'\\xc3\\xa9\""
        );
    }

    #[test]
    fn redis_session_keeps_secrets_on_stdin() {
        let c = redis_cli_session(6379, Some("s3cret\"pw"), &["PING".to_string()]);
        assert_eq!(
            c.argv(),
            vec![
                "redis-cli",
                "-e",
                "--json",
                "-2",
                "-h",
                "127.0.0.1",
                "-p",
                "6379"
            ]
        );
        assert_eq!(
            c.stdin.as_deref(),
            Some(&b"AUTH \"s3cret\\x22pw\"\nPING\n"[..])
        );
        let c = redis_cli_session(7000, None, &["PING".to_string()]);
        assert_eq!(c.stdin.as_deref(), Some(&b"PING\n"[..]));
        assert_eq!(c.timeout, Some(REDIS_CLI_TIMEOUT));
    }

    #[test]
    fn redis_replies_parse() {
        let out = "\"OK\"\n[\"aclfile\",\"\"]\nnull\nerror:\"NOPERM this user has no permissions\"\n3\nbogus\n";
        let r = parse_redis_replies(out);
        assert_eq!(r.len(), 6);
        assert!(r[0].is_ok());
        assert_eq!(r[1], RedisReply::Value(serde_json::json!(["aclfile", ""])));
        assert_eq!(r[2], RedisReply::Value(serde_json::Value::Null));
        assert_eq!(
            r[3],
            RedisReply::Error("NOPERM this user has no permissions".into())
        );
        assert!(!r[4].is_ok());
        assert!(matches!(&r[5], RedisReply::Error(e) if e.contains("bogus")));
    }

    #[test]
    fn env_vars_and_env_local() {
        let ep = StorageEndpoint {
            host: "10.77.0.12".into(),
            postgres_port: 5432,
            redis_port: 6379,
        };
        let vars = storage_env_vars(&shop(), "PW0123456789", &ep);
        let url = "postgresql://shop_production:PW0123456789@10.77.0.12:5432/shop_production";
        assert_eq!(vars["DATABASE_URL"], url);
        assert_eq!(vars["DIRECT_URL"], url);
        assert_eq!(vars["POSTGRES_USER"], "shop_production");
        assert_eq!(vars["POSTGRES_PASSWORD"], "PW0123456789");
        assert_eq!(
            vars["REDIS_URL"],
            "redis://shop-production:PW0123456789@10.77.0.12:6379/0"
        );
        assert_eq!(vars["REDIS_PREFIX"], "shop:production:");
        for k in PROTECTED_KEYS {
            assert!(vars.contains_key(k), "{k}");
        }
        assert_eq!(vars.len(), PROTECTED_KEYS.len() + 1);
        let v6 = storage_env_vars(
            &shop(),
            "pw",
            &StorageEndpoint {
                host: "fd00::12".into(),
                ..ep
            },
        );
        assert!(v6["REDIS_URL"].contains("@[fd00::12]:6379/"));

        let text = env_local_text("shop", Environment::Production, &shop());
        assert!(text.contains(
            "DATABASE_URL=postgresql://postgres:postgres@localhost:5432/shop_production\n"
        ));
        assert!(text.contains("REDIS_URL=redis://localhost:6379/0\n"));
        assert!(!text.contains("10.77.0.12"));
        for k in PROTECTED_KEYS {
            assert!(text.contains(&format!("\n{k}=")), "{k}");
        }
    }
}

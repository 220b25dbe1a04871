//! Environment variables as data (DESIGN §3): key and value rules, the env
//! file codeb writes to servers, key-level diffs and server paths. Pure.
//!
//! The env file is podman's `--env-file` format: `KEY=value` per line, the
//! value literal to the end of the line (no quotes, no escapes, no `$`
//! expansion), `#` lines ignored. That format cannot carry a value with a
//! line break, so such a value is written on a comment line
//! `#codeb-base64 KEY=<base64>` (podman skips it, the file stays a complete
//! record) and reaches the container as a podman secret instead.

use std::collections::BTreeMap;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{describe_input, Environment, Invalid};

/// Keys codeb owns (set by project_create); only owners may change them.
pub const PROTECTED_KEYS: &[&str] = &[
    "DATABASE_URL",
    "DIRECT_URL",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "REDIS_URL",
];
/// Longest key name.
pub const KEY_MAX_LEN: usize = 128;
/// Largest single value.
pub const VALUE_MAX_BYTES: usize = 64 * 1024;
/// Most keys in one environment.
pub const MAX_KEYS: usize = 1000;
/// Prefix of the comment line carrying a multi-line value.
pub const MULTILINE_PREFIX: &str = "#codeb-base64 ";
/// Root of the env files on the app server.
pub const APP_ENV_ROOT: &str = "/opt/codeb/env";
/// Root of the env copies on the backup server.
pub const BACKUP_ENV_ROOT: &str = "/opt/codeb/env-backup";

/// One key of a version as stored and shown: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyInfo {
    /// Variable name.
    pub key: String,
    /// Short keyed SHA-256 fingerprint of the value (equal values, equal fingerprints).
    pub fingerprint: String,
    /// Owned by codeb; only owners may change it.
    pub protected: bool,
}

/// Checks a variable name: a letter or `_`, then letters, digits and `_`.
pub fn validate_key(key: &str) -> Result<(), Invalid> {
    let ok = !key.is_empty()
        && key.len() <= KEY_MAX_LEN
        && (key.as_bytes()[0].is_ascii_alphabetic() || key.as_bytes()[0] == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "env key {} is not a valid variable name: use 1-{KEY_MAX_LEN} letters, digits and '_', not starting with a digit (e.g. API_URL)",
            describe_input(key)
        )))
    }
}

/// Checks a value: any text up to `VALUE_MAX_BYTES` without NUL (the
/// process environment cannot hold NUL).
pub fn validate_value(key: &str, value: &str) -> Result<(), Invalid> {
    if value.len() > VALUE_MAX_BYTES {
        return Err(Invalid(format!(
            "the value of {key} is {} bytes; values may be at most {VALUE_MAX_BYTES} bytes",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Invalid(format!(
            "the value of {key} contains a NUL character, which no process environment can hold"
        )));
    }
    Ok(())
}

/// True for keys codeb owns: the built-in ones and `extra`.
pub fn is_protected(key: &str, extra: &[String]) -> bool {
    PROTECTED_KEYS.contains(&key) || extra.iter().any(|k| k == key)
}

/// True when a value cannot be a line of podman's env file.
pub fn needs_secret(value: &str) -> bool {
    value.contains('\n') || value.contains('\r')
}

/// The requested change of an env_set.
#[derive(Debug, Clone, Default)]
pub struct EnvChange {
    /// Keys to set to these values.
    pub set: BTreeMap<String, String>,
    /// Keys to remove.
    pub unset: Vec<String>,
}

/// Validates a change: key names, values, no key both set and unset,
/// protected keys only when `may_change_protected`.
pub fn validate_change(
    change: &EnvChange,
    extra_protected: &[String],
    may_change_protected: bool,
) -> Result<(), Invalid> {
    if change.set.is_empty() && change.unset.is_empty() {
        return Err(Invalid(
            "nothing to change: give `set` (KEY: value) and/or `unset` (keys)".into(),
        ));
    }
    for (k, v) in &change.set {
        validate_key(k)?;
        validate_value(k, v)?;
    }
    for k in &change.unset {
        validate_key(k)?;
        if change.set.contains_key(k) {
            return Err(Invalid(format!("{k} is both in set and unset; pick one")));
        }
    }
    if !may_change_protected {
        let protected: Vec<&str> = change
            .set
            .keys()
            .chain(change.unset.iter())
            .filter(|k| is_protected(k, extra_protected))
            .map(String::as_str)
            .collect();
        if !protected.is_empty() {
            return Err(Invalid(format!(
                "{} protected (owned by codeb: set by project_create); only an owner may change them",
                protected.join(", ")
            )));
        }
    }
    Ok(())
}

/// `current` with `change` applied; errors when the result has too many keys.
pub fn apply_change(
    current: &BTreeMap<String, String>,
    change: &EnvChange,
) -> Result<BTreeMap<String, String>, Invalid> {
    let mut next = current.clone();
    for k in &change.unset {
        next.remove(k);
    }
    for (k, v) in &change.set {
        next.insert(k.clone(), v.clone());
    }
    if next.len() > MAX_KEYS {
        return Err(Invalid(format!(
            "an environment may hold at most {MAX_KEYS} keys; this change would make {}",
            next.len()
        )));
    }
    Ok(next)
}

/// A key that differs between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyChange {
    /// Variable name.
    pub key: String,
    /// added, changed or removed.
    pub change: String,
    /// Fingerprint before (absent when added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Fingerprint after (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Key-level difference from `old` to `new` (by fingerprint), sorted by key.
pub fn diff(old: &[KeyInfo], new: &[KeyInfo]) -> Vec<KeyChange> {
    let old: BTreeMap<&str, &str> = old
        .iter()
        .map(|k| (k.key.as_str(), k.fingerprint.as_str()))
        .collect();
    let new: BTreeMap<&str, &str> = new
        .iter()
        .map(|k| (k.key.as_str(), k.fingerprint.as_str()))
        .collect();
    let mut out = Vec::new();
    for (k, fp) in &new {
        match old.get(k) {
            None => out.push(KeyChange {
                key: k.to_string(),
                change: "added".into(),
                from: None,
                to: Some(fp.to_string()),
            }),
            Some(before) if before != fp => out.push(KeyChange {
                key: k.to_string(),
                change: "changed".into(),
                from: Some(before.to_string()),
                to: Some(fp.to_string()),
            }),
            Some(_) => {}
        }
    }
    for (k, fp) in &old {
        if !new.contains_key(k) {
            out.push(KeyChange {
                key: k.to_string(),
                change: "removed".into(),
                from: Some(fp.to_string()),
                to: None,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The env file of one version (see the module docs for the format).
pub fn render_env_file(
    project: &str,
    environment: Environment,
    version: i32,
    vars: &BTreeMap<String, String>,
) -> String {
    let mut out = format!(
        "# codeb env {project}/{environment} v{version}. Written by codeb (env_sync); edits are reported as drift and overwritten.\n\
         # Format: podman --env-file (KEY=value, literal to the end of the line). Multi-line values are base64 on\n\
         # '{}KEY=' lines and reach the container as podman secrets.\n",
        MULTILINE_PREFIX.trim_end()
    );
    for (k, v) in vars {
        if needs_secret(v) {
            out.push_str(MULTILINE_PREFIX);
            out.push_str(k);
            out.push('=');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(v.as_bytes()));
        } else {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out.push('\n');
    }
    out
}

/// Reads an env file written by `render_env_file` back (for checks and
/// restores): `KEY=value` lines and multi-line comment lines.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, Invalid> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (key, value) = if let Some(rest) = line.strip_prefix(MULTILINE_PREFIX) {
            let (k, b64) = rest
                .split_once('=')
                .ok_or_else(|| Invalid(format!("line {}: no '=' after the key", i + 1)))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| Invalid(format!("line {}: {k} is not valid base64", i + 1)))?;
            let v = String::from_utf8(bytes)
                .map_err(|_| Invalid(format!("line {}: {k} is not UTF-8", i + 1)))?;
            (k.to_string(), v)
        } else if line.starts_with('#') {
            continue;
        } else {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Invalid(format!("line {}: no '=' after the key", i + 1)))?;
            (k.to_string(), v.to_string())
        };
        validate_key(&key)?;
        vars.insert(key, value);
    }
    Ok(vars)
}

/// `/opt/codeb/env/{project}/.env.{environment}` on the app server.
pub fn app_env_path(project: &str, environment: Environment) -> String {
    format!("{APP_ENV_ROOT}/{project}/.env.{environment}")
}

/// `/opt/codeb/env-backup/{project}/{environment}/v{N}.env` on the backup server.
pub fn backup_env_path(project: &str, environment: Environment, version: i32) -> String {
    format!("{BACKUP_ENV_ROOT}/{project}/{environment}/v{version}.env")
}

/// podman secret name carrying `key` for `container` (a validated
/// container name and key: `[a-z0-9-]` then `-env-` then `[A-Za-z0-9_]`).
pub fn secret_name(container: &str, key: &str) -> String {
    format!("{container}-env-{key}")
}

/// Prefix of every env secret of `container`.
pub fn secret_prefix(container: &str) -> String {
    format!("{container}-env-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_must_be_variable_names() {
        for good in ["A", "_X", "api_url", "A1_B2", &"K".repeat(KEY_MAX_LEN)] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "A=B",
            "Ä",
            "A\n",
            "-rf",
            "$(id)",
            "A.B",
            &"K".repeat(KEY_MAX_LEN + 1),
        ] {
            let e = validate_key(bad).unwrap_err().0;
            assert!(e.contains("not a valid variable name"), "{e}");
        }
    }

    #[test]
    fn values_refuse_only_nul_and_oversize() {
        assert!(validate_value("A", "a=b \"q\" 'x' $HOME\n\tü 🦀").is_ok());
        assert!(validate_value("A", "").is_ok());
        assert!(validate_value("A", "x\0y").unwrap_err().0.contains("NUL"));
        assert!(validate_value("A", &"x".repeat(VALUE_MAX_BYTES + 1))
            .unwrap_err()
            .0
            .contains("at most"));
    }

    #[test]
    fn protected_keys_need_an_owner() {
        let change = EnvChange {
            set: map(&[("DATABASE_URL", "x"), ("API", "y")]),
            unset: vec!["REDIS_URL".into()],
        };
        let e = validate_change(&change, &[], false).unwrap_err().0;
        assert!(e.contains("DATABASE_URL, REDIS_URL protected"), "{e}");
        assert!(validate_change(&change, &[], true).is_ok());
        let extra = EnvChange {
            set: map(&[("STRIPE_KEY", "x")]),
            unset: vec![],
        };
        assert!(validate_change(&extra, &[], false).is_ok());
        assert!(validate_change(&extra, &["STRIPE_KEY".into()], false).is_err());
    }

    #[test]
    fn change_rules() {
        let empty = EnvChange::default();
        assert!(validate_change(&empty, &[], true)
            .unwrap_err()
            .0
            .contains("nothing"));
        let both = EnvChange {
            set: map(&[("A", "1")]),
            unset: vec!["A".into()],
        };
        assert!(validate_change(&both, &[], true)
            .unwrap_err()
            .0
            .contains("both"));
        let bad = EnvChange {
            set: map(&[("1X", "1")]),
            unset: vec![],
        };
        assert!(validate_change(&bad, &[], true).is_err());
        let cur = map(&[("A", "1"), ("B", "2")]);
        let next = apply_change(
            &cur,
            &EnvChange {
                set: map(&[("C", "3"), ("A", "9")]),
                unset: vec!["B".into()],
            },
        )
        .unwrap();
        assert_eq!(next, map(&[("A", "9"), ("C", "3")]));
        let many: BTreeMap<String, String> = (0..MAX_KEYS)
            .map(|i| (format!("K{i}"), "v".into()))
            .collect();
        let e = apply_change(
            &many,
            &EnvChange {
                set: map(&[("ONE_MORE", "v")]),
                unset: vec![],
            },
        )
        .unwrap_err();
        assert!(e.0.contains("at most"), "{}", e.0);
    }

    #[test]
    fn diff_by_fingerprint() {
        let k = |key: &str, fp: &str| KeyInfo {
            key: key.into(),
            fingerprint: fp.into(),
            protected: false,
        };
        let old = vec![k("A", "1"), k("B", "2"), k("C", "3")];
        let new = vec![k("A", "1"), k("B", "9"), k("D", "4")];
        let d = diff(&old, &new);
        let summary: Vec<(&str, &str)> = d
            .iter()
            .map(|c| (c.key.as_str(), c.change.as_str()))
            .collect();
        assert_eq!(
            summary,
            [("B", "changed"), ("C", "removed"), ("D", "added")]
        );
        assert_eq!(d[0].from.as_deref(), Some("2"));
        assert_eq!(d[0].to.as_deref(), Some("9"));
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn env_file_golden_and_round_trip() {
        let vars = map(&[
            ("PLAIN", "v"),
            ("TRICKY", "a=b \"q\" 'x' $HOME ü 🦀 "),
            ("EMPTY", ""),
            ("PEM", "-----BEGIN-----\nabc\n-----END-----\n"),
            ("CR", "x\ry"),
        ]);
        let text = render_env_file("shop", Environment::Production, 3, &vars);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# codeb env shop/production v3."));
        assert!(lines.iter().all(|l| !l.is_empty()));
        assert_eq!(
            &lines[3..],
            [
                "#codeb-base64 CR=eA15",
                "EMPTY=",
                "#codeb-base64 PEM=LS0tLS1CRUdJTi0tLS0tCmFiYwotLS0tLUVORC0tLS0tCg==",
                "PLAIN=v",
                "TRICKY=a=b \"q\" 'x' $HOME ü 🦀 ",
            ]
        );
        assert_eq!(parse_env_file(&text).unwrap(), vars);
        assert!(parse_env_file("no equals\n").is_err());
        assert!(parse_env_file("1BAD=x\n").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(
            app_env_path("shop", Environment::Staging),
            "/opt/codeb/env/shop/.env.staging"
        );
        assert_eq!(
            backup_env_path("shop", Environment::Production, 12),
            "/opt/codeb/env-backup/shop/production/v12.env"
        );
        assert_eq!(
            secret_name("shop-production-blue", "TLS_KEY"),
            "shop-production-blue-env-TLS_KEY"
        );
        assert!(needs_secret("a\nb") && needs_secret("a\r") && !needs_secret("a b"));
    }
}

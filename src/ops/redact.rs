//! Scrubbing of secret values from text that leaves codeb (logs, errors,
//! journals): codeb's own credentials and every env value it has seen
//! are registered here; `redact` replaces them, and the log writer runs
//! every log line through it.

use std::collections::HashSet;
use std::io::Write;
use std::sync::RwLock;

use aho_corasick::AhoCorasick;

/// Shortest value registered: shorter ones would scrub ordinary words.
pub const MIN_SECRET_LEN: usize = 6;

struct Secrets {
    known: Option<HashSet<String>>,
    /// Longest first, so a secret containing another is replaced whole.
    patterns: Vec<String>,
    matcher: Option<AhoCorasick>,
}

static SECRETS: RwLock<Secrets> = RwLock::new(Secrets {
    known: None,
    patterns: Vec::new(),
    matcher: None,
});

/// Registers a value that must never appear in output (at least
/// `MIN_SECRET_LEN` bytes).
pub fn register(secret: &str) {
    register_all([secret]);
}

/// Env keys whose values are names codeb prints anyway (the database role,
/// the Redis key prefix), not secrets.
pub const NAME_KEYS: [&str; 2] = ["POSTGRES_USER", crate::plan::storage::REDIS_PREFIX_KEY];

/// Registers the values of env variables, except those of `NAME_KEYS`.
pub fn register_env<'a>(vars: impl IntoIterator<Item = (&'a String, &'a String)>) {
    register_all(
        vars.into_iter()
            .filter(|(k, _)| !NAME_KEYS.contains(&k.as_str()))
            .map(|(_, v)| v.as_str()),
    );
}

/// Registers several values at once (one rebuild of the matcher).
pub fn register_all<'a>(secrets: impl IntoIterator<Item = &'a str>) {
    let fresh: Vec<&str> = {
        let s = SECRETS.read().expect("redact lock");
        secrets
            .into_iter()
            .filter(|v| v.len() >= MIN_SECRET_LEN)
            // Environment names are in every message: an env value equal
            // to one (`NODE_ENV=production`) is not masked, or no message
            // would be readable.
            .filter(|v| {
                !crate::model::Environment::ALL
                    .iter()
                    .any(|e| e.as_str() == *v)
            })
            .filter(|v| !s.known.as_ref().is_some_and(|k| k.contains(*v)))
            .collect()
    };
    if fresh.is_empty() {
        return;
    }
    let mut s = SECRETS.write().expect("redact lock");
    let mut added = false;
    for v in fresh {
        if s.known
            .get_or_insert_with(HashSet::new)
            .insert(v.to_string())
        {
            s.patterns.push(v.to_string());
            added = true;
        }
    }
    if added {
        s.patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        s.matcher = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&s.patterns)
            .ok();
    }
}

/// `text` with every registered secret replaced by `[redacted]`.
pub fn redact(text: &str) -> String {
    let s = SECRETS.read().expect("redact lock");
    match &s.matcher {
        Some(m) if m.is_match(text) => m.replace_all(text, &vec!["[redacted]"; s.patterns.len()]),
        _ => text.to_string(),
    }
}

/// A log writer (stderr) that redacts each formatted event before writing
/// it; tracing writes one event per `write_all`.
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_scrubbed() {
        register("canary-redact-1234");
        register("abc");
        register("canary-redact-1234-longer");
        assert_eq!(redact("x canary-redact-1234 y abc"), "x [redacted] y abc");
        assert_eq!(
            redact("canary-redact-1234-longer!"),
            "[redacted]!",
            "the longer secret wins"
        );
        let mut w = RedactingStderr;
        assert_eq!(w.write(b"canary-redact-1234\n").unwrap(), 19);
    }

    #[test]
    fn names_codeb_prints_are_not_masked() {
        let vars: std::collections::BTreeMap<String, String> = [
            ("POSTGRES_USER", "rolename_production"),
            ("REDIS_PREFIX", "rolename:production:"),
            ("NODE_ENV", "production"),
            ("API_TOKEN", "canary-env-token-5678"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        register_env(&vars);
        assert_eq!(
            redact("role rolename_production, prefix rolename:production:, env production, token canary-env-token-5678"),
            "role rolename_production, prefix rolename:production:, env production, token [redacted]"
        );
    }
}

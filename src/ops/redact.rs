//! Scrubbing of secret values from text that leaves codeb (logs, errors,
//! journals). Env values arrive with issue [3]; until then the only
//! secrets codeb holds are its own credentials.

use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a value that must never appear in output (at least 6 bytes:
/// shorter values would scrub ordinary words).
pub fn register(secret: &str) {
    if secret.len() >= 6 {
        let mut s = SECRETS.write().expect("redact lock");
        if !s.iter().any(|x| x == secret) {
            s.push(secret.to_string());
        }
    }
}

/// `text` with every registered secret replaced by `[redacted]`.
pub fn redact(text: &str) -> String {
    let s = SECRETS.read().expect("redact lock");
    let mut out = text.to_string();
    for secret in s.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_scrubbed() {
        register("canary-redact-1234");
        register("abc");
        assert_eq!(redact("x canary-redact-1234 y abc"), "x [redacted] y abc");
    }
}

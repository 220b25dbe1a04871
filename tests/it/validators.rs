//! Property tests of the input validators (issue [5]: "a fuzz or property
//! test of the validators"). For arbitrary strings — random unicode and
//! near-miss strings built from the characters attacks use — a validator
//! never panics, its refusal is short, and anything it accepts has no
//! whitespace or control character, does not start with '-', and matches
//! the documented grammar (checked here by an independent implementation).
//! Strings generated from each grammar are accepted. Pure: no testbed.

use codeb::model::{normalize_domain, validate_hostname, validate_project_name};
use codeb::plan::envvars::{validate_key, validate_value, KEY_MAX_LEN};
use codeb::plan::files::validate_remote_path;
use codeb::plan::podman::{validate_container_name, validate_image_ref, CONTAINER_NAME_MAX_LEN};
use codeb::plan::storage::pg_ident;
use proptest::prelude::*;

/// Cases per property: enough to hit the edges, a few seconds in all.
const CASES: u32 = 1000;
/// Longest refusal text.
const MAX_MESSAGE: usize = 2048;

/// Arbitrary strings: random unicode, and strings over an alphabet of
/// grammar characters mixed with what injections use (option dashes,
/// shell metacharacters, path traversal, control and look-alike characters).
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[-a-zA-Z0-9._/:@]{0,70}",
        "[-a-z0-9._/:@;$()`'\"|&<>*?~ \\t\\n\\r\u{0}\u{202e}\u{0455}\u{ff53}\u{00e9}]{0,70}",
        "(-|--|\\.\\./|/)?[a-z0-9]{0,10}([-._/:;$`\\n][a-z0-9]{0,10}){0,6}",
        "[a-z]{1,5}".prop_map(|s| s.repeat(80)),
    ]
}

/// What every accepted value must satisfy, whatever the grammar.
fn assert_inert(what: &str, s: &str) {
    assert!(!s.is_empty(), "{what}: accepted an empty value");
    assert!(
        !s.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{what}: accepted whitespace or control characters: {s:?}"
    );
    assert!(!s.starts_with('-'), "{what}: accepted a leading '-': {s:?}");
    assert!(
        s.is_ascii(),
        "{what}: accepted non-ASCII (look-alikes): {s:?}"
    );
}

fn assert_short(what: &str, message: &str) {
    assert!(
        message.len() <= MAX_MESSAGE,
        "{what}: refusal of {} bytes",
        message.len()
    );
}

fn lower_digit(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `^[a-z][a-z0-9-]{1,30}[a-z0-9]$`
fn project_grammar(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|&c| lower_digit(c) || c == b'-')
        && lower_digit(b[b.len() - 1])
}

/// Labels of 1-63 letters, digits and '-', not at either end.
fn label_grammar(l: &str) -> bool {
    let b = l.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn project_names(s in hostile()) {
        match validate_project_name(&s) {
            Ok(()) => {
                assert_inert("project", &s);
                prop_assert!(project_grammar(&s), "project accepted off-grammar {s:?}");
            }
            Err(e) => {
                assert_short("project", &e.0);
                prop_assert!(!project_grammar(&s), "project refused {s:?}: {}", e.0);
            }
        }
    }

    #[test]
    fn valid_project_names_are_accepted(s in "[a-z][a-z0-9-]{1,30}[a-z0-9]") {
        prop_assert!(validate_project_name(&s).is_ok(), "{s:?}");
    }

    #[test]
    fn hostnames_and_domains(s in hostile()) {
        match validate_hostname(&s) {
            Ok(()) => {
                let name = s.strip_suffix('.').unwrap_or(&s);
                assert_inert("hostname", name);
                prop_assert!(name.len() <= 253 && name.split('.').all(label_grammar), "hostname {s:?}");
            }
            Err(e) => assert_short("hostname", &e),
        }
        match normalize_domain(&s, false) {
            Ok(d) => {
                assert_inert("domain", &d);
                let labels: Vec<&str> = d.split('.').collect();
                prop_assert!(d.len() <= 253 && labels.len() >= 2, "domain {d:?}");
                prop_assert!(labels.iter().all(|l| label_grammar(l)), "domain {d:?}");
                prop_assert_eq!(d.to_ascii_lowercase(), d.clone());
            }
            Err(e) => assert_short("domain", &e.0),
        }
    }

    #[test]
    fn valid_domains_are_accepted(
        s in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}\\.[a-z]{2,6}"
    ) {
        prop_assert!(validate_hostname(&s).is_ok(), "{s:?}");
        prop_assert_eq!(normalize_domain(&s.to_ascii_uppercase(), false).unwrap(), s);
    }

    #[test]
    fn image_refs(s in hostile()) {
        match validate_image_ref(&s) {
            Ok(()) => {
                assert_inert("image", &s);
                prop_assert!(s.len() <= codeb::plan::podman::IMAGE_REF_MAX_LEN);
                // A registry part is required: podman never resolves a short name.
                let (registry, rest) = s.split_once('/').expect("image has a registry part");
                prop_assert!(registry.contains(['.', ':']) || registry == "localhost", "{s:?}");
                prop_assert!(!rest.is_empty(), "{s:?}");
            }
            Err(e) => assert_short("image", &e.0),
        }
    }

    #[test]
    fn valid_image_refs_are_accepted(
        s in "[a-z0-9]{1,10}(\\.[a-z]{2,5}|:[1-9][0-9]{1,3})/[a-z0-9]{1,10}(/[a-z0-9]{1,10})?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"
    ) {
        prop_assert!(validate_image_ref(&s).is_ok(), "{s:?}");
    }

    #[test]
    fn remote_paths(s in hostile()) {
        match validate_remote_path(&s) {
            Ok(()) => {
                assert_inert("path", &s);
                prop_assert!(s.starts_with('/') && s != "/", "{s:?}");
                for c in s[1..].split('/') {
                    prop_assert!(!c.is_empty() && c != "." && c != ".." && !c.starts_with('-'), "{s:?}");
                }
            }
            Err(e) => assert_short("path", &e.0),
        }
    }

    #[test]
    fn valid_remote_paths_are_accepted(s in "(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}){1,6}") {
        prop_assert!(validate_remote_path(&s).is_ok(), "{s:?}");
    }

    #[test]
    fn env_keys_and_values(s in hostile()) {
        match validate_key(&s) {
            Ok(()) => {
                assert_inert("env key", &s);
                let b = s.as_bytes();
                prop_assert!(b.len() <= KEY_MAX_LEN);
                prop_assert!(b[0].is_ascii_alphabetic() || b[0] == b'_', "{s:?}");
                prop_assert!(b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_'), "{s:?}");
            }
            Err(e) => assert_short("env key", &e.0),
        }
        // Values are data: anything without NUL is accepted.
        prop_assert_eq!(validate_value("K", &s).is_ok(), !s.contains('\0'), "{:?}", s);
    }

    #[test]
    fn valid_env_keys_are_accepted(s in "[A-Za-z_][A-Za-z0-9_]{0,60}") {
        prop_assert!(validate_key(&s).is_ok(), "{s:?}");
    }

    #[test]
    fn container_names(s in hostile()) {
        match validate_container_name(&s) {
            Ok(()) => {
                assert_inert("container", &s);
                let b = s.as_bytes();
                prop_assert!(b.len() <= CONTAINER_NAME_MAX_LEN && b[0].is_ascii_alphanumeric(), "{s:?}");
                prop_assert!(b.iter().all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)), "{s:?}");
            }
            Err(e) => assert_short("container", &e.0),
        }
    }

    #[test]
    fn valid_container_names_are_accepted(s in "[a-z0-9][a-z0-9_.-]{0,60}") {
        prop_assert!(validate_container_name(&s).is_ok(), "{s:?}");
    }

    #[test]
    fn pg_identifiers(s in hostile()) {
        match pg_ident(&s) {
            Ok(quoted) => {
                assert_inert("pg identifier", &s);
                let b = s.as_bytes();
                prop_assert!(b.len() <= 63 && b[0].is_ascii_lowercase(), "{s:?}");
                prop_assert!(b.iter().all(|&c| lower_digit(c) || c == b'_'), "{s:?}");
                prop_assert_eq!(quoted, format!("\"{s}\""));
            }
            Err(e) => assert_short("pg identifier", &e.to_string()),
        }
    }

    #[test]
    fn valid_pg_identifiers_are_accepted(s in "[a-z][a-z0-9_]{0,62}") {
        prop_assert!(pg_ident(&s).is_ok(), "{s:?}");
    }

    #[test]
    fn override_reasons(s in hostile()) {
        // Free text, but never control characters (besides line breaks and
        // tabs) or bidirectional overrides, and never blank.
        if codeb::plan::policy::validate_override_reason(&s).is_ok() {
            prop_assert!(!s.trim().is_empty() && s.chars().count() <= 1000);
            prop_assert!(!s.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}'), "{s:?}");
        }
    }
}

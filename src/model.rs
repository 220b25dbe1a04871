//! Plain data and the validators every value passes before it is used:
//! projects, environments, slots, server roles. No I/O here.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest string any tool accepts in a name-like field; longer input is
/// refused before any other check so a 1 MB argument costs nothing.
pub const MAX_NAME_LEN: usize = 253;

/// A role a server plays in the fleet (DESIGN §1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ServerRole {
    /// Containers, Caddy, PowerDNS.
    App,
    /// PostgreSQL, Redis, the registry.
    Storage,
    /// Centrifugo.
    Streaming,
    /// Backup copies.
    Backup,
}

impl ServerRole {
    /// Every role, in fleet order.
    pub const ALL: [ServerRole; 4] = [Self::App, Self::Storage, Self::Streaming, Self::Backup];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Storage => "storage",
            Self::Streaming => "streaming",
            Self::Backup => "backup",
        }
    }
}

impl fmt::Display for ServerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Live traffic.
    Production,
    /// Pre-production.
    Staging,
    /// Previews.
    Preview,
}

impl Environment {
    /// Every environment.
    pub const ALL: [Environment; 3] = [Self::Production, Self::Staging, Self::Preview];

    /// Lowercase name, as stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Staging => "staging",
            Self::Preview => "preview",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The host port range of this environment (inclusive), DESIGN §2.
    pub fn port_range(self) -> (u16, u16) {
        match self {
            Self::Production => (4100, 4499),
            Self::Staging => (4500, 4999),
            Self::Preview => (5000, 5499),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the two slots of a (project, environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    /// Even port.
    Blue,
    /// Odd port.
    Green,
}

impl SlotName {
    /// Both slots.
    pub const ALL: [SlotName; 2] = [Self::Blue, Self::Green];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Host port of this slot given the pair's even base port.
    pub fn port(self, base_port: u16) -> u16 {
        match self {
            Self::Blue => base_port,
            Self::Green => base_port + 1,
        }
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle state of a slot (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// No container.
    Empty,
    /// Healthy, reachable on its preview URL, not receiving traffic.
    Deployed,
    /// Receiving traffic.
    Active,
    /// Previous active slot, kept for rollback until it expires.
    Grace,
}

impl SlotState {
    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "empty" => Some(Self::Empty),
            "deployed" => Some(Self::Deployed),
            "active" => Some(Self::Active),
            "grace" => Some(Self::Grace),
            _ => None,
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Deployed => "deployed",
            Self::Active => "active",
            Self::Grace => "grace",
        }
    }
}

/// A validation failure; the text says what is wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Describes a rejected value without echoing large or control-laden input.
pub fn describe_input(s: &str) -> String {
    if s.is_empty() {
        return "an empty string".into();
    }
    if s.len() > 64 || s.chars().any(|c| c.is_control()) {
        return format!("a value of {} bytes", s.len());
    }
    format!("{s:?}")
}

/// Access roles, ordered (DESIGN §6): viewer < member < admin < owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Deploys and changes env.
    Member,
    /// Creates projects, manages keys, approves.
    Admin,
    /// Everything, including protected env keys.
    Owner,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Self::Viewer, Self::Member, Self::Admin, Self::Owner];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Deserialises a lowercase name with `parse`. Unlike serde's derived
/// "unknown variant" error, the message never echoes a long or
/// control-character value (it goes back to the caller as a tool error).
fn deserialize_name<'de, D, T>(
    d: D,
    what: &str,
    accepted: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{what} {} is unknown; use {accepted}",
            describe_input(&s)
        ))
    })
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_name(
            d,
            "environment",
            "production, staging or preview",
            Self::parse,
        )
    }
}

impl<'de> Deserialize<'de> for SlotName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_name(d, "slot", "blue or green", Self::parse)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_name(d, "role", "viewer, member, admin or owner", Self::parse)
    }
}

/// Project names: `^[a-z][a-z0-9-]{1,30}[a-z0-9]$` (DESIGN §2).
pub fn validate_project_name(name: &str) -> Result<(), Invalid> {
    let ok = name.len() >= 3
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "project name {} is invalid: use 3-32 characters, lowercase letters, digits and '-', starting with a letter and not ending with '-'",
            describe_input(name)
        )))
    }
}

/// Server names in config: lowercase letters, digits and '-', starting with a letter.
pub fn is_valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// SSH user names: POSIX-portable, not starting with '-'.
pub fn is_valid_ssh_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Names of a (project, environment)'s resources on the storage server
/// (DESIGN §1): one PostgreSQL database and login role, one Redis ACL user
/// confined to a key prefix. Derived from a validated project name only:
/// project names have no `_`, so mapping `-` to `_` cannot collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageNames {
    /// PostgreSQL database and role name, e.g. `shop_production` (≤ 43 bytes, [a-z0-9_]).
    pub pg: String,
    /// Redis ACL user, e.g. `shop-production`.
    pub redis_user: String,
    /// Redis key (and channel) prefix, e.g. `shop:production:`.
    pub redis_prefix: String,
}

impl StorageNames {
    /// Names for a project that passed `validate_project_name`.
    pub fn new(project: &str, environment: Environment) -> Result<Self, Invalid> {
        validate_project_name(project)?;
        Ok(Self {
            pg: format!("{}_{}", project.replace('-', "_"), environment.as_str()),
            redis_user: format!("{project}-{}", environment.as_str()),
            redis_prefix: format!("{project}:{}:", environment.as_str()),
        })
    }
}

/// DNS host names: ASCII (punycode for IDNs), labels 1-63 of letters, digits
/// and '-', not starting or ending with '-', total at most 253 characters.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty host name".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "host name of {} characters is longer than 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("host name has an empty label".into());
        }
        if label.len() > 63 {
            return Err("host name label longer than 63 characters".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label {} has characters other than letters, digits and '-' (use punycode for unicode names)",
                describe_input(label)
            ));
        }
    }
    Ok(())
}

/// A domain as given to domain_setup (or a zone in config), checked and
/// normalised: one trailing dot is allowed and dropped, letters are
/// lowercased, and then the name must have at least two labels of 1-63
/// letters, digits and '-' (not at either end), 253 characters at most.
/// Unicode is refused: give it as punycode (`xn--...`). A leading `*.`
/// label is accepted only with `allow_wildcard`. The message says what is
/// accepted.
pub fn normalize_domain(input: &str, allow_wildcard: bool) -> Result<String, Invalid> {
    const ACCEPTED: &str =
        "a domain is letters, digits and '-' in dot-separated labels, e.g. shop.example.com";
    let bad = |why: String| {
        Err(Invalid(format!(
            "domain {}: {why}; {ACCEPTED}",
            describe_input(input)
        )))
    };
    if input.len() > MAX_NAME_LEN + 1 {
        return bad(format!("{} characters is longer than 253", input.len()));
    }
    if !input.is_ascii() {
        return bad(
            "has non-ASCII characters: give an internationalised name as punycode (xn--...)".into(),
        );
    }
    let name = input
        .strip_suffix('.')
        .unwrap_or(input)
        .to_ascii_lowercase();
    if name.is_empty() {
        return bad("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return bad(format!("{} characters is longer than 253", name.len()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return bad("needs at least two labels".into());
    }
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() {
            return bad("has an empty label (two dots in a row, or a leading dot)".into());
        }
        if *label == "*" {
            if i == 0 && allow_wildcard {
                continue;
            }
            return bad("wildcards are not accepted here".into());
        }
        if label.len() > 63 {
            return bad(format!(
                "label of {} characters is longer than 63",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad(format!("label {label:?} starts or ends with '-'"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad(format!(
                "label {} has characters other than letters, digits and '-'",
                describe_input(label)
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("ends with a numeric label (an IP address is not a domain)".into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised() {
        assert_eq!(
            normalize_domain("Shop.Example.TEST.", false).unwrap(),
            "shop.example.test"
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example", false).unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_domain("*.example.test", true).unwrap(),
            "*.example.test"
        );
        let long_ok = format!(
            "{}.test",
            [
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(56)
            ]
            .join(".")
        );
        assert_eq!(long_ok.len(), 253);
        assert!(normalize_domain(&long_ok, false).is_ok());
    }

    #[test]
    fn bad_domains_are_refused_with_advice() {
        let huge = "a".repeat(1 << 20);
        let long = format!("{}.test", "a.".repeat(148));
        for bad in [
            "",
            ".",
            "shop..example.test",
            ".shop.example.test",
            "shop.example.test..",
            "-shop.example.test",
            "shop-.example.test",
            "shäp.example.test",
            "*.example.test",
            "shop.*.test",
            "localhost",
            "shop_1.example.test",
            "shop example.test",
            "1.2.3.4",
            &long,
            &huge,
            &"a".repeat(64),
            "x.\n.test",
            "shop.example.test\n",
        ] {
            let e = normalize_domain(bad, false).unwrap_err();
            assert!(e.0.contains("e.g. shop.example.com"), "{bad:?}: {e}");
            assert!(e.0.len() < 400, "{e}");
        }
        assert!(normalize_domain("a.*.test", true).is_err());
        assert!(normalize_domain("shäp.example.test", false)
            .unwrap_err()
            .0
            .contains("punycode"));
    }

    #[test]
    fn project_names() {
        for good in ["abc", "my-app", "a1b", "x".repeat(32).as_str()] {
            assert!(validate_project_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(33);
        let huge = "a".repeat(1 << 20);
        for bad in [
            "",
            "ab",
            "-abc",
            "Abc",
            "abc-",
            "a_b",
            "a b",
            "abc\n",
            "1abc",
            "ab;c",
            "$(id)",
            long.as_str(),
            huge.as_str(),
            "аbc", // Cyrillic a
        ] {
            let e = validate_project_name(bad).unwrap_err();
            assert!(e.0.len() < 300, "error text is bounded");
        }
    }

    #[test]
    fn hostnames() {
        assert!(validate_hostname("shop.example.test").is_ok());
        assert!(validate_hostname("xn--bcher-kva.example").is_ok());
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a-.b",
            "bücher.example",
            "*.example",
            &"a".repeat(300),
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_and_slots() {
        assert_eq!(SlotName::Blue.port(4100), 4100);
        assert_eq!(SlotName::Green.port(4100), 4101);
        assert_eq!(Environment::Staging.port_range(), (4500, 4999));
        assert_eq!(Environment::parse("preview"), Some(Environment::Preview));
        assert_eq!(Environment::parse("prod"), None);
    }

    #[test]
    fn describe_input_is_bounded() {
        assert_eq!(describe_input(""), "an empty string");
        assert_eq!(describe_input("a\nb"), "a value of 3 bytes");
        assert_eq!(describe_input("abc"), "\"abc\"");
    }
}

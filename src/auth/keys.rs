//! API keys `codeb_{team}_{role}_{token}`: made from the OS random number
//! generator, stored as SHA-256, looked up by digest. The key text is never
//! logged; only `key_create` and `codeb key create` show it, once.
//!
//! Presented keys are verified against the database with two caches in
//! front of it: verified keys (`KEY_CACHE_TTL`) and refused ones (unknown,
//! revoked, expired: `REFUSED_CACHE_TTL`). A key this process never saw
//! verified costs a database lookup, so those lookups share one global
//! budget (`auth.unknown_key_lookups_per_minute`): a flood of random keys
//! gets 429 instead of hammering the database, while keys verified before
//! keep being checked.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::Role;
use crate::ops::lifecycle::Caller;
use crate::state::{api_keys, Db};

/// Length of the random part of a key (base62: ~238 bits).
pub const TOKEN_LEN: usize = 40;
/// How long a verified key is trusted without asking the database again;
/// a revocation elsewhere is visible after at most this long (at once in
/// the process that revoked it).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// `last_used_at` is written at most this often per key.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// Bound of the verified-key cache (cleared when full).
const KEY_CACHE_MAX: usize = 10_000;
/// How long a refused key (unknown, revoked, expired) is answered from
/// memory. Keys are random, so an unknown one never becomes valid, and
/// revocation and expiry are final.
pub const REFUSED_CACHE_TTL: Duration = Duration::from_secs(300);
/// Bound of the refused-key cache (expired entries go first, then all).
const REFUSED_CACHE_MAX: usize = 10_000;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a key was refused. Messages say what to do and never echo the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key presented.
    #[error("missing API key: send `Authorization: Bearer codeb_...` or `X-API-Key: codeb_...` (create one with `codeb key create`)")]
    Missing,
    /// Not of the form `codeb_{team}_{role}_{token}`.
    #[error("malformed API key: expected codeb_{{team}}_{{role}}_{{token}} as printed by `codeb key create`")]
    Malformed,
    /// Well-formed but not known.
    #[error("unknown API key: check it was copied whole, or create one with `codeb key create`")]
    Unknown,
    /// Past its expiry.
    #[error("API key expired: ask an admin for a new one (key_create)")]
    Expired,
    /// Revoked.
    #[error("API key revoked: ask an admin for a new one (key_create)")]
    Revoked,
    /// The database could not be asked.
    #[error("cannot verify the API key now (state database unavailable: {0}); retry shortly")]
    Unavailable(String),
    /// Too many keys this server never verified were presented just now
    /// (a flood of guesses); the database is not asked.
    #[error("too many unknown API keys were presented to this server just now; retry in {retry_after_secs} s")]
    Throttled {
        /// Seconds until a lookup is allowed again (at least 1).
        retry_after_secs: u64,
    },
}

/// The parts of a well-formed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// Team named in the key.
    pub team: String,
    /// Role named in the key.
    pub role: Role,
}

/// Parses `codeb_{team}_{role}_{token}` (without checking it exists).
pub fn parse_key(key: &str) -> Result<ParsedKey, KeyError> {
    let rest = key.strip_prefix("codeb_").ok_or(KeyError::Malformed)?;
    let mut parts = rest.split('_');
    let (Some(team), Some(role), Some(token), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::Malformed);
    };
    let role = Role::parse(role).ok_or(KeyError::Malformed)?;
    if crate::model::validate_project_name(team).is_err()
        || token.len() < 32
        || token.len() > 128
        || !token.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(KeyError::Malformed);
    }
    Ok(ParsedKey {
        team: team.to_string(),
        role,
    })
}

/// SHA-256 of the key text (what the database stores).
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new key for `team` and `role` from the OS random number generator.
pub fn generate_key(team: &str, role: Role) -> Result<String, getrandom::Error> {
    let mut token = String::with_capacity(TOKEN_LEN);
    let mut buf = [0u8; 64];
    while token.len() < TOKEN_LEN {
        getrandom::getrandom(&mut buf)?;
        // Rejection sampling keeps every character equally likely.
        for b in buf {
            if b < 248 && token.len() < TOKEN_LEN {
                token.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(format!("codeb_{team}_{}_{token}", role.as_str()))
}

/// The caller a stored key stands for.
pub fn caller_of(row: &api_keys::ApiKeyRow) -> Option<Caller> {
    Some(Caller {
        principal: format!("key:{}", row.id),
        holder: row.principal.clone(),
        team: row.team_id.clone(),
        role: Role::parse(&row.role)?,
        key_id: Some(row.id),
    })
}

struct Cached {
    caller: Caller,
    expires_at: Option<chrono::DateTime<Utc>>,
    verified: Instant,
}

/// Verifies presented keys against the database, with a short cache of
/// verified keys, a cache of refused ones and a global budget of lookups
/// of keys never verified here.
pub struct KeyVerifier {
    db: Db,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    refused: Mutex<HashMap<[u8; 32], (KeyError, Instant)>>,
    new_key_lookups: governor::DefaultDirectRateLimiter,
    lookups: AtomicU64,
    throttled: AtomicU64,
    touched: Mutex<HashMap<Uuid, Instant>>,
}

impl KeyVerifier {
    /// A verifier over the state database that makes at most
    /// `new_key_lookups_per_minute` lookups of keys it never verified
    /// (burst of the same size, refilled evenly).
    pub fn new(db: Db, new_key_lookups_per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(new_key_lookups_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            db,
            cache: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            new_key_lookups: governor::RateLimiter::direct(governor::Quota::per_minute(per_minute)),
            lookups: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Database lookups of keys made so far (`/metrics`).
    pub fn database_lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Keys refused without a lookup because the budget of lookups of
    /// unknown keys was spent (`/metrics`).
    pub fn throttled_lookups(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// The caller for `key`, or why it is refused.
    pub async fn verify(&self, key: &str) -> Result<Caller, KeyError> {
        let parsed = parse_key(key)?;
        let digest = hash_key(key);
        let now = Instant::now();
        let (cached, seen) = {
            let cache = self.cache.lock().expect("key cache lock");
            let entry = cache.get(&digest);
            let fresh = entry.and_then(|c| {
                (now.duration_since(c.verified) < KEY_CACHE_TTL)
                    .then(|| (c.caller.clone(), c.expires_at))
            });
            (fresh, entry.is_some())
        };
        let caller = match cached {
            Some((caller, expires_at)) => {
                if expires_at.is_some_and(|e| e <= Utc::now()) {
                    return Err(KeyError::Expired);
                }
                caller
            }
            None => {
                if let Some(e) = self.refused_before(&digest, now) {
                    return Err(e);
                }
                // A key verified here before (its cache entry only aged)
                // is looked up again freely; any other key spends the
                // budget of lookups that a flood of guesses would exhaust.
                if !seen {
                    if let Err(not_until) = self.new_key_lookups.check() {
                        use governor::clock::Clock;
                        self.throttled.fetch_add(1, Ordering::Relaxed);
                        let wait = not_until
                            .wait_time_from(governor::clock::DefaultClock::default().now());
                        return Err(KeyError::Throttled {
                            retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                                .max(1),
                        });
                    }
                }
                match self.look_up(&parsed, &digest).await {
                    Ok((caller, expires_at)) => {
                        let mut cache = self.cache.lock().expect("key cache lock");
                        if cache.len() >= KEY_CACHE_MAX {
                            cache.clear();
                        }
                        cache.insert(
                            digest,
                            Cached {
                                caller: caller.clone(),
                                expires_at,
                                verified: now,
                            },
                        );
                        caller
                    }
                    Err(e) => {
                        if matches!(e, KeyError::Unknown | KeyError::Revoked | KeyError::Expired) {
                            self.remember_refusal(digest, e.clone(), now);
                        }
                        return Err(e);
                    }
                }
            }
        };
        if let Some(id) = caller.key_id {
            self.touch_later(id, now);
        }
        Ok(caller)
    }

    /// Like `verify`, but always asks the database (and refreshes the
    /// cache): for a long-lived caller whose revocation must count at once.
    pub async fn verify_fresh(&self, key: &str) -> Result<Caller, KeyError> {
        let digest = hash_key(key);
        {
            // Aged rather than removed: a key verified here before stays
            // outside the budget of lookups of unknown keys.
            let mut cache = self.cache.lock().expect("key cache lock");
            let stale = Instant::now().checked_sub(KEY_CACHE_TTL);
            match (cache.get_mut(&digest), stale) {
                (Some(c), Some(stale)) => c.verified = stale,
                (Some(_), None) => {
                    cache.remove(&digest);
                }
                (None, _) => {}
            }
        }
        self.verify(key).await
    }

    /// The refusal remembered for `digest`, if still fresh.
    fn refused_before(&self, digest: &[u8; 32], now: Instant) -> Option<KeyError> {
        let refused = self.refused.lock().expect("refused key cache lock");
        refused
            .get(digest)
            .filter(|(_, at)| now.duration_since(*at) < REFUSED_CACHE_TTL)
            .map(|(e, _)| e.clone())
    }

    fn remember_refusal(&self, digest: [u8; 32], e: KeyError, now: Instant) {
        let mut refused = self.refused.lock().expect("refused key cache lock");
        if refused.len() >= REFUSED_CACHE_MAX {
            refused.retain(|_, (_, at)| now.duration_since(*at) < REFUSED_CACHE_TTL);
            if refused.len() >= REFUSED_CACHE_MAX {
                refused.clear();
            }
        }
        refused.insert(digest, (e, now));
    }

    /// One database lookup of a key: its caller and expiry, or why it is
    /// refused.
    async fn look_up(
        &self,
        parsed: &ParsedKey,
        digest: &[u8; 32],
    ) -> Result<(Caller, Option<chrono::DateTime<Utc>>), KeyError> {
        let pool = self
            .db
            .pool()
            .await
            .map_err(|e| KeyError::Unavailable(e.to_string()))?;
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let (row, stored) = api_keys::api_key_by_hash(pool, digest)
            .await
            .map_err(|e| KeyError::Unavailable(e.to_string()))?
            .ok_or(KeyError::Unknown)?;
        // Keys are found by their SHA-256 (timing there can only tell
        // digest prefixes, which do not help to forge a key); the match
        // itself is confirmed in constant time.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            stored.as_slice(),
            digest.as_slice(),
        )) {
            return Err(KeyError::Unknown);
        }
        if row.revoked_at.is_some() {
            return Err(KeyError::Revoked);
        }
        if row.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(KeyError::Expired);
        }
        let caller = caller_of(&row).ok_or(KeyError::Unknown)?;
        // The team and role written in the key must be the stored ones.
        if caller.team != parsed.team || caller.role != parsed.role {
            return Err(KeyError::Unknown);
        }
        Ok((caller, row.expires_at))
    }

    /// Forgets a key at once (after a revocation in this process): its
    /// next use is looked up again, and refused.
    pub fn forget(&self, key_id: Uuid) {
        self.cache
            .lock()
            .expect("key cache lock")
            .retain(|_, c| c.caller.key_id != Some(key_id));
    }

    /// Records the use in the background, at most once per TOUCH_INTERVAL.
    fn touch_later(&self, id: Uuid, now: Instant) {
        {
            let mut touched = self.touched.lock().expect("touch lock");
            if touched
                .get(&id)
                .is_some_and(|t| now.duration_since(*t) < TOUCH_INTERVAL)
            {
                return;
            }
            if touched.len() >= KEY_CACHE_MAX {
                touched.clear();
            }
            touched.insert(id, now);
        }
        let db = self.db.clone();
        tokio::spawn(async move {
            if let Ok(pool) = db.pool().await {
                if let Err(e) = api_keys::api_key_touch(pool, id).await {
                    tracing::warn!(key_id = %id, error = %e, "could not record key use");
                }
            }
        });
    }
}

/// A key codeb holds to act with (stdio's `CODEB_API_KEY`): never printed,
/// not even by `Debug`.
pub struct PresentedKey(String);

impl PresentedKey {
    /// Wraps `key`.
    pub fn new(key: String) -> Self {
        Self(key)
    }

    /// The key itself, to verify it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresentedKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = generate_key("shop-team", Role::Member).unwrap();
        let b = generate_key("shop-team", Role::Member).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("codeb_shop-team_member_"));
        assert_eq!(a.len(), "codeb_shop-team_member_".len() + TOKEN_LEN);
        assert_eq!(
            parse_key(&a).unwrap(),
            ParsedKey {
                team: "shop-team".into(),
                role: Role::Member
            }
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        let token = "a".repeat(40);
        for k in [
            String::new(),
            "codeb".into(),
            format!("codeb_default_boss_{token}"),
            format!("codeb_default_admin_{}", "a".repeat(10)),
            format!("codeb_default_admin_{token}_x"),
            format!("codeb_De_admin_{token}"),
            format!("codeb_default_admin_{token}!"),
            format!("xcodeb_default_admin_{token}"),
        ] {
            assert_eq!(parse_key(&k), Err(KeyError::Malformed), "{k}");
        }
    }

    /// Keys never verified here spend one global budget of lookups; past
    /// it they are refused without asking the database (here one that
    /// cannot be reached, so nothing is remembered as refused).
    #[tokio::test]
    async fn unknown_keys_share_a_budget_of_lookups() {
        let config: crate::config::Config =
            toml::from_str(crate::config::TEST_LOCAL_CONFIG).unwrap();
        let verifier = KeyVerifier::new(Db::from_config(&config), 2);
        let guess = || generate_key("default", Role::Owner).unwrap();
        for _ in 0..2 {
            assert!(matches!(
                verifier.verify(&guess()).await,
                Err(KeyError::Unavailable(_))
            ));
        }
        for _ in 0..5 {
            match verifier.verify(&guess()).await {
                Err(KeyError::Throttled { retry_after_secs }) => {
                    assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}")
                }
                other => panic!("expected Throttled, got {other:?}"),
            }
        }
        assert_eq!(verifier.throttled_lookups(), 5);
        // Malformed keys never reach the budget.
        assert_eq!(
            verifier.verify("codeb_x").await.unwrap_err(),
            KeyError::Malformed
        );
    }

    #[test]
    fn errors_never_echo_the_key() {
        for e in [KeyError::Malformed, KeyError::Unknown, KeyError::Revoked] {
            assert!(!e.to_string().contains("aaaa"));
        }
    }
}

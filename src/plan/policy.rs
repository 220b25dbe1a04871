//! The production deploy policy (DESIGN §6): an image reaches production
//! only after the same image *digest* was deployed healthy to the same
//! project's staging, unless an admin or owner overrides with a recorded
//! reason. Tags move, digests do not: production deploys the digest
//! staging ran (`REPOSITORY@DIGEST`), so a tag pushed over after staging
//! never reaches production unnoticed. Pure: the caller observes which
//! digest staging ran healthy for the reference and passes that in.

use crate::model::{Environment, Role};

/// Longest override reason, in characters.
pub const OVERRIDE_REASON_MAX_CHARS: usize = 1000;
/// Lowest role that may override the policy.
pub const OVERRIDE_MIN_ROLE: Role = Role::Admin;

/// Why a deploy may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// Not a production deploy: the policy does not apply.
    NotProduction,
    /// The image was deployed healthy to staging before, as this digest:
    /// production deploys exactly it.
    StagedFirst {
        /// The digest staging ran (`sha256:…`).
        digest: String,
    },
    /// Never staged, but an admin or owner overrode with this reason:
    /// production deploys the digest the reference names now (recorded).
    Overridden {
        /// The recorded reason.
        reason: String,
    },
}

impl std::fmt::Display for PolicyVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotProduction => f.write_str("not a production deploy; no staging check"),
            Self::StagedFirst { digest } => write!(
                f,
                "allowed: digest {digest} was deployed healthy to staging; production runs exactly that digest"
            ),
            Self::Overridden { .. } => f.write_str(
                "allowed by override: the image was never deployed to staging; production runs the digest it has now, recorded with the reason",
            ),
        }
    }
}

/// A deploy the policy refuses; the text says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyRefusal(pub String);

/// Checks an override reason: 1-1000 characters of text (line breaks and
/// tabs allowed), not blank, no other control characters and no
/// bidirectional overrides (a reason is shown to humans as written).
pub fn validate_override_reason(reason: &str) -> Result<(), PolicyRefusal> {
    let bad = reason.trim().is_empty()
        || reason.chars().nth(OVERRIDE_REASON_MAX_CHARS).is_some()
        || reason.chars().any(|c| {
            (c.is_control() && c != '\n' && c != '\t')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        });
    if bad {
        return Err(PolicyRefusal(format!(
            "override_reason must be 1-{OVERRIDE_REASON_MAX_CHARS} characters of text (no control characters or bidirectional overrides); say why production may skip staging"
        )));
    }
    Ok(())
}

/// Decides whether a deploy of `image` to `environment` may go ahead.
/// `staged_digest` is the digest a deploy of the same reference (for a
/// reference by digest: of that digest) to the same project's staging ran
/// healthy (it passed the health gate), if any; the latest such deploy's.
pub fn check_deploy(
    environment: Environment,
    image: &str,
    staged_digest: Option<&str>,
    override_reason: Option<&str>,
    role: Role,
) -> Result<PolicyVerdict, PolicyRefusal> {
    if let Some(r) = override_reason {
        validate_override_reason(r)?;
    }
    if environment != Environment::Production {
        return Ok(PolicyVerdict::NotProduction);
    }
    if let Some(digest) = staged_digest {
        return Ok(PolicyVerdict::StagedFirst {
            digest: digest.to_string(),
        });
    }
    match override_reason {
        None => Err(PolicyRefusal(format!(
            "production deploy refused: {image} was never deployed healthy to this project's staging (production takes only a digest staging ran). Deploy it to staging first (deploy with environment \"staging\"), check its preview, then deploy it to production; an admin or owner may instead pass override_reason"
        ))),
        Some(_) if role < OVERRIDE_MIN_ROLE => Err(PolicyRefusal(format!(
            "production deploy refused: {image} was never deployed healthy to this project's staging, and override_reason is accepted only from an admin or owner (this caller is {}). Deploy it to staging first, or ask an admin",
            role.as_str()
        ))),
        Some(r) => Ok(PolicyVerdict::Overridden {
            reason: r.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: &str = "registry:5000/shop:v2";
    const DIGEST: &str = "sha256:d21c66eebc64089c2ab1a06e9072299b00c4ec94de45bb8c8ead75e324f65098";

    #[test]
    fn production_needs_staging_first() {
        let e = check_deploy(Environment::Production, IMG, None, None, Role::Owner).unwrap_err();
        assert!(e.0.contains("Deploy it to staging first"), "{e}");
        let v = check_deploy(
            Environment::Production,
            IMG,
            Some(DIGEST),
            None,
            Role::Member,
        );
        assert_eq!(
            v,
            Ok(PolicyVerdict::StagedFirst {
                digest: DIGEST.into()
            })
        );
        assert!(v.unwrap().to_string().contains(DIGEST));
        // A staged digest wins over an override: production still runs it.
        assert!(matches!(
            check_deploy(
                Environment::Production,
                IMG,
                Some(DIGEST),
                Some("x"),
                Role::Owner
            ),
            Ok(PolicyVerdict::StagedFirst { .. })
        ));
    }

    #[test]
    fn other_environments_are_not_checked() {
        for env in [Environment::Staging, Environment::Preview] {
            assert_eq!(
                check_deploy(env, IMG, None, None, Role::Member),
                Ok(PolicyVerdict::NotProduction)
            );
        }
    }

    #[test]
    fn only_admins_and_owners_override() {
        for role in [Role::Viewer, Role::Member] {
            let e =
                check_deploy(Environment::Production, IMG, None, Some("hotfix"), role).unwrap_err();
            assert!(e.0.contains("only from an admin or owner"), "{e}");
        }
        for role in [Role::Admin, Role::Owner] {
            assert_eq!(
                check_deploy(Environment::Production, IMG, None, Some("hotfix"), role),
                Ok(PolicyVerdict::Overridden {
                    reason: "hotfix".into()
                })
            );
        }
    }

    #[test]
    fn override_reason_is_bounded_text() {
        for bad in ["", "  \n", "a\0b", "\u{202e}xif", "x\rlf"] {
            assert!(validate_override_reason(bad).is_err(), "{bad:?}");
        }
        assert!(validate_override_reason(&"é".repeat(1000)).is_ok());
        assert!(validate_override_reason(&"é".repeat(1001)).is_err());
        for ok in [
            "incident 42; $(id) `x` ../x -rf",
            "line\nbreak",
            "ѕhop ｓｈｏｐ",
        ] {
            assert!(validate_override_reason(ok).is_ok(), "{ok:?}");
        }
    }
}

//! `key_create`, `key_list`, `key_revoke` (admins, own team only), and the
//! access checks `call_tool` runs before any handler (DESIGN §6): the role
//! the tool needs, then the team of the project or handle it names.
//!
//! Every key belongs to a principal (a person or CI system) and records who
//! made it. Admins mint and revoke viewer and member keys; admin and owner
//! keys are minted by owners only, and revoked by owners or by their own
//! principal — so one admin can neither make a second "person" to approve
//! their own requests nor take another approver's key away.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::roles::required_role;
use crate::mcp::CodebServer;
use crate::model::Role;
use crate::ops::lifecycle::{Caller, OpError};
use crate::state::api_keys;

/// How long a project's team is remembered. A project never changes team,
/// but a deleted project's name may be taken by another team: this process
/// forgets a name when it deletes the project; another codeb process
/// sharing the database may keep the old team for up to this long.
const TEAM_CACHE_TTL: Duration = Duration::from_secs(30);

/// Project name -> (team, when looked up).
#[derive(Default)]
pub struct TeamCache(Mutex<HashMap<String, (String, Instant)>>);

impl TeamCache {
    /// Forgets a project's team (the project was deleted).
    pub fn forget(&self, project: &str) {
        self.0.lock().expect("team cache lock").remove(project);
    }
}

/// Tools whose `project` only narrows a listing of the caller's own team's
/// records — filtered by team in their queries — so that a project that
/// does not exist lists nothing. Another team's project must list the same
/// nothing: refused here, it would answer differently from a missing one
/// and so tell that it exists. (drift_report, whose handler answers a
/// missing project "not found" like this check does, is not one.)
const PROJECT_FILTER_TOOLS: [&str; 4] = [
    "deployment_list",
    "domain_list",
    "slot_cleanup",
    "audit_query",
];

fn denied(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

impl CodebServer {
    /// The caller of this request: the one the HTTP middleware authenticated
    /// (carried in the request's HTTP parts), else the server's default.
    pub(crate) fn request_caller(&self, context: &RequestContext<RoleServer>) -> Option<Caller> {
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>().cloned())
            .or_else(|| self.default_caller.as_deref().cloned())
    }

    /// The caller if it may make this call, else the isError result to
    /// return (no handler runs).
    pub(crate) async fn authorize_call(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<Caller, CallToolResult> {
        let Some(mut caller) = self.request_caller(context) else {
            return Err(denied(
                "not authenticated: send an API key (Authorization: Bearer codeb_...)".into(),
            ));
        };
        let over_http = context
            .extensions
            .get::<axum::http::request::Parts>()
            .is_some_and(|p| p.extensions.get::<Caller>().is_some());
        if let (false, Some(key)) = (over_http, &self.stdio_key) {
            // stdio with CODEB_API_KEY: the key checked at start may have
            // been revoked or have expired since.
            caller = self
                .verifier
                .verify_fresh(key.expose())
                .await
                .map_err(|e| {
                    denied(format!(
                        "CODEB_API_KEY is refused: {e}; restart codeb serve with a valid key"
                    ))
                })?;
        }
        let tool = request.name.as_ref();
        if let Some(needed) = required_role(tool) {
            if caller.role < needed {
                return Err(denied(format!(
                    "{tool} needs the {needed} role; this key is {} of team {}: ask an admin of the team for a {needed} key",
                    caller.role, caller.team
                )));
            }
        }
        let args = request.arguments.as_ref();
        // Without `project`, listings (deployment_list, domain_list,
        // drift_report, slot_cleanup, health_check) cover the caller's
        // team's projects only: their handlers pass the team to the queries.
        if let Some(project) = args.and_then(|a| a.get("project")).and_then(|v| v.as_str()) {
            if !PROJECT_FILTER_TOOLS.contains(&tool) {
                self.check_project_team(&caller, project, tool).await?;
            }
        }
        if tool == "deployment_get" {
            if let Some(id) = args
                .and_then(|a| a.get("id"))
                .and_then(|v| v.as_str())
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
            {
                let pool = self
                    .ctx()
                    .db
                    .pool()
                    .await
                    .map_err(|e| denied(format!("{e}; check health_check")))?;
                let team = api_keys::deployment_team(pool, id)
                    .await
                    .map_err(|e| denied(e.to_string()))?;
                if team.is_some_and(|t| t != caller.team) {
                    // The same answer as for a missing deployment.
                    return Err(denied(format!(
                        "deployment {id} not found; deployment_list shows recent ones"
                    )));
                }
            }
        }
        Ok(caller)
    }

    /// Another team's project answers exactly like a missing one.
    /// A create with another team's name can only fail (names are unique
    /// across teams); it says the name is taken, which tells no more than
    /// that failure does.
    async fn check_project_team(
        &self,
        caller: &Caller,
        project: &str,
        tool: &str,
    ) -> Result<(), CallToolResult> {
        self.project_visible(caller, project).await.map_err(|e| {
            if tool == "project_create" && e.contains("not found") {
                denied(format!(
                    "project name {project:?} is taken; choose another name"
                ))
            } else {
                denied(e)
            }
        })
    }

    /// Ok unless `project` is another team's; then (or when the team cannot
    /// be looked up) the message to answer, the same as for a missing
    /// project. Invalid and missing names pass: the handler refuses them
    /// with its own message.
    pub(crate) async fn project_visible(
        &self,
        caller: &Caller,
        project: &str,
    ) -> Result<(), String> {
        if crate::model::validate_project_name(project).is_err() {
            return Ok(());
        }
        let cached = {
            let cache = self.project_teams.0.lock().expect("team cache lock");
            cache
                .get(project)
                .filter(|(_, at)| at.elapsed() < TEAM_CACHE_TTL)
                .map(|(t, _)| t.clone())
        };
        let team = match cached {
            Some(t) => Some(t),
            None => {
                let pool = self
                    .ctx()
                    .db
                    .pool()
                    .await
                    .map_err(|e| format!("{e}; check health_check"))?;
                let team = api_keys::project_team(pool, project)
                    .await
                    .map_err(|e| format!("{e}; check health_check"))?;
                if let Some(t) = &team {
                    let mut cache = self.project_teams.0.lock().expect("team cache lock");
                    if cache.len() >= 10_000 {
                        cache.clear();
                    }
                    cache.insert(project.to_string(), (t.clone(), Instant::now()));
                }
                team
            }
        };
        match team {
            Some(t) if t != caller.team => Err(OpError::NotFound(project.to_string()).to_string()),
            _ => Ok(()),
        }
    }
}

/// Input of key_create.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreateParams {
    /// viewer, member, admin or owner.
    pub role: String,
    /// Its person or CI system (lowercase); default you.
    #[serde(default)]
    pub principal: Option<String>,
    /// Label to recognise the key by.
    #[serde(default)]
    pub label: Option<String>,
    /// Days until it expires (1-3650); never when omitted.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// A key as listed (never the key itself).
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyInfo {
    /// Key id (for key_revoke).
    pub id: String,
    /// Team.
    pub team: String,
    /// Role.
    pub role: String,
    /// The person or CI system it belongs to (`legacy`: made before principals).
    pub principal: String,
    /// The principal that created it (and its key id), if recorded.
    pub created_by: Option<String>,
    /// Label.
    pub label: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<String>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
    /// Last use (updated about once a minute).
    pub last_used_at: Option<String>,
}

fn key_info(r: &api_keys::ApiKeyRow) -> KeyInfo {
    KeyInfo {
        id: r.id.to_string(),
        team: r.team_id.clone(),
        role: r.role.clone(),
        principal: r.principal.clone(),
        created_by: r.created_by_principal.as_ref().map(|p| match r.created_by {
            Some(k) => format!("{p} (key {k})"),
            None => p.clone(),
        }),
        label: r.label.clone(),
        created_at: r.created_at.to_rfc3339(),
        expires_at: r.expires_at.map(|t| t.to_rfc3339()),
        revoked_at: r.revoked_at.map(|t| t.to_rfc3339()),
        last_used_at: r.last_used_at.map(|t| t.to_rfc3339()),
    }
}

/// Result of key_create.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyCreateResult {
    /// One line for the reader.
    pub summary: String,
    /// The new key. Shown only here, once: store it now.
    pub api_key_shown_once: String,
    /// The key's record.
    pub key: KeyInfo,
}

/// Input of key_list (none: always the caller's own team).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyListParams {}

/// Result of key_list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyListResult {
    /// One line for the reader.
    pub summary: String,
    /// Your team's keys, newest first.
    pub keys: Vec<KeyInfo>,
}

/// Input of key_revoke.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRevokeParams {
    /// Key id from key_list.
    pub id: String,
}

/// Result of key_revoke.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyRevokeResult {
    /// One line for the reader.
    pub summary: String,
    /// The revoked key.
    pub key: KeyInfo,
}

/// Validates a label: at most 100 of ASCII letters, digits, space and
/// `._:@-`, not starting with '-' or a space (labels are shown to people
/// next to keys: no look-alikes, no direction overrides).
pub fn validate_label(label: &str) -> Result<(), String> {
    let ok = label.len() <= 100
        && !label.starts_with(['-', ' '])
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" ._:@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label {} is invalid: use at most 100 ASCII letters, digits, spaces and ._:@-, not starting with '-' or a space",
            crate::model::describe_input(label)
        ))
    }
}

/// The principal codeb gives keys made before principals existed
/// (migration 0009): all of them count as one person.
pub const LEGACY_PRINCIPAL: &str = "legacy";

/// Validates a principal name: 1-64 of lowercase ASCII letters, digits and
/// `._@+-`, starting with a letter or digit; not `legacy` (the principal of
/// keys made before principals). Lowercase only, so `Alice` and `alice`
/// can never be two people.
pub fn validate_principal(principal: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&principal.len())
        && principal
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && principal
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@+-".contains(&b));
    if !ok {
        return Err(format!(
            "principal {} is invalid: name the person or CI system with 1-64 lowercase ASCII letters, digits and ._@+- (e.g. alice@example.com or ci-deploy)",
            crate::model::describe_input(principal)
        ));
    }
    if principal == LEGACY_PRINCIPAL {
        return Err(format!(
            "principal {LEGACY_PRINCIPAL:?} is reserved for keys made before principals existed; name the person or CI system the key is for"
        ));
    }
    Ok(())
}

/// Who may mint a key of `role`: anyone up to member for an admin, any role
/// for an owner (DESIGN §6: only owners mint admin or owner keys, so one
/// admin cannot make a second admin to approve their own requests).
pub fn may_mint(caller: Role, role: Role) -> bool {
    match role {
        Role::Viewer | Role::Member => caller >= Role::Admin,
        Role::Admin | Role::Owner => caller == Role::Owner,
    }
}

/// Who may revoke `key` (a key of the caller's team): an owner any key; an
/// admin the keys it could have minted (viewer, member) and any key of its
/// own principal — never another person's admin or owner key, so one admin
/// cannot take the second approver's key (or an owner's) away.
pub fn may_revoke(caller: &Caller, key: &api_keys::ApiKeyRow) -> bool {
    let role = Role::parse(&key.role).unwrap_or(Role::Owner);
    // Keys made before principals all share `legacy`: that is no proof
    // that they belong to the same person.
    let own = key.principal == caller.holder && caller.holder != LEGACY_PRINCIPAL;
    caller.role == Role::Owner
        || (caller.role >= Role::Admin && (may_mint(caller.role, role) || own))
}

/// A new key's facts (shared by the tool and `codeb key create`).
pub struct KeySpec<'a> {
    /// Team (created if new).
    pub team: &'a str,
    /// Role.
    pub role: Role,
    /// The person or CI system it belongs to.
    pub principal: &'a str,
    /// Label.
    pub label: &'a str,
    /// Days until it expires.
    pub expires_in_days: Option<u32>,
    /// The creating key (None: the operator at the codeb machine).
    pub created_by: Option<uuid::Uuid>,
    /// The creating principal.
    pub created_by_principal: &'a str,
}

/// Creates a key (shared by the tool and `codeb key create`). Returns the
/// key text and its record. Who may create which role is the caller's
/// check (`may_mint`); this checks the values.
pub async fn create_key(
    pool: &sqlx::PgPool,
    spec: &KeySpec<'_>,
) -> Result<(String, api_keys::ApiKeyRow), String> {
    let team = spec.team;
    crate::model::validate_project_name(team)
        .map_err(|_| format!("team {team:?} is not a valid team name (3-32 of a-z, 0-9, -)"))?;
    validate_label(spec.label)?;
    validate_principal(spec.principal)?;
    if let Some(d) = spec.expires_in_days {
        if !(1..=3650).contains(&d) {
            return Err(format!(
                "expires_in_days must be between 1 and 3650, got {d}"
            ));
        }
    }
    let key = crate::auth::generate_key(team, spec.role)
        .map_err(|e| format!("no randomness from the OS: {e}"))?;
    let expires_at = spec
        .expires_in_days
        .map(|d| chrono::Utc::now() + chrono::Duration::days(d.into()));
    api_keys::team_ensure(pool, team)
        .await
        .map_err(|e| e.to_string())?;
    let row = api_keys::api_key_insert(
        pool,
        &api_keys::NewApiKey {
            id: uuid::Uuid::new_v4(),
            team,
            role: spec.role.as_str(),
            label: spec.label,
            principal: spec.principal,
            created_by: spec.created_by,
            created_by_principal: spec.created_by_principal,
            key_sha256: &crate::auth::hash_key(&key),
            expires_at,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok((key, row))
}

#[tool_router(router = keys_router, vis = "pub(crate)")]
impl CodebServer {
    /// Create an API key of your team (admins: viewer/member only). Shown once in `api_key_shown_once`.
    #[tool(
        name = "key_create",
        title = "Create API key",
        annotations(
            title = "Create API key",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn key_create(
        &self,
        Parameters(p): Parameters<KeyCreateParams>,
    ) -> Result<Json<KeyCreateResult>, String> {
        let caller = self.caller();
        let role = Role::parse(&p.role).ok_or_else(|| {
            format!(
                "role must be viewer, member, admin or owner, got {}",
                crate::model::describe_input(&p.role)
            )
        })?;
        if !may_mint(caller.role, role) {
            return Err(if role >= Role::Admin && caller.role >= Role::Admin {
                format!(
                    "an admin cannot create {role} keys: only an owner does (a second admin must be a second person, and owners decide who that is); ask an owner of team {}",
                    caller.team
                )
            } else {
                format!(
                    "a {} cannot create a {role} key; ask an owner of team {}",
                    caller.role, caller.team
                )
            });
        }
        let principal = p.principal.unwrap_or_else(|| caller.holder.clone());
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        let label = p.label.unwrap_or_default();
        let (key, row) = create_key(
            pool,
            &KeySpec {
                team: &caller.team,
                role,
                principal: &principal,
                label: &label,
                expires_in_days: p.expires_in_days,
                created_by: caller.key_id,
                created_by_principal: &caller.holder,
            },
        )
        .await?;
        tracing::info!(key_id = %row.id, team = %row.team_id, role = %row.role, principal = %row.principal, by = %caller.principal, "api key created");
        Ok(Json(KeyCreateResult {
            summary: format!(
                "created {role} key {} of principal {} for team {}; store api_key_shown_once now, it is not shown again",
                row.id, row.principal, row.team_id
            ),
            api_key_shown_once: key,
            key: key_info(&row),
        }))
    }

    /// List your team's API keys (ids, roles, labels, expiry, revocation, last use; never the keys).
    #[tool(
        name = "key_list",
        title = "List API keys",
        annotations(
            title = "List API keys",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn key_list(
        &self,
        Parameters(_): Parameters<KeyListParams>,
    ) -> Result<Json<KeyListResult>, String> {
        let caller = self.caller();
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        let rows = api_keys::api_keys_list(pool, Some(&caller.team))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(KeyListResult {
            summary: format!("{} key(s) of team {}", rows.len(), caller.team),
            keys: rows.iter().map(key_info).collect(),
        }))
    }

    /// Revoke your team's key by id (admins: not others' admin/owner keys); here at once, elsewhere within 30 s.
    #[tool(
        name = "key_revoke",
        title = "Revoke API key",
        annotations(
            title = "Revoke API key",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn key_revoke(
        &self,
        Parameters(p): Parameters<KeyRevokeParams>,
    ) -> Result<Json<KeyRevokeResult>, String> {
        let caller = self.caller();
        let not_found = || {
            format!(
                "key {} not found; key_list shows your team's keys",
                crate::model::describe_input(&p.id)
            )
        };
        let id = uuid::Uuid::parse_str(&p.id).map_err(|_| not_found())?;
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        let key = api_keys::api_key_get(pool, id, Some(&caller.team))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(not_found)?;
        if !may_revoke(&caller, &key) {
            return Err(format!(
                "an admin cannot revoke key {id}: it is an {} key of another principal ({}); only an owner of team {} revokes other people's admin and owner keys",
                key.role, key.principal, caller.team
            ));
        }
        let row = api_keys::api_key_revoke(pool, id, Some(&caller.team))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(not_found)?;
        self.verifier.forget(id);
        tracing::info!(key_id = %id, by = %caller.principal, "api key revoked");
        Ok(Json(KeyRevokeResult {
            summary: format!("revoked key {id} ({} of team {})", row.role, row.team_id),
            key: key_info(&row),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: &str, principal: &str) -> api_keys::ApiKeyRow {
        api_keys::ApiKeyRow {
            id: uuid::Uuid::new_v4(),
            team_id: "acme".into(),
            role: role.into(),
            label: String::new(),
            principal: principal.into(),
            created_by: None,
            created_by_principal: None,
            created_at: chrono::Utc::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    fn caller(role: Role, holder: &str) -> Caller {
        Caller {
            principal: "key:x".into(),
            holder: holder.into(),
            team: "acme".into(),
            role,
            key_id: Some(uuid::Uuid::new_v4()),
        }
    }

    #[test]
    fn only_owners_mint_admins_and_admins_revoke_only_lesser_or_their_own_keys() {
        use Role::{Admin, Member, Owner, Viewer};
        for (by, role, ok) in [
            (Admin, Viewer, true),
            (Admin, Member, true),
            (Admin, Admin, false),
            (Admin, Owner, false),
            (Owner, Admin, true),
            (Owner, Owner, true),
            (Member, Viewer, false),
        ] {
            assert_eq!(may_mint(by, role), ok, "{by} mints {role}");
        }
        let alice = caller(Admin, "alice");
        assert!(may_revoke(&alice, &key("member", "bob")));
        assert!(may_revoke(&alice, &key("admin", "alice")));
        assert!(!may_revoke(&alice, &key("admin", "bob")));
        assert!(!may_revoke(&alice, &key("owner", "olga")));
        assert!(may_revoke(&caller(Owner, "olga"), &key("admin", "bob")));
        // `legacy` is everyone from before principals: no proof of "own".
        let legacy = caller(Admin, LEGACY_PRINCIPAL);
        assert!(!may_revoke(&legacy, &key("admin", LEGACY_PRINCIPAL)));
        assert!(may_revoke(&legacy, &key("viewer", LEGACY_PRINCIPAL)));
    }

    #[test]
    fn principals_are_one_lowercase_name() {
        for ok in [
            "alice",
            "alice@example.com",
            "ci-deploy",
            "a",
            "bob.smith+ops",
            "0x",
        ] {
            assert!(validate_principal(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Alice",
            "a b",
            "-x",
            ".x",
            "legacy",
            "a\nb",
            "$(id)",
            long.as_str(),
        ] {
            assert!(validate_principal(bad).is_err(), "{bad:?}");
        }
    }
}

//! Domains (DESIGN §4): `domain_setup` puts a domain's A/AAAA records in
//! PowerDNS (creating its zone when it is a managed zone), checks the
//! authoritative answer with a real DNS query, adds its route (SRV rrset in
//! the route zone, no Caddy reload) and checks the route through Caddy.
//! It runs as an operation under the (project, environment) lock; every
//! step is journaled and a failure undoes the earlier steps.
//!
//! Names have owners (DESIGN §6): domain_setup refuses names codeb
//! generates itself (under `base_domain`, the preview domain, the route
//! zone), a domain of another project, a name in a zone codeb created for
//! another team (`zones` table), and a name whose A/AAAA/CNAME records
//! codeb did not make — unless an owner passes `takeover`, which is
//! recorded on the domain row, in the journal and in the result. codeb
//! made a name's records when it holds the name's domain row
//! (`plan::names::foreign_address_records`); domain_delete and
//! project_delete only remove address records that still hold what codeb
//! set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::exec::dns::query_addresses;
use crate::exec::pdns::PdnsError;
use crate::model::{normalize_domain, validate_project_name, Environment, SlotName, SlotState};
use crate::ops::lifecycle::{
    begin_op, patch_routes, verify_through_caddy, Caller, OpError, OpHandle, ProgressTx,
};
use crate::ops::pdns::with_pdns;
use crate::ops::Ctx;
use crate::plan::dns::{
    address_patch_body, address_restore_body, cname_restore_rrset, route_rrset_name,
    zone_create_body, zone_for, RrsetChange,
};
use crate::plan::env::EnvView;
use crate::plan::names::{foreign_address_records, reserved_domain, HostNaming, NameRow};
use crate::state::domains as rows;

/// How long PowerDNS may take to answer a changed record over DNS.
pub const DNS_VERIFY_DEADLINE: Duration = Duration::from_secs(10);
/// Limit of one DNS query while verifying.
const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two DNS queries while verifying.
const DNS_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Progress phases of domain_setup.
const SETUP_PHASES: u32 = 5;

/// Where a domain's route points.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DomainRoute {
    /// Slot that serves (priority 0).
    pub slot: SlotName,
    /// Its host port.
    pub port: u16,
    /// Fallback port (priority 10), if any.
    pub fallback_port: Option<u16>,
}

/// The route a domain of this environment gets: the active slot first and
/// the grace (else deployed) slot behind it, as the environment's own host
/// names. `None` while the environment has no active slot.
pub fn env_route(view: &EnvView) -> Option<DomainRoute> {
    let active = view.in_state(SlotState::Active)?;
    let fallback = view
        .in_state(SlotState::Grace)
        .or_else(|| view.in_state(SlotState::Deployed))
        .map(|s| view.port(s.slot));
    Some(DomainRoute {
        slot: active.slot,
        port: view.port(active.slot),
        fallback_port: fallback,
    })
}

/// Result of domain_setup.
#[derive(Debug, Clone, Serialize)]
pub struct SetupOutcome {
    /// The domain, normalised.
    pub domain: String,
    /// Operation id; none for a dry run.
    pub deployment_id: Option<Uuid>,
    /// Zone holding its records.
    pub zone: Option<String>,
    /// True when codeb created the zone now.
    pub zone_created: bool,
    /// Addresses its A/AAAA records name.
    pub addresses: Vec<IpAddr>,
    /// What the authoritative server answered.
    pub dns_answer: Vec<IpAddr>,
    /// `ok` or `pending`.
    pub dns_state: String,
    /// `ok`, or `pending` while the environment has no active slot.
    pub route_state: String,
    /// Where it routes.
    pub route: Option<DomainRoute>,
    /// The planned steps (dry run) or what was done.
    pub steps: Vec<String>,
    /// True when the domain was already set up for this environment.
    pub already: bool,
    /// Records codeb did not make that an owner's takeover replaces (or,
    /// in a dry run, would replace); empty without a takeover.
    pub took_over: Vec<String>,
}

/// What domain_setup checks before it changes anything.
struct Checked {
    domain: String,
    view: EnvView,
    /// The project's team, which owns the domain and the zones it creates.
    team: String,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    authoritative: SocketAddr,
    managed_zone: Option<String>,
    existing: bool,
    /// codeb's domain row of the name, as it was before this setup.
    row: NameRow,
    /// The caller passed `takeover` (and is an owner).
    takeover: bool,
    /// Records codeb did not make that are there now (read before the
    /// lock; `apply` reads them again under it). Empty without a takeover:
    /// any is a refusal then.
    foreign: Vec<String>,
}

/// The refusal of a name whose address records codeb did not make.
fn foreign_refusal(domain: &str, foreign: &[String]) -> String {
    format!(
        "domain {domain} already has records codeb did not make ({}); codeb does not replace them. \
         If the name is yours, have those records removed from PowerDNS, or an owner of your team \
         may call domain_setup again with takeover: true (recorded) to replace them",
        foreign.join(", ")
    )
}

/// Refuses `domain` when the longest zone holding it that codeb created
/// belongs to another team than `team`.
async fn refuse_other_teams_zone(
    pool: &sqlx::PgPool,
    domain: &str,
    team: &str,
) -> Result<(), OpError> {
    let zones = crate::state::zones::zones_holding(pool, domain).await?;
    match zones.first() {
        Some((zone, owner)) if owner != team => Err(OpError::Refused(format!(
            "domain {domain} is in zone {zone}, which codeb created for another team and which is theirs; \
             choose a domain in a zone of your team's or in a zone of your own"
        ))),
        _ => Ok(()),
    }
}

/// The address records at `domain` codeb did not make, from PowerDNS now
/// (none when no PowerDNS zone holds the name yet).
async fn foreign_records_now(
    ctx: &Ctx,
    domain: &str,
    row: NameRow,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
) -> Result<Vec<String>, PdnsError> {
    let d = domain.to_string();
    let records = with_pdns(ctx, |cl| {
        let d = d.clone();
        async move {
            let zones = cl.zones().await?;
            match zone_for(&d, zones.iter().map(String::as_str)) {
                Some(z) => cl.records_at(&z, &d).await,
                None => Ok(Vec::new()),
            }
        }
    })
    .await?;
    Ok(foreign_address_records(
        &records,
        row,
        &ipv4.to_string(),
        ipv6.map(|v| v.to_string()).as_deref(),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn check(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    domain: &str,
    takeover: bool,
    dry_run: bool,
    caller: &Caller,
) -> Result<Checked, OpError> {
    let domain = normalize_domain(domain, false).map_err(|e| OpError::Invalid(e.0))?;
    validate_project_name(project).map_err(|e| OpError::Invalid(e.0))?;
    if takeover && caller.role < crate::model::Role::Owner {
        return Err(OpError::Refused(format!(
            "takeover: true replaces records codeb did not make and needs the owner role (this key is {}); \
             ask an owner of your team, or call domain_setup without takeover",
            caller.role.as_str()
        )));
    }
    if let Some(why) = reserved_domain(&domain, &HostNaming::from_config(&ctx.config)) {
        return Err(OpError::Refused(why));
    }
    let pool = ctx.db.pool().await?;
    let row = crate::state::slots::env_view(pool, project, environment)
        .await?
        .ok_or_else(|| OpError::NotFound(project.to_string()))?;
    let team = row.team_id.clone();
    let mut existing = false;
    let mut name_row = NameRow::None;
    if let Some(d) = rows::domain_get(pool, &domain).await? {
        if d.team != team {
            // Another team's: say only that it is taken, never whose.
            return Err(OpError::Refused(format!(
                "domain {domain} is taken: another team has set it up; choose another domain"
            )));
        }
        if d.project != project || d.environment != environment.as_str() {
            return Err(OpError::Refused(format!(
                "domain {domain} already belongs to {} {}; it can be set up for only one project environment",
                d.project, d.environment
            )));
        }
        existing = true;
        name_row = if d.dns_state == "ok" {
            NameRow::OwnSet
        } else {
            NameRow::OwnUnfinished
        };
    }
    refuse_other_teams_zone(pool, &domain, &team).await?;
    let ipv4 = ctx.config.domain_ipv4().ok_or_else(|| {
        OpError::Refused(
            "the app server's address is not an IPv4 address: set dns.app_ipv4 in codeb.toml"
                .into(),
        )
    })?;
    let authoritative = ctx.config.dns_authoritative().ok_or_else(|| {
        OpError::Refused(
            "no authoritative DNS server to verify with: set dns.authoritative in codeb.toml"
                .into(),
        )
    })?;
    let ipv6 = ctx.config.dns.app_ipv6;
    // Records codeb did not make refuse the call at once. A real run that
    // cannot read PowerDNS now goes on: it reads them again under the lock
    // and fails there, undoing what it did.
    let foreign = match foreign_records_now(ctx, &domain, name_row, ipv4, ipv6).await {
        Ok(f) => f,
        Err(e) if dry_run => {
            return Err(OpError::Refused(format!(
                "cannot read the records of {domain} in PowerDNS: {e}"
            )))
        }
        Err(_) => Vec::new(),
    };
    if !foreign.is_empty() && !takeover {
        return Err(OpError::Refused(foreign_refusal(&domain, &foreign)));
    }
    let managed_zone = zone_for(
        &domain,
        ctx.config.dns.managed_zones.iter().map(String::as_str),
    );
    Ok(Checked {
        domain,
        view: row.view,
        team,
        ipv4,
        ipv6,
        authoritative,
        managed_zone,
        existing,
        row: name_row,
        takeover,
        foreign,
    })
}

fn planned_steps(c: &Checked, route: Option<&DomainRoute>) -> Vec<String> {
    let mut addrs = format!("A {}", c.ipv4);
    if let Some(v6) = c.ipv6 {
        addrs.push_str(&format!(", AAAA {v6}"));
    }
    let mut steps = vec![format!(
        "record {} for {} {}",
        c.domain, c.view.project, c.view.environment
    )];
    steps.push(match &c.managed_zone {
        Some(z) => format!("create zone {z} in PowerDNS if it is missing (managed zone)"),
        None => "find the PowerDNS zone holding it (it must exist)".into(),
    });
    if c.foreign.is_empty() {
        steps.push(format!("set {addrs}"));
    } else {
        steps.push(format!(
            "take over (owner, recorded): replace {} with {addrs}",
            c.foreign.join(", ")
        ));
    }
    steps.push(format!("check the answer of {} over DNS", c.authoritative));
    steps.push(match route {
        Some(r) => format!(
            "route {} to {} (port {}) and check it through Caddy",
            c.domain, r.slot, r.port
        ),
        None => "no active slot: the route waits for the first promote".into(),
    });
    steps
}

/// A zone and the A, AAAA and CNAME contents a name had there before.
type PreviousAddresses = (
    String,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
);

/// What a failed setup changed, to undo in reverse order.
#[derive(Default)]
struct Undo {
    row_inserted: bool,
    /// The zone this setup recorded as its team's (`zones` table).
    zone_claimed: Option<String>,
    zone_created: Option<String>,
    /// Zone and the previous A and AAAA contents.
    addresses: Option<PreviousAddresses>,
    /// The previous route rrset.
    route: Option<RrsetChange>,
}

/// domain_setup (DESIGN §4).
#[allow(clippy::too_many_arguments)]
pub async fn domain_setup(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    domain: &str,
    dry_run: bool,
    takeover: bool,
    caller: &Caller,
    progress: ProgressTx,
    abort: CancellationToken,
) -> Result<SetupOutcome, OpError> {
    let c = check(ctx, project, environment, domain, takeover, dry_run, caller).await?;
    if dry_run {
        let route = env_route(&c.view);
        return Ok(SetupOutcome {
            steps: planned_steps(&c, route.as_ref()),
            domain: c.domain,
            deployment_id: None,
            zone: c.managed_zone,
            zone_created: false,
            addresses: addresses(c.ipv4, c.ipv6),
            dns_answer: Vec::new(),
            dns_state: "pending".into(),
            route_state: "pending".into(),
            route,
            already: c.existing,
            took_over: c.foreign,
        });
    }
    let mut op = begin_op(
        ctx,
        "domain_setup",
        project,
        environment,
        caller,
        progress,
        SETUP_PHASES,
        abort,
    )
    .await?;
    let mut undo = Undo::default();
    let mut done = Vec::new();
    match apply(&mut op, &c, caller, &mut undo, &mut done).await {
        Ok(mut outcome) => {
            outcome.steps = done;
            outcome.deployment_id = Some(op.id());
            let result = serde_json::to_value(&outcome).ok();
            op.finish_ok(result.as_ref()).await?;
            Ok(outcome)
        }
        Err((step, message)) => {
            let aftermath = revert(&op, &c, undo).await;
            let err = OpError::Failed {
                operation: "domain_setup",
                deployment_id: op.id(),
                step,
                message,
                aftermath,
            };
            op.finish_err(&err.to_string()).await?;
            Err(err)
        }
    }
}

fn addresses(ipv4: Ipv4Addr, ipv6: Option<Ipv6Addr>) -> Vec<IpAddr> {
    let mut v = vec![IpAddr::V4(ipv4)];
    v.extend(ipv6.map(IpAddr::V6));
    v
}

type StepErr = (String, String);

async fn apply(
    op: &mut OpHandle<'_>,
    c: &Checked,
    caller: &Caller,
    undo: &mut Undo,
    done: &mut Vec<String>,
) -> Result<SetupOutcome, StepErr> {
    let ctx_db = |e: crate::state::DbError| ("record".to_string(), e.to_string());
    let domain = c.domain.clone();
    let project_id = op.row().project_id;
    let env = op.row().view.environment;
    // 1. The row, so concurrent setups of the same name by two projects
    // meet at the primary key.
    op.phase(format!("recording {domain}"));
    let pool = op.ctx().db.pool().await.map_err(ctx_db)?;
    let kind = if c.managed_zone.is_some() {
        "managed"
    } else {
        "custom"
    };
    undo.row_inserted = rows::domain_insert(pool, &domain, project_id, env.as_str(), kind)
        .await
        .map_err(ctx_db)?;
    if !undo.row_inserted {
        let owner = rows::domain_get(pool, &domain).await.map_err(ctx_db)?;
        if let Some(d) =
            owner.filter(|d| d.project != c.view.project || d.environment != env.as_str())
        {
            return Err((
                "record".into(),
                format!(
                    "domain {domain} was just set up for {} {}",
                    d.project, d.environment
                ),
            ));
        }
    }
    done.push(format!(
        "recorded {domain} ({})",
        if undo.row_inserted {
            "new"
        } else {
            "already there"
        }
    ));
    // 2. The zone.
    op.phase("finding the zone in PowerDNS");
    let started = Instant::now();
    let zones = with_pdns(op.ctx(), |cl| async move { cl.zones().await })
        .await
        .map_err(|e| ("zone".to_string(), e.to_string()))?;
    let present = zone_for(&domain, zones.iter().map(String::as_str));
    let zone = match (present, &c.managed_zone) {
        (Some(p), Some(m)) if m.len() > p.len() => m.clone(),
        (Some(p), _) => p,
        (None, Some(m)) => m.clone(),
        (None, None) => {
            return Err((
                "zone".into(),
                format!(
                    "no PowerDNS zone holds {domain} and it is not under dns.managed_zones ({}); add its zone there (codeb then creates it) or create the zone in PowerDNS",
                    ctx_list(&op.ctx().config.dns.managed_zones)
                ),
            ))
        }
    };
    op.journal_note(
        "zone",
        &format!("zone of {domain}: {zone}"),
        started.elapsed(),
    )
    .await;
    // A zone another team's setup created meanwhile is theirs.
    refuse_other_teams_zone(pool, &domain, &c.team)
        .await
        .map_err(|e| ("zone".to_string(), e.to_string()))?;
    if !zones.contains(&format!("{zone}.")) {
        // The zone codeb creates is the team's: recorded first, so that two
        // teams' setups meet at the zones table's primary key.
        let (owner, claimed) = crate::state::zones::zone_claim(pool, &zone, &c.team)
            .await
            .map_err(|e| ("zone".to_string(), e.to_string()))?;
        if owner != c.team {
            return Err((
                "zone".into(),
                format!("zone {zone} was just created for another team, and names in it are theirs; choose a domain in another zone"),
            ));
        }
        let body = zone_create_body(&zone, &op.ctx().config.dns_nameservers());
        let started = Instant::now();
        let r = with_pdns(op.ctx(), |cl| {
            let body = body.clone();
            async move { cl.create_zone(&body).await }
        })
        .await;
        // 409: another setup (of another domain in the same managed zone)
        // created it a moment ago; it is there, and it is not ours to undo.
        let raced = matches!(&r, Err(PdnsError::Api { status: 409, .. }));
        let note = match &r {
            Ok(()) => format!("POST zones: created {zone} for team {}", c.team),
            Err(_) if raced => format!("POST zones: {zone} was created meanwhile by another setup"),
            Err(e) => format!("POST zones: creating {zone} failed: {e}"),
        };
        op.journal_note("zone_create", &note, started.elapsed())
            .await;
        if !raced {
            if let Err(e) = r {
                if claimed {
                    let _ = crate::state::zones::zone_forget(pool, &zone).await;
                }
                return Err(("zone_create".to_string(), e.to_string()));
            }
            undo.zone_created = Some(zone.clone());
            if claimed {
                undo.zone_claimed = Some(zone.clone());
            }
            done.push(format!("created zone {zone}"));
        }
    }
    // 3. The address records, remembering what was there; records codeb
    // did not make only with an owner's takeover.
    op.phase(format!("setting the address records of {domain}"));
    let started = Instant::now();
    let records = {
        let (z, n) = (zone.clone(), domain.clone());
        with_pdns(op.ctx(), |cl| {
            let (z, n) = (z.clone(), n.clone());
            async move { cl.records_at(&z, &n).await }
        })
        .await
        .map_err(|e| ("address".to_string(), e.to_string()))?
    };
    let foreign = foreign_address_records(
        &records,
        c.row,
        &c.ipv4.to_string(),
        c.ipv6.map(|v| v.to_string()).as_deref(),
    );
    if !foreign.is_empty() && !c.takeover {
        return Err(("address".into(), foreign_refusal(&domain, &foreign)));
    }
    let before = |rtype: &str| {
        let v: Vec<String> = records
            .iter()
            .filter(|r| r.rtype == rtype && !r.disabled)
            .map(|r| r.content.clone())
            .collect();
        (!v.is_empty()).then_some(v)
    };
    let body = address_patch_body(&domain, c.ipv4, c.ipv6);
    undo.addresses = Some((zone.clone(), before("A"), before("AAAA"), before("CNAME")));
    let r = with_pdns(op.ctx(), |cl| {
        let (z, body) = (zone.clone(), body.clone());
        async move { cl.patch_rrsets(&z, &body).await }
    })
    .await;
    let want = addresses(c.ipv4, c.ipv6);
    let note = match &r {
        Ok(()) => format!("PATCH zone {zone}: {domain} = {}", join(&want)),
        Err(e) => format!("PATCH zone {zone} failed: {e}"),
    };
    op.journal_note("address", &note, started.elapsed()).await;
    r.map_err(|e| ("address".to_string(), e.to_string()))?;
    if !foreign.is_empty() {
        let note = format!(
            "takeover by owner {} of team {}: replaced {} (records codeb did not make)",
            caller.principal,
            c.team,
            foreign.join(", ")
        );
        op.journal_note("takeover", &note, started.elapsed()).await;
        let record = serde_json::json!({
            "by": caller.principal,
            "at": chrono::Utc::now().to_rfc3339(),
            "replaced": foreign,
        });
        rows::domain_set_takeover(pool, &domain, &record)
            .await
            .map_err(|e| ("takeover".to_string(), e.to_string()))?;
        done.push(format!(
            "took over {domain}: replaced {}",
            foreign.join(", ")
        ));
    }
    done.push(format!("set {domain} to {}", join(&want)));
    // 4. The authoritative answer.
    op.phase(format!("asking {} for {domain}", c.authoritative));
    let started = Instant::now();
    let answer = verify_dns(c.authoritative, &domain, c.ipv4, c.ipv6).await;
    let note = match &answer {
        Ok(a) => format!("DNS {} answered {}", c.authoritative, join(a)),
        Err(e) => e.clone(),
    };
    op.journal_note("dns_verify", &note, started.elapsed())
        .await;
    let dns_answer = answer.map_err(|e| ("dns_verify".to_string(), e))?;
    done.push(format!("{} answers {}", c.authoritative, join(&dns_answer)));
    if let Ok(pool) = op.ctx().db.pool().await {
        let _ = rows::domain_set_states(pool, &domain, Some("ok"), None).await;
    }
    // 5. The route, from the state under the lease.
    let route = env_route(&op.row().view);
    let route_state = match &route {
        None => {
            op.phase("no active slot: route waits for promote");
            done.push(format!(
                "route pending: {} {} has no active slot; the first promote routes {domain}",
                c.view.project, c.view.environment
            ));
            "pending"
        }
        Some(r) => {
            op.phase(format!("routing {domain} to {} (port {})", r.slot, r.port));
            let zone_r = op.ctx().config.routing.route_zone.clone();
            let name = route_rrset_name(&domain, &zone_r);
            let before = with_pdns(op.ctx(), |cl| {
                let (z, n) = (zone_r.clone(), name.clone());
                async move { cl.srv_rrset(&z, &n).await }
            })
            .await
            .map_err(|e| ("route".to_string(), e.to_string()))?;
            undo.route = Some(match before {
                Some(targets) => RrsetChange::Replace {
                    name: name.clone(),
                    targets,
                },
                None => RrsetChange::Delete { name: name.clone() },
            });
            let changes = crate::plan::switch::route_changes(
                std::slice::from_ref(&domain),
                &zone_r,
                r.port,
                r.fallback_port,
            );
            patch_routes(op, "route", &changes)
                .await
                .map_err(|e| ("route".to_string(), e))?;
            let started = Instant::now();
            verify_through_caddy(op.ctx(), std::slice::from_ref(&domain), r.port)
                .await
                .map_err(|e| ("verify".to_string(), e))?;
            op.journal_note(
                "verify",
                &format!("Caddy routes {domain} to port {}", r.port),
                started.elapsed(),
            )
            .await;
            done.push(format!(
                "routed {domain} to {} (port {}), checked through Caddy",
                r.slot, r.port
            ));
            "ok"
        }
    };
    if let Ok(pool) = op.ctx().db.pool().await {
        let _ = rows::domain_set_states(pool, &domain, Some("ok"), Some(route_state)).await;
    }
    Ok(SetupOutcome {
        domain,
        deployment_id: None,
        zone: Some(zone),
        zone_created: undo.zone_created.is_some(),
        addresses: want,
        dns_answer,
        dns_state: "ok".into(),
        route_state: route_state.into(),
        route,
        steps: Vec::new(),
        already: c.existing,
        took_over: foreign,
    })
}

fn ctx_list(v: &[String]) -> String {
    if v.is_empty() {
        "none configured".into()
    } else {
        v.join(", ")
    }
}

fn join(v: &[IpAddr]) -> String {
    v.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls the authoritative server until it answers exactly the expected
/// A (and AAAA) records, or `DNS_VERIFY_DEADLINE` passes.
async fn verify_dns(
    server: SocketAddr,
    domain: &str,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
) -> Result<Vec<IpAddr>, String> {
    let started = Instant::now();
    let mut last;
    loop {
        let a = query_addresses(server, domain, false, DNS_QUERY_TIMEOUT).await;
        let aaaa = match ipv6 {
            Some(_) => Some(query_addresses(server, domain, true, DNS_QUERY_TIMEOUT).await),
            None => None,
        };
        match (a, aaaa) {
            (Ok(a), aaaa) => {
                let v6_ok = match (&aaaa, ipv6) {
                    (Some(Ok(x)), Some(want)) => x.addresses == vec![IpAddr::V6(want)],
                    _ => true,
                };
                if a.addresses == vec![IpAddr::V4(ipv4)] && v6_ok {
                    let mut all = a.addresses.clone();
                    if let Some(Ok(x)) = aaaa {
                        all.extend(x.addresses);
                    }
                    return Ok(all);
                }
                last = format!("{} with [{}]", a.rcode, join(&a.addresses));
            }
            (Err(e), _) => last = e.to_string(),
        }
        if started.elapsed() >= DNS_VERIFY_DEADLINE {
            return Err(format!(
                "the authoritative server {server} did not answer {domain} A {ipv4} within {} s (last: {last}); check PowerDNS on the app server (health_check)",
                DNS_VERIFY_DEADLINE.as_secs()
            ));
        }
        tokio::time::sleep(DNS_POLL_INTERVAL).await;
    }
}

/// Undoes what a failed setup did, newest first; says what was reverted
/// and what could not be.
async fn revert(op: &OpHandle<'_>, c: &Checked, undo: Undo) -> String {
    let ctx = op.ctx();
    let mut notes = Vec::new();
    if let Some(previous) = undo.route {
        let r = patch_routes(op, "revert_route", std::slice::from_ref(&previous)).await;
        notes.push(match r {
            Ok(()) => "route put back".to_string(),
            Err(e) => format!("putting the route back FAILED ({e})"),
        });
    }
    let mut addresses_left = false;
    if let Some((zone, a, aaaa, cname)) = undo.addresses {
        if undo.zone_created.as_deref() != Some(zone.as_str()) {
            let mut body = address_restore_body(&c.domain, a.as_deref(), aaaa.as_deref());
            if let (Some(cname), Some(list)) = (cname, body["rrsets"].as_array_mut()) {
                list.push(cname_restore_rrset(&c.domain, &cname));
            }
            let started = Instant::now();
            let r = with_pdns(ctx, |cl| {
                let (z, body) = (zone.clone(), body.clone());
                async move { cl.patch_rrsets(&z, &body).await }
            })
            .await;
            let note = match &r {
                Ok(()) => "address records put back".to_string(),
                Err(e) => format!("putting the address records back FAILED ({e})"),
            };
            addresses_left = r.is_err();
            op.journal_note("revert_address", &note, started.elapsed())
                .await;
            notes.push(note);
        }
    }
    if let Some(zone) = undo.zone_created {
        let started = Instant::now();
        // Another setup may have put its domain into the new zone
        // meanwhile: then the zone stays (only this domain's records go).
        let (apex, own) = (
            crate::plan::dns::absolute_name(&zone),
            crate::plan::dns::absolute_name(&c.domain),
        );
        let r = with_pdns(ctx, |cl| {
            let (z, apex, own) = (zone.clone(), apex.clone(), own.clone());
            async move {
                let shared = cl
                    .rrset_names(&z)
                    .await?
                    .iter()
                    .any(|n| *n != apex && *n != own);
                if shared {
                    cl.patch_rrsets(&z, &address_restore_body(&own, None, None))
                        .await?;
                } else {
                    cl.delete_zone(&z).await?;
                }
                Ok(shared)
            }
        })
        .await;
        if matches!(r, Ok(false)) && undo.zone_claimed.as_deref() == Some(zone.as_str()) {
            if let Ok(pool) = ctx.db.pool().await {
                let _ = crate::state::zones::zone_forget(pool, &zone).await;
            }
        }
        let note = match &r {
            Ok(false) => format!("zone {zone} deleted"),
            Ok(true) => format!(
                "zone {zone} kept (another domain was set up in it meanwhile); {} removed from it",
                c.domain
            ),
            Err(e) => format!("deleting zone {zone} FAILED ({e})"),
        };
        op.journal_note("revert_zone", &note, started.elapsed())
            .await;
        notes.push(note);
    }
    // While the name may still hold codeb's records, its row stays: it
    // marks them as codeb's, so domain_setup again (or domain_delete)
    // can finish the job.
    if undo.row_inserted && addresses_left {
        notes.push("domain record kept (its address records may still be codeb's)".into());
    } else if undo.row_inserted {
        let r = match ctx.db.pool().await {
            Ok(pool) => rows::domain_remove(pool, &c.domain).await,
            Err(e) => Err(e),
        };
        notes.push(match r {
            Ok(()) => "domain record removed".to_string(),
            Err(e) => format!("removing the domain record FAILED ({e})"),
        });
    }
    if notes.is_empty() {
        return "Nothing had been changed.".into();
    }
    let failed = notes.iter().any(|n| n.contains("FAILED"));
    let mut s = format!("Reverted: {}.", notes.join("; "));
    if failed {
        s.push_str(" Once PowerDNS answers again (health_check), run domain_setup again: it replaces what was left.");
    } else {
        s.push_str(" Fix the cause above, then run domain_setup again.");
    }
    s
}

/// One domain for domain_list.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DomainInfo {
    /// Host name.
    pub domain: String,
    /// Project.
    pub project: String,
    /// Environment.
    pub environment: String,
    /// managed or custom.
    pub kind: String,
    /// pending, ok or failed.
    pub dns_state: String,
    /// pending, ok or failed.
    pub route_state: String,
    /// Where the route points by the recorded slot states.
    pub route: Option<DomainRoute>,
    /// RFC 3339.
    pub created_at: String,
}

/// One page of the domains of `team`'s projects (or of one of them),
/// sorted by name, and the cursor of the next.
pub async fn domain_list(
    ctx: &Ctx,
    team: &str,
    project: Option<&str>,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<DomainInfo>, Option<String>), OpError> {
    if let Some(p) = project {
        validate_project_name(p).map_err(|e| OpError::Invalid(e.0))?;
    }
    if let Some(c) = cursor {
        normalize_domain(c, false).map_err(|_| {
            OpError::Invalid("cursor is not one this server issued; omit it to start again".into())
        })?;
    }
    let pool = ctx.db.pool().await?;
    let mut page =
        rows::domains_page(pool, Some(team), project, cursor, i64::from(limit) + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = more
        .then(|| page.last().map(|d| d.hostname.clone()))
        .flatten();
    let mut out = Vec::with_capacity(page.len());
    let mut views: std::collections::HashMap<(String, String), Option<DomainRoute>> =
        std::collections::HashMap::new();
    for d in page {
        let key = (d.project.clone(), d.environment.clone());
        if !views.contains_key(&key) {
            let route = match Environment::parse(&d.environment) {
                Some(env) => crate::state::slots::env_view(pool, &d.project, env)
                    .await?
                    .and_then(|r| env_route(&r.view)),
                None => None,
            };
            views.insert(key.clone(), route);
        }
        out.push(DomainInfo {
            route: views.get(&key).cloned().flatten(),
            domain: d.hostname,
            project: d.project,
            environment: d.environment,
            kind: d.kind,
            dns_state: d.dns_state,
            route_state: d.route_state,
            created_at: d.created_at.to_rfc3339(),
        });
    }
    Ok((out, next))
}

/// The on-demand TLS `ask` answer: true only for host names codeb routes
/// for the project that owns them (`state::domains::hostname_routed`).
/// Invalid names are simply not in it.
pub async fn tls_allowed(ctx: &Ctx, domain: &str) -> Result<bool, OpError> {
    let Ok(domain) = normalize_domain(domain, false) else {
        return Ok(false);
    };
    let pool = ctx.db.pool().await?;
    let routing = &ctx.config.routing;
    Ok(rows::hostname_routed(pool, &domain, &routing.base_domain, &routing.preview_domain).await?)
}

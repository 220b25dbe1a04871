//! `domain_delete` (critical, DESIGN §6): takes a domain codeb set up off
//! the air — its SRV route, then its A/AAAA records, then its row. The
//! plan is what PowerDNS holds for it now; an approval of that plan does
//! not apply once the records changed. Like project_delete, it removes an
//! A or AAAA rrset only while it holds exactly what codeb set: records
//! someone changed outside codeb are not codeb's to delete (DESIGN §6
//! "Names have owners").

use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::{normalize_domain, validate_project_name, Environment};
use crate::ops::critical::{stale_plan_message, CriticalPlan};
use crate::ops::lifecycle::{begin_op, patch_routes, Caller, OpError, ProgressTx};
use crate::ops::pdns::with_pdns;
use crate::ops::Ctx;
use crate::plan::dns::{route_rrset_name, zone_for, RrsetChange};
use crate::plan::project_delete::{address_delete_body, address_rrset_is_ours};
use crate::state::domains as rows;

/// Progress phases of domain_delete.
const PHASES: u32 = 4;

/// What domain_delete did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DomainDeleteOutcome {
    /// One line for the reader.
    pub summary: String,
    /// The domain.
    pub domain: String,
    /// Operation id (deployment_get).
    pub deployment_id: String,
    /// Steps done, in order.
    pub steps: Vec<String>,
}

/// The domain as observed now.
struct Observed {
    domain: String,
    environment: Environment,
    plan: CriticalPlan,
    zone: Option<String>,
    /// Whether the A and the AAAA rrset are codeb's to delete.
    delete_a: bool,
    delete_aaaa: bool,
}

/// Where a domain is, from codeb's records alone (no PowerDNS call).
struct Located {
    domain: String,
    environment: Environment,
    kind: String,
    project_id: i64,
    team: String,
}

/// The normalised domain, the environment it routes to and its kind, and
/// the project's id and team.
async fn locate(ctx: &Ctx, project: &str, domain: &str) -> Result<Located, OpError> {
    validate_project_name(project).map_err(|e| OpError::Invalid(e.0))?;
    let domain = normalize_domain(domain, false).map_err(|e| OpError::Invalid(e.0))?;
    let pool = ctx.db.pool().await?;
    // A missing project answers like another team's (the access check's
    // words), so the answer never tells whether a name exists.
    let live = crate::state::projects::project_by_name(pool, project)
        .await?
        .ok_or_else(|| OpError::NotFound(project.to_string()))?;
    let not_found = || {
        OpError::Refused(format!(
            "domain {domain} is not set up for project {project}; domain_list shows its domains"
        ))
    };
    let row = rows::domain_get(pool, &domain)
        .await?
        .filter(|r| r.project == project)
        .ok_or_else(not_found)?;
    let environment = Environment::parse(&row.environment).ok_or_else(not_found)?;
    Ok(Located {
        domain,
        environment,
        kind: row.kind,
        project_id: live.id,
        team: live.team_id,
    })
}

async fn observe(ctx: &Ctx, project: &str, domain: &str) -> Result<Observed, OpError> {
    let Located {
        domain,
        environment,
        kind,
        project_id,
        team,
    } = locate(ctx, project, domain).await?;
    let route_zone = ctx.config.routing.route_zone.clone();
    let route_name = route_rrset_name(&domain, &route_zone);
    let (zone, a, aaaa, srv) = {
        let (d, rz, rn) = (domain.clone(), route_zone.clone(), route_name.clone());
        with_pdns(ctx, |cl| {
            let (d, rz, rn) = (d.clone(), rz.clone(), rn.clone());
            async move {
                let zones = cl.zones().await?;
                let zone = zone_for(&d, zones.iter().map(String::as_str));
                let (a, aaaa) = match &zone {
                    Some(z) => (
                        cl.rrset_contents(z, &d, "A").await?,
                        cl.rrset_contents(z, &d, "AAAA").await?,
                    ),
                    None => (None, None),
                };
                let srv = cl.rrset_contents(&rz, &rn, "SRV").await?;
                Ok((zone, a, aaaa, srv))
            }
        })
        .await
        .map_err(|e| OpError::Refused(format!("cannot read {domain}'s records: {e}")))?
    };
    let v4 = ctx.config.domain_ipv4().map(|a| a.to_string());
    let v6 = ctx.config.dns.app_ipv6.map(|a| a.to_string());
    let delete_a = address_rrset_is_ours(a.as_deref(), v4.as_deref());
    let delete_aaaa = address_rrset_is_ours(aaaa.as_deref(), v6.as_deref());
    let (a, aaaa, srv) = (
        a.unwrap_or_default(),
        aaaa.unwrap_or_default(),
        srv.unwrap_or_default(),
    );
    let deleted: Vec<String> = [(&a, delete_a), (&aaaa, delete_aaaa)]
        .into_iter()
        .filter(|(_, ours)| *ours)
        .flat_map(|(c, _)| c.iter().cloned())
        .collect();
    let kept: Vec<String> = [(&a, delete_a), (&aaaa, delete_aaaa)]
        .into_iter()
        .filter(|(_, ours)| !*ours)
        .flat_map(|(c, _)| c.iter().cloned())
        .collect();
    let summary = format!(
        "delete domain {domain} of {project} {environment}: its route ({} SRV record(s)) stops, \
         its address records ({}) in zone {} are deleted{}, then its record in codeb",
        srv.len(),
        if deleted.is_empty() {
            "none left".to_string()
        } else {
            deleted.join(", ")
        },
        zone.as_deref().unwrap_or("(none)"),
        if kept.is_empty() {
            String::new()
        } else {
            format!(" (kept: {}, which codeb did not set)", kept.join(", "))
        }
    );
    let details = serde_json::json!({
        "domain": domain,
        "environment": environment.as_str(),
        "kind": kind,
        "zone": zone,
        "a": a,
        "aaaa": aaaa,
        "route_rrset": route_name,
        "route_srv": srv,
    });
    Ok(Observed {
        plan: CriticalPlan {
            tool: "domain_delete",
            project: project.to_string(),
            project_id,
            team,
            environments: vec![environment],
            summary,
            details,
        },
        domain,
        environment,
        zone,
        delete_a,
        delete_aaaa,
    })
}

/// The plan of deleting `domain` from `project`, from the live records.
pub async fn domain_delete_plan(
    ctx: &Ctx,
    project: &str,
    domain: &str,
) -> Result<CriticalPlan, OpError> {
    Ok(observe(ctx, project, domain).await?.plan)
}

/// Deletes `domain` if its live plan still hashes to `approved_hash`.
pub async fn domain_delete(
    ctx: &Ctx,
    project: &str,
    domain: &str,
    approved_hash: &str,
    caller: &Caller,
    progress: ProgressTx,
) -> Result<DomainDeleteOutcome, OpError> {
    let environment = locate(ctx, project, domain).await?.environment;
    let mut op = begin_op(
        ctx,
        "domain_delete",
        project,
        environment,
        caller,
        progress,
        PHASES,
        CancellationToken::new(),
    )
    .await?;
    // The plan under the lock must be the one confirmed.
    let o = match observe(ctx, project, domain).await {
        Ok(o) if o.plan.hash() == approved_hash => o,
        Ok(_) => {
            let err = OpError::Refused(stale_plan_message("domain_delete", project));
            op.finish_err(&err.to_string()).await?;
            return Err(err);
        }
        Err(e) => {
            op.finish_err(&e.to_string()).await?;
            return Err(e);
        }
    };
    let id: Uuid = op.id();
    let mut steps = Vec::new();
    let failed = |step: &str, message: String, steps: &[String]| OpError::Failed {
        operation: "domain_delete",
        deployment_id: id,
        step: step.to_string(),
        message,
        aftermath: if steps.is_empty() {
            "Nothing had been changed.".into()
        } else {
            format!(
                "Done before it: {}. Run domain_delete again to finish.",
                steps.join("; ")
            )
        },
    };
    // 1. The route: Caddy stops routing the name.
    op.phase(format!("removing the route of {}", o.domain));
    let change = RrsetChange::Delete {
        name: route_rrset_name(&o.domain, &ctx.config.routing.route_zone),
    };
    if let Err(e) = patch_routes(&op, "route_delete", std::slice::from_ref(&change)).await {
        let err = failed("route_delete", e, &steps);
        op.finish_err(&err.to_string()).await?;
        return Err(err);
    }
    steps.push(format!("route of {} removed", o.domain));
    // 2. The address records.
    op.phase(format!("deleting the address records of {}", o.domain));
    if let (Some(zone), true) = (&o.zone, o.delete_a || o.delete_aaaa) {
        let started = Instant::now();
        let body = address_delete_body(&o.domain, o.delete_a, o.delete_aaaa);
        let r = with_pdns(ctx, |cl| {
            let (z, body) = (zone.clone(), body.clone());
            async move { cl.patch_rrsets(&z, &body).await }
        })
        .await;
        let note = match &r {
            Ok(()) => format!(
                "PATCH zone {zone}: {} deleted",
                [("A", o.delete_a), ("AAAA", o.delete_aaaa)]
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(t, _)| format!("{} {t}", o.domain))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("PATCH zone {zone} failed: {e}"),
        };
        op.journal_note("address_delete", &note, started.elapsed())
            .await;
        if let Err(e) = r {
            let err = failed("address_delete", e.to_string(), &steps);
            op.finish_err(&err.to_string()).await?;
            return Err(err);
        }
        steps.push(format!("address records of {} deleted", o.domain));
    }
    // 3. The row.
    op.phase(format!("forgetting {}", o.domain));
    let pool = ctx.db.pool().await?;
    if let Err(e) = rows::domain_remove(pool, &o.domain).await {
        let err = failed("record", e.to_string(), &steps);
        op.finish_err(&err.to_string()).await?;
        return Err(err);
    }
    steps.push(format!("{} removed from codeb", o.domain));
    op.phase("done");
    let outcome = DomainDeleteOutcome {
        summary: format!(
            "deleted domain {} of {project} {}: route, address records and record removed",
            o.domain, o.environment
        ),
        domain: o.domain.clone(),
        deployment_id: id.to_string(),
        steps,
    };
    let result = serde_json::to_value(&outcome).ok();
    op.finish_ok(result.as_ref()).await?;
    Ok(outcome)
}

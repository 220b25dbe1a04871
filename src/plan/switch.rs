//! Traffic switches (DESIGN §2): promote, rollback and slot cleanup. A
//! switch is one atomic PowerDNS PATCH of the environment's SRV rrsets —
//! the new slot at priority 0, the previous one at priority 10 as fallback
//! — then a check through Caddy, then one short state transaction. Pure.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::model::{SlotName, SlotState};
use crate::plan::dns::{
    route_rrset_name, RrsetChange, SrvTarget, PRIORITY_ACTIVE, PRIORITY_FALLBACK,
};
use crate::plan::env::{EnvView, Refusal};

/// Default time a replaced release stays available for rollback.
pub const DEFAULT_GRACE: Duration = Duration::hours(48);

/// A planned switch of traffic from one slot to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchPlan {
    /// `promote` or `rollback`.
    pub operation: &'static str,
    /// The slot that will receive traffic.
    pub to: SlotName,
    /// Its port (expected in `X-CodeB-Upstream`).
    pub to_port: u16,
    /// Image of the slot that will receive traffic.
    pub to_image: Option<String>,
    /// The slot that loses traffic but stays as fallback, if any.
    pub from: Option<SlotName>,
    /// Host names whose route changes.
    pub hosts: Vec<String>,
    /// Route rrsets after the switch.
    #[serde(skip)]
    pub changes: Vec<RrsetChange>,
    /// State of `to` afterwards.
    pub to_state: SlotState,
    /// State of `from` afterwards.
    pub from_state: Option<SlotState>,
    /// Grace expiry given to `from` (promote only).
    pub grace_expires_at: Option<DateTime<Utc>>,
}

impl fmt::Display for SwitchPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: route {} to {} (port {})",
            self.operation,
            self.hosts.join(", "),
            self.to,
            self.to_port
        )?;
        if let Some(from) = self.from {
            writeln!(
                f,
                "  fallback: {from} stays behind at priority {PRIORITY_FALLBACK}; afterwards {from} is {}",
                self.from_state.map_or("unchanged", |s| s.as_str())
            )?;
        }
        writeln!(
            f,
            "  verify through Caddy that responses carry X-CodeB-Upstream: {}",
            self.to_port
        )?;
        writeln!(f, "  then {} becomes {}", self.to, self.to_state.as_str())?;
        Ok(())
    }
}

/// The SRV rrsets of `hosts` pointing at `primary` with `fallback` behind it.
pub fn route_changes(
    hosts: &[String],
    route_zone: &str,
    primary: u16,
    fallback: Option<u16>,
) -> Vec<RrsetChange> {
    let mut targets = vec![SrvTarget {
        priority: PRIORITY_ACTIVE,
        port: primary,
    }];
    if let Some(p) = fallback {
        targets.push(SrvTarget {
            priority: PRIORITY_FALLBACK,
            port: p,
        });
    }
    hosts
        .iter()
        .map(|h| RrsetChange::Replace {
            name: route_rrset_name(h, route_zone),
            targets: targets.clone(),
        })
        .collect()
}

/// Promote: the deployed slot takes traffic; the active one becomes grace.
pub fn plan_promote(
    view: &EnvView,
    hosts: &[String],
    route_zone: &str,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<SwitchPlan, Refusal> {
    let to = view.in_state(SlotState::Deployed).ok_or_else(|| {
        Refusal(format!(
            "{} {} has no deployed slot to promote; deploy an image first",
            view.project, view.environment
        ))
    })?;
    let from = view.in_state(SlotState::Active).map(|s| s.slot);
    let to_port = view.port(to.slot);
    Ok(SwitchPlan {
        operation: "promote",
        to: to.slot,
        to_port,
        to_image: to.image.clone(),
        from,
        hosts: hosts.to_vec(),
        changes: route_changes(hosts, route_zone, to_port, from.map(|s| view.port(s))),
        to_state: SlotState::Active,
        from_state: from.map(|_| SlotState::Grace),
        grace_expires_at: from.map(|_| now + grace),
    })
}

/// Rollback: the unexpired grace slot takes traffic back; the active one
/// becomes deployed.
pub fn plan_rollback(
    view: &EnvView,
    hosts: &[String],
    route_zone: &str,
    now: DateTime<Utc>,
) -> Result<SwitchPlan, Refusal> {
    let grace = view.in_state(SlotState::Grace).ok_or_else(|| {
        Refusal(format!(
            "{} {} has no grace slot: there is no previous release to roll back to",
            view.project, view.environment
        ))
    })?;
    if grace.grace_expires_at.is_none_or(|t| t <= now) {
        return Err(Refusal(format!(
            "the grace slot {} of {} {} expired; roll forward with deploy instead",
            grace.slot, view.project, view.environment
        )));
    }
    let active = view.in_state(SlotState::Active).map(|s| s.slot);
    let to_port = view.port(grace.slot);
    Ok(SwitchPlan {
        operation: "rollback",
        to: grace.slot,
        to_port,
        to_image: grace.image.clone(),
        from: active,
        hosts: hosts.to_vec(),
        changes: route_changes(hosts, route_zone, to_port, active.map(|s| view.port(s))),
        to_state: SlotState::Active,
        from_state: active.map(|_| SlotState::Deployed),
        grace_expires_at: None,
    })
}

/// A planned cleanup of one expired grace slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupPlan {
    /// The expired grace slot.
    pub slot: SlotName,
    /// Its container.
    pub container: String,
    /// Route rrsets without the slot as fallback (active only).
    pub changes: Vec<RrsetChange>,
    /// Its preview rrset, deleted.
    pub preview_rrset: String,
}

/// Cleanup: an expired grace slot loses its container and routes. Never
/// touches the active slot. `None` when nothing has expired.
pub fn plan_cleanup(
    view: &EnvView,
    hosts: &[String],
    route_zone: &str,
    preview_domain: &str,
    now: DateTime<Utc>,
) -> Option<CleanupPlan> {
    let grace = view
        .slots
        .iter()
        .find(|s| s.state == SlotState::Grace && s.grace_expires_at.is_some_and(|t| t <= now))?;
    let active = view.in_state(SlotState::Active).map(|s| view.port(s.slot));
    let changes = match active {
        Some(port) => route_changes(hosts, route_zone, port, None),
        None => Vec::new(),
    };
    let preview = crate::plan::dns::preview_hostname(
        &view.project,
        view.environment,
        grace.slot,
        preview_domain,
    );
    Some(CleanupPlan {
        slot: grace.slot,
        container: view.container(grace.slot),
        changes,
        preview_rrset: route_rrset_name(&preview, route_zone),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::deploy::tests::view;

    fn hosts() -> Vec<String> {
        vec!["shop.codeb.test".into()]
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn first_promote_has_no_fallback() {
        let p = plan_promote(
            &view(SlotState::Deployed, SlotState::Empty),
            &hosts(),
            "route.codeb.test",
            now(),
            DEFAULT_GRACE,
        )
        .unwrap();
        assert_eq!((p.to, p.to_port, p.from), (SlotName::Blue, 4100, None));
        assert_eq!(
            p.changes,
            vec![RrsetChange::Replace {
                name: "_http._tcp.shop.codeb.test.route.codeb.test.".into(),
                targets: vec![SrvTarget {
                    priority: 0,
                    port: 4100
                }]
            }]
        );
        assert_eq!(p.grace_expires_at, None);
    }

    #[test]
    fn blue_to_green_keeps_blue_as_grace_fallback() {
        let p = plan_promote(
            &view(SlotState::Active, SlotState::Deployed),
            &hosts(),
            "route.codeb.test",
            now(),
            DEFAULT_GRACE,
        )
        .unwrap();
        assert_eq!(
            (p.to, p.from, p.from_state),
            (
                SlotName::Green,
                Some(SlotName::Blue),
                Some(SlotState::Grace)
            )
        );
        assert_eq!(
            p.changes,
            vec![RrsetChange::Replace {
                name: "_http._tcp.shop.codeb.test.route.codeb.test.".into(),
                targets: vec![
                    SrvTarget {
                        priority: 0,
                        port: 4101
                    },
                    SrvTarget {
                        priority: 10,
                        port: 4100
                    }
                ]
            }]
        );
        assert_eq!(p.grace_expires_at, Some(now() + Duration::hours(48)));
        assert_eq!(
            p.to_string(),
            "promote: route shop.codeb.test to green (port 4101)
  fallback: blue stays behind at priority 10; afterwards blue is grace
  verify through Caddy that responses carry X-CodeB-Upstream: 4101
  then green becomes active
"
        );
    }

    #[test]
    fn promote_without_deployed_slot_is_refused() {
        let e = plan_promote(
            &view(SlotState::Active, SlotState::Empty),
            &hosts(),
            "z",
            now(),
            DEFAULT_GRACE,
        )
        .unwrap_err();
        assert!(e.0.contains("deploy an image first"), "{e}");
    }

    #[test]
    fn rollback_needs_an_unexpired_grace_slot() {
        let e = plan_rollback(
            &view(SlotState::Active, SlotState::Empty),
            &hosts(),
            "z",
            now(),
        )
        .unwrap_err();
        assert!(e.0.contains("no grace slot"), "{e}");
        let mut v = view(SlotState::Grace, SlotState::Active);
        v.slots[0].grace_expires_at = Some(now() - Duration::seconds(1));
        let e = plan_rollback(&v, &hosts(), "z", now()).unwrap_err();
        assert!(e.0.contains("expired"), "{e}");
        v.slots[0].grace_expires_at = Some(now() + Duration::hours(1));
        let p = plan_rollback(&v, &hosts(), "route.codeb.test", now()).unwrap();
        assert_eq!(
            (p.to, p.to_port, p.from, p.from_state),
            (
                SlotName::Blue,
                4100,
                Some(SlotName::Green),
                Some(SlotState::Deployed)
            )
        );
        assert_eq!(
            p.changes[0],
            RrsetChange::Replace {
                name: "_http._tcp.shop.codeb.test.route.codeb.test.".into(),
                targets: vec![
                    SrvTarget {
                        priority: 0,
                        port: 4100
                    },
                    SrvTarget {
                        priority: 10,
                        port: 4101
                    }
                ]
            }
        );
    }

    #[test]
    fn cleanup_removes_only_expired_grace() {
        let mut v = view(SlotState::Grace, SlotState::Active);
        v.slots[0].grace_expires_at = Some(now() + Duration::hours(1));
        assert_eq!(
            plan_cleanup(&v, &hosts(), "route.codeb.test", "p.test", now()),
            None
        );
        v.slots[0].grace_expires_at = Some(now() - Duration::seconds(1));
        let c = plan_cleanup(&v, &hosts(), "route.codeb.test", "p.test", now()).unwrap();
        assert_eq!(c.slot, SlotName::Blue);
        assert_eq!(c.container, "shop-production-blue");
        assert_eq!(
            c.preview_rrset,
            "_http._tcp.shop-production-blue.p.test.route.codeb.test."
        );
        assert_eq!(
            c.changes,
            vec![RrsetChange::Replace {
                name: "_http._tcp.shop.codeb.test.route.codeb.test.".into(),
                targets: vec![SrvTarget {
                    priority: 0,
                    port: 4101
                }]
            }]
        );
        assert_eq!(
            plan_cleanup(
                &view(SlotState::Active, SlotState::Deployed),
                &hosts(),
                "z",
                "p",
                now()
            ),
            None
        );
    }
}

//! PURE: the route table in PowerDNS (DESIGN §2 "Routing without reloads").
//!
//! Every routed hostname `H` has an SRV rrset `_http._tcp.H.{route_zone}.`
//! listing slot ports on the app server: priority `PRIORITY_ACTIVE` for the
//! slot that serves, `PRIORITY_FALLBACK` for the one Caddy falls back to.
//! Caddy's one static site resolves that name with `dynamic srv` every
//! second, so a switch is one atomic PowerDNS PATCH and never a Caddy reload.
//!
//! This module only names rrsets and builds PATCH bodies; `exec::pdns`
//! sends them. Inputs are expected to be already validated (project names by
//! `model::validate_project_name`, domains and zones by
//! `model::validate_hostname`); the functions still never panic on odd input,
//! they just produce a name PowerDNS will refuse.

use serde_json::{json, Value};

use crate::model::{Environment, SlotName};

/// TTL of route rrsets, in seconds: Caddy refreshes its SRV answer every
/// second, and a longer TTL would only delay a switch in caches.
pub const ROUTE_TTL: u32 = 1;
/// SRV priority of the slot that serves traffic.
pub const PRIORITY_ACTIVE: u16 = 0;
/// SRV priority of the slot Caddy tries when the active one fails.
pub const PRIORITY_FALLBACK: u16 = 10;
/// SRV weight of every route record (`lb_policy first` ignores weights).
const ROUTE_WEIGHT: u16 = 0;
/// Record type of route rrsets.
const SRV: &str = "SRV";

/// One SRV record of a route: where (port on the app server) and in which
/// order Caddy tries it. The target host is the same for every record
/// (`routing.route_target`), so it is not part of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SrvTarget {
    /// Lower is tried first: `PRIORITY_ACTIVE` or `PRIORITY_FALLBACK`.
    pub priority: u16,
    /// Host port of the slot on the app server.
    pub port: u16,
}

/// One change to the route table, applied together with the others of the
/// same PATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RrsetChange {
    /// Make `name` hold exactly `targets` (an empty list deletes the rrset,
    /// which is how PowerDNS treats a REPLACE without records).
    Replace {
        /// Fully qualified rrset name, from `route_rrset_name`.
        name: String,
        /// The records, in order.
        targets: Vec<SrvTarget>,
    },
    /// Remove the SRV rrset `name` (a no-op if it does not exist).
    Delete {
        /// Fully qualified rrset name, from `route_rrset_name`.
        name: String,
    },
}

/// `name` without trailing dots, lowercased: DNS names compare without case,
/// and PowerDNS hands names back in lowercase.
fn bare(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `name` as an absolute DNS name: lowercased, exactly one trailing dot.
pub fn absolute_name(name: &str) -> String {
    format!("{}.", bare(name))
}

/// The route rrset of hostname `host`: `_http._tcp.{host}.{route_zone}.`,
/// lowercased, with exactly one trailing dot whether or not `host` and
/// `route_zone` end with one. This is the name Caddy's `dynamic srv` asks for.
pub fn route_rrset_name(host: &str, route_zone: &str) -> String {
    let mut name = String::from("_http._tcp.");
    for part in [bare(host), bare(route_zone)] {
        if !part.is_empty() {
            name.push_str(&part);
            name.push('.');
        }
    }
    name
}

/// The public hostnames of a (project, environment), without trailing dot:
/// production `{project}.{base}`, every other environment
/// `{project}-{env}.{base}` (DESIGN §2 "Domains"). Custom domains are added
/// by the caller.
pub fn env_hostnames(project: &str, env: Environment, base_domain: &str) -> Vec<String> {
    let base = bare(base_domain);
    match env {
        Environment::Production => vec![format!("{project}.{base}")],
        _ => vec![format!("{project}-{}.{base}", env.as_str())],
    }
}

/// The preview hostname of one slot, without trailing dot:
/// `{project}-{env}-{slot}.{preview_domain}`. Its route names only that slot.
pub fn preview_hostname(
    project: &str,
    env: Environment,
    slot: SlotName,
    preview_domain: &str,
) -> String {
    format!(
        "{project}-{}-{}.{}",
        env.as_str(),
        slot.as_str(),
        bare(preview_domain)
    )
}

/// The content of one SRV record: `priority weight port target.`.
fn srv_content(t: SrvTarget, target: &str) -> String {
    format!(
        "{} {ROUTE_WEIGHT} {} {}",
        t.priority,
        t.port,
        absolute_name(target)
    )
}

/// The PowerDNS PATCH body (`PATCH /api/v1/servers/{id}/zones/{zone}`) that
/// applies `changes` at once: REPLACE with `ROUTE_TTL` and one record per
/// target pointing at `route_target`, or DELETE. PowerDNS applies the whole
/// body in one transaction, so a switch is atomic.
pub fn srv_patch_body(changes: &[RrsetChange], route_target: &str) -> Value {
    let rrsets: Vec<Value> = changes
        .iter()
        .map(|c| match c {
            RrsetChange::Replace { name, targets } => json!({
                "name": absolute_name(name),
                "type": SRV,
                "ttl": ROUTE_TTL,
                "changetype": "REPLACE",
                "records": targets
                    .iter()
                    .map(|t| json!({"content": srv_content(*t, route_target), "disabled": false}))
                    .collect::<Vec<_>>(),
            }),
            RrsetChange::Delete { name } => json!({
                "name": absolute_name(name),
                "type": SRV,
                "changetype": "DELETE",
            }),
        })
        .collect();
    json!({ "rrsets": rrsets })
}

/// Parses one SRV record's content (`priority weight port target`), as
/// PowerDNS returns it; `None` unless it has exactly those four fields with
/// numbers in range and a non-empty target. Weight and target are checked
/// but not returned (see `SrvTarget`).
pub fn parse_srv_content(content: &str) -> Option<SrvTarget> {
    let mut fields = content.split_ascii_whitespace();
    let priority = fields.next()?.parse::<u16>().ok()?;
    let _weight = fields.next()?.parse::<u16>().ok()?;
    let port = fields.next()?.parse::<u16>().ok()?;
    let _target = fields.next()?;
    if fields.next().is_some() {
        return None;
    }
    Some(SrvTarget { priority, port })
}

/// TTL of a domain's A/AAAA records, in seconds: short enough that moving
/// the app server is not stuck in caches for long.
pub const ADDRESS_TTL: u32 = 300;

/// The zone `domain` belongs to among `zones` (names without trailing dot):
/// the longest one that equals `domain` or is a suffix of it at a label
/// boundary. `None` when no zone contains it.
pub fn zone_for<'a>(domain: &str, zones: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let domain = bare(domain);
    zones
        .into_iter()
        .map(bare)
        .filter(|z| !z.is_empty() && (domain == *z || domain.ends_with(&format!(".{z}"))))
        .max_by_key(|z| z.len())
}

/// The PATCH body that makes `name` hold exactly the A record `ipv4` and,
/// when given, the AAAA record `ipv6` (no AAAA given: any AAAA rrset is
/// deleted, so the name answers only what codeb set). A CNAME at the name
/// is deleted first: it excludes address records, and domain_setup only
/// sends this body for a name whose records are codeb's or an owner took
/// over.
pub fn address_patch_body(
    name: &str,
    ipv4: std::net::Ipv4Addr,
    ipv6: Option<std::net::Ipv6Addr>,
) -> Value {
    let name = absolute_name(name);
    let cname = json!({"name": name, "type": "CNAME", "changetype": "DELETE"});
    let a = json!({
        "name": name, "type": "A", "ttl": ADDRESS_TTL, "changetype": "REPLACE",
        "records": [{"content": ipv4.to_string(), "disabled": false}],
    });
    let aaaa = match ipv6 {
        Some(v6) => json!({
            "name": name, "type": "AAAA", "ttl": ADDRESS_TTL, "changetype": "REPLACE",
            "records": [{"content": v6.to_string(), "disabled": false}],
        }),
        None => json!({"name": name, "type": "AAAA", "changetype": "DELETE"}),
    };
    json!({ "rrsets": [cname, a, aaaa] })
}

/// The rrset change that puts `name`'s CNAME back as it was (`contents`
/// as PowerDNS listed them), for undoing a takeover; add it to an
/// `address_restore_body` that deletes the address records first.
pub fn cname_restore_rrset(name: &str, contents: &[String]) -> Value {
    json!({
        "name": absolute_name(name), "type": "CNAME", "ttl": ADDRESS_TTL, "changetype": "REPLACE",
        "records": contents.iter().map(|x| json!({"content": x, "disabled": false})).collect::<Vec<_>>(),
    })
}

/// The PATCH body that puts `name`'s A and AAAA rrsets back as they were:
/// each given list of contents is restored (with `ADDRESS_TTL`), an absent
/// one deleted.
pub fn address_restore_body(name: &str, a: Option<&[String]>, aaaa: Option<&[String]>) -> Value {
    let name = absolute_name(name);
    let one = |rtype: &str, contents: Option<&[String]>| match contents {
        Some(c) if !c.is_empty() => json!({
            "name": name, "type": rtype, "ttl": ADDRESS_TTL, "changetype": "REPLACE",
            "records": c.iter().map(|x| json!({"content": x, "disabled": false})).collect::<Vec<_>>(),
        }),
        _ => json!({"name": name, "type": rtype, "changetype": "DELETE"}),
    };
    json!({ "rrsets": [one("A", a), one("AAAA", aaaa)] })
}

/// The body of `POST /zones` that creates the native zone `zone` with the
/// given name servers (absolute names).
pub fn zone_create_body(zone: &str, nameservers: &[String]) -> Value {
    json!({
        "name": absolute_name(zone),
        "kind": "Native",
        "nameservers": nameservers.iter().map(|n| absolute_name(n)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn zone_for_takes_the_longest_suffix_at_a_label_boundary() {
        let zones = ["example.test", "shop.example.test.", "codeb.test", ""];
        assert_eq!(
            zone_for("a.shop.example.test", zones).as_deref(),
            Some("shop.example.test")
        );
        assert_eq!(
            zone_for("Shop.Example.Test.", zones).as_deref(),
            Some("shop.example.test")
        );
        assert_eq!(
            zone_for("www.example.test", zones).as_deref(),
            Some("example.test")
        );
        assert_eq!(zone_for("badexample.test", zones), None);
        assert_eq!(zone_for("other.test", zones), None);
    }

    #[test]
    fn address_bodies_golden() {
        let b = address_patch_body("shop.example.test", "10.77.0.11".parse().unwrap(), None);
        assert_eq!(
            b,
            json!({"rrsets": [
                {"name": "shop.example.test.", "type": "CNAME", "changetype": "DELETE"},
                {"name": "shop.example.test.", "type": "A", "ttl": 300, "changetype": "REPLACE",
                 "records": [{"content": "10.77.0.11", "disabled": false}]},
                {"name": "shop.example.test.", "type": "AAAA", "changetype": "DELETE"},
            ]})
        );
        let b = address_patch_body(
            "s.e.test.",
            "10.0.0.1".parse().unwrap(),
            Some("fd00::1".parse().unwrap()),
        );
        assert_eq!(b["rrsets"][2]["records"][0]["content"], "fd00::1");
        assert_eq!(
            cname_restore_rrset("s.e.test", &["x.test.".to_string()]),
            json!({"name": "s.e.test.", "type": "CNAME", "ttl": 300, "changetype": "REPLACE",
                   "records": [{"content": "x.test.", "disabled": false}]})
        );
        let r = address_restore_body("s.e.test", Some(&["10.0.0.9".to_string()]), None);
        assert_eq!(r["rrsets"][0]["records"][0]["content"], "10.0.0.9");
        assert_eq!(r["rrsets"][1]["changetype"], "DELETE");
        assert_eq!(
            zone_create_body("example.test", &["ns1.codeb.test".into()]),
            json!({"name": "example.test.", "kind": "Native", "nameservers": ["ns1.codeb.test."]})
        );
    }

    use super::*;

    const ZONE: &str = "route.codeb.test";
    const TARGET: &str = "app.route.codeb.test";

    #[test]
    fn rrset_names_have_exactly_one_trailing_dot() {
        let want = "_http._tcp.shop.codeb.test.route.codeb.test.";
        for (host, zone) in [
            ("shop.codeb.test", "route.codeb.test"),
            ("shop.codeb.test.", "route.codeb.test"),
            ("shop.codeb.test", "route.codeb.test."),
            ("shop.codeb.test.", "route.codeb.test."),
            ("Shop.Codeb.Test", "ROUTE.codeb.test.."),
        ] {
            assert_eq!(route_rrset_name(host, zone), want, "{host} {zone}");
        }
    }

    #[test]
    fn rrset_names_of_odd_input_do_not_panic() {
        assert_eq!(route_rrset_name("", ""), "_http._tcp.");
        assert_eq!(
            route_rrset_name("...", ZONE),
            "_http._tcp.route.codeb.test."
        );
        assert_eq!(route_rrset_name("h", ""), "_http._tcp.h.");
        assert_eq!(
            route_rrset_name("héllo", ZONE),
            "_http._tcp.héllo.route.codeb.test."
        );
    }

    #[test]
    fn hostnames_per_environment() {
        assert_eq!(
            env_hostnames("shop", Environment::Production, "codeb.test"),
            vec!["shop.codeb.test"]
        );
        assert_eq!(
            env_hostnames("shop", Environment::Staging, "codeb.test."),
            vec!["shop-staging.codeb.test"]
        );
        assert_eq!(
            env_hostnames("shop", Environment::Preview, "codeb.test"),
            vec!["shop-preview.codeb.test"]
        );
        assert_eq!(
            preview_hostname(
                "shop",
                Environment::Production,
                SlotName::Green,
                "preview.codeb.test."
            ),
            "shop-production-green.preview.codeb.test"
        );
        assert_eq!(
            preview_hostname("shop", Environment::Staging, SlotName::Blue, "p.test"),
            "shop-staging-blue.p.test"
        );
    }

    #[test]
    fn patch_body_golden() {
        let name = route_rrset_name("shop.codeb.test", ZONE);
        let body = srv_patch_body(
            &[
                RrsetChange::Replace {
                    name: name.clone(),
                    targets: vec![
                        SrvTarget {
                            priority: PRIORITY_ACTIVE,
                            port: 4101,
                        },
                        SrvTarget {
                            priority: PRIORITY_FALLBACK,
                            port: 4100,
                        },
                    ],
                },
                RrsetChange::Delete {
                    name: "_http._tcp.old.codeb.test.route.codeb.test".into(),
                },
            ],
            TARGET,
        );
        assert_eq!(
            body,
            json!({"rrsets": [
                {
                    "name": "_http._tcp.shop.codeb.test.route.codeb.test.",
                    "type": "SRV",
                    "ttl": 1,
                    "changetype": "REPLACE",
                    "records": [
                        {"content": "0 0 4101 app.route.codeb.test.", "disabled": false},
                        {"content": "10 0 4100 app.route.codeb.test.", "disabled": false},
                    ],
                },
                {
                    "name": "_http._tcp.old.codeb.test.route.codeb.test.",
                    "type": "SRV",
                    "changetype": "DELETE",
                },
            ]})
        );
    }

    #[test]
    fn patch_body_target_gets_one_dot_and_empty_changes_are_empty() {
        let body = srv_patch_body(
            &[RrsetChange::Replace {
                name: "n.".into(),
                targets: vec![SrvTarget {
                    priority: 0,
                    port: 5000,
                }],
            }],
            "app.route.codeb.test.",
        );
        assert_eq!(
            body["rrsets"][0]["records"][0]["content"],
            "0 0 5000 app.route.codeb.test."
        );
        assert_eq!(body["rrsets"][0]["name"], "n.");
        assert_eq!(srv_patch_body(&[], TARGET), json!({"rrsets": []}));
    }

    #[test]
    fn srv_content_round_trips() {
        for t in [
            SrvTarget {
                priority: 0,
                port: 4100,
            },
            SrvTarget {
                priority: 10,
                port: 65535,
            },
        ] {
            assert_eq!(parse_srv_content(&srv_content(t, TARGET)), Some(t));
        }
        assert_eq!(
            parse_srv_content("  10   0 4101 app.route.codeb.test. "),
            Some(SrvTarget {
                priority: 10,
                port: 4101
            })
        );
    }

    #[test]
    fn bad_srv_content_is_none() {
        for bad in [
            "",
            "0 0 4100",
            "0 0 4100 a. extra",
            "x 0 4100 a.",
            "0 0 70000 a.",
            "-1 0 4100 a.",
            "0 0 4100.5 a.",
            "127.0.0.1",
        ] {
            assert_eq!(parse_srv_content(bad), None, "{bad:?}");
        }
    }
}

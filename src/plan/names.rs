//! PURE: one owner per host name (DESIGN §2 "Domains", §6 "Names have
//! owners").
//!
//! codeb generates these host names for a project `p`:
//! - `p.{base_domain}` (production) and `p-{env}.{base_domain}` (every
//!   other environment), from `dns::env_hostnames`;
//! - `p-{env}-{slot}.{preview_domain}` for every environment and slot,
//!   from `dns::preview_hostname`.
//!
//! Project names are `[a-z][a-z0-9-]*[a-z0-9]` and environment and slot
//! names hold no `-`, so the text after the last `-` of a generated label
//! is an environment name (`p-{env}`) or a slot name (`p-{env}-{slot}`),
//! and what comes before it is fixed by it. Two generated labels can then
//! only be equal when both come from the same (project, environment,
//! slot), or when one is a production label `p` that itself ends in
//! `-{env}` or `-{slot}` (`shop-staging` against `shop`'s staging host;
//! `shop-staging-blue` against `shop`'s preview host when
//! `preview_domain == base_domain`). Reserving those suffixes for project
//! names (`reserved_suffixes`, derived from `Environment::ALL` and
//! `SlotName::ALL`) makes every generated host name collision-free by
//! construction, whatever the configuration, and keeps the URL shapes.
//! The route rrset of a host (`dns::route_rrset_name`) adds a fixed
//! prefix and suffix, so it is unique exactly when the host is.
//!
//! Names codeb keeps for itself (its name servers, the route zone and SRV
//! target, the preview zone, managed zones) must not be a generated host
//! either, nor sit below one: `check_project_name` refuses such a project
//! name, and `reserved_domain` refuses them (and everything under
//! `base_domain`, the preview zone and the route zone) as custom domains.

use crate::config::Config;
use crate::model::{Environment, SlotName};
use crate::plan::dns::{env_hostnames, preview_hostname};

/// The naming configuration that decides generated host names and the
/// names codeb keeps for itself. Names are lowercase without trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNaming {
    /// `routing.base_domain`.
    pub base_domain: String,
    /// `routing.preview_domain` (may equal `base_domain`).
    pub preview_domain: String,
    /// `routing.route_zone`.
    pub route_zone: String,
    /// Names codeb keeps for itself, each with what it is (for
    /// messages): name servers, the SRV target, the route zone, the
    /// preview and base domains. No generated host may equal or hold one,
    /// and no custom domain may be one or lie below one.
    pub reserved: Vec<(String, String)>,
    /// `dns.managed_zones`: no generated host may equal or hold one (their
    /// names are custom domains).
    pub managed_zones: Vec<String>,
}

/// `name` lowercased, without trailing dots.
fn bare(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// True when `name` equals `zone` or lies below it (at a label boundary).
pub fn is_at_or_under(name: &str, zone: &str) -> bool {
    let (name, zone) = (bare(name), bare(zone));
    !zone.is_empty() && (name == zone || name.ends_with(&format!(".{zone}")))
}

impl HostNaming {
    /// The naming of `config`: its routing names, and as reserved names
    /// the name servers of zones codeb creates, the SRV target, the route
    /// zone, the preview domain and the base domain; and its managed zones.
    pub fn from_config(config: &Config) -> Self {
        let r = &config.routing;
        let mut reserved: Vec<(String, String)> = Vec::new();
        let mut add = |name: &str, what: String| {
            let name = bare(name);
            if !name.is_empty() && !reserved.iter().any(|(n, _)| *n == name) {
                reserved.push((name, what));
            }
        };
        for ns in config.dns_nameservers() {
            add(
                &ns,
                "a name server of the zones codeb creates (dns.nameservers)".into(),
            );
        }
        add(
            &r.route_target,
            "the SRV target of routes (routing.route_target)".into(),
        );
        add(&r.route_zone, "the route zone (routing.route_zone)".into());
        add(
            &r.preview_domain,
            "the preview domain (routing.preview_domain)".into(),
        );
        add(
            &r.base_domain,
            "the base domain (routing.base_domain)".into(),
        );
        Self {
            base_domain: bare(&r.base_domain),
            preview_domain: bare(&r.preview_domain),
            route_zone: bare(&r.route_zone),
            reserved,
            managed_zones: config.dns.managed_zones.iter().map(|z| bare(z)).collect(),
        }
    }
}

/// One host name codeb generates for a project.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GeneratedHost {
    /// The host name, lowercase, no trailing dot.
    pub host: String,
    /// The environment it serves.
    pub environment: Environment,
    /// The slot, for preview hosts; `None` for environment hosts.
    pub slot: Option<SlotName>,
}

impl GeneratedHost {
    /// "production host", "staging preview host of slot blue", ...
    pub fn describe(&self) -> String {
        match self.slot {
            None => format!("{} host", self.environment),
            Some(s) => format!("{} preview host of slot {s}", self.environment),
        }
    }
}

/// Every host name codeb generates for `project`: one per environment
/// under `base_domain`, one per (environment, slot) under `preview_domain`.
pub fn project_hosts(project: &str, naming: &HostNaming) -> Vec<GeneratedHost> {
    let mut out = Vec::new();
    for env in Environment::ALL {
        for host in env_hostnames(project, env, &naming.base_domain) {
            out.push(GeneratedHost {
                host,
                environment: env,
                slot: None,
            });
        }
        for slot in SlotName::ALL {
            out.push(GeneratedHost {
                host: preview_hostname(project, env, slot, &naming.preview_domain),
                environment: env,
                slot: Some(slot),
            });
        }
    }
    out
}

/// What a reserved suffix stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedSuffix {
    /// `-{env}`: ends environment host names `p-{env}.{base_domain}`.
    Environment(Environment),
    /// `-{slot}`: ends preview host names `p-{env}-{slot}.{preview_domain}`.
    Slot(SlotName),
}

/// The suffixes a project name may not end in: `-` and every environment
/// name, `-` and every slot name (see the module docs for why).
pub fn reserved_suffixes() -> Vec<(String, ReservedSuffix)> {
    Environment::ALL
        .into_iter()
        .map(|e| (format!("-{}", e.as_str()), ReservedSuffix::Environment(e)))
        .chain(
            SlotName::ALL
                .into_iter()
                .map(|s| (format!("-{}", s.as_str()), ReservedSuffix::Slot(s))),
        )
        .collect()
}

/// Whether a new project may be called `project` (already valid by
/// `model::validate_project_name`): it does not end in a reserved suffix,
/// and none of its generated host names is, or lies above, a name codeb
/// keeps for itself. The error says what is wrong and what to do.
pub fn check_project_name(project: &str, naming: &HostNaming) -> Result<(), String> {
    for (suffix, what) in reserved_suffixes() {
        let Some(stem) = project.strip_suffix(suffix.as_str()) else {
            continue;
        };
        let why = match what {
            ReservedSuffix::Environment(Environment::Production) => format!(
                "which is reserved: generated host names end in environment names (project `{stem}`'s production preview hosts are {})",
                SlotName::ALL
                    .map(|s| preview_hostname(stem, Environment::Production, s, &naming.preview_domain))
                    .join(", ")
            ),
            ReservedSuffix::Environment(env) => format!(
                "which is reserved for the {env} host of project `{stem}` ({})",
                env_hostnames(stem, env, &naming.base_domain).join(", ")
            ),
            ReservedSuffix::Slot(slot) => format!(
                "which is reserved for preview host names of slot {slot} ({{project}}-{{environment}}-{slot}.{})",
                naming.preview_domain
            ),
        };
        return Err(format!(
            "project name `{project}` ends in `{suffix}`, {why}; choose another name (no project name may end in {})",
            reserved_suffixes()
                .iter()
                .map(|(s, _)| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let managed: Vec<(String, String)> = naming
        .managed_zones
        .iter()
        .map(|z| (z.clone(), "a managed zone (dns.managed_zones)".to_string()))
        .collect();
    for h in project_hosts(project, naming) {
        let reserved = || naming.reserved.iter().chain(&managed);
        // The name itself first, else the first name below it.
        let hit = reserved()
            .find(|(name, _)| *name == h.host)
            .map(|(_, what)| format!("which is {what}"))
            .or_else(|| {
                reserved()
                    .find(|(name, _)| is_at_or_under(name, &h.host))
                    .map(|(name, what)| format!("which holds {name}, {what}"))
            });
        if let Some(why) = hit {
            return Err(format!(
                "project name `{project}` would give the {} {}, {why}; choose another name",
                h.describe(),
                h.host
            ));
        }
    }
    Ok(())
}

/// Why `domain` (normalised) cannot be a custom domain because codeb keeps
/// it for itself, or `None`: a name at or under `base_domain`, the preview
/// domain or the route zone (codeb generates the names there), or at or
/// under one of its name servers or the SRV target.
pub fn reserved_domain(domain: &str, naming: &HostNaming) -> Option<String> {
    let zones = [
        (
            &naming.base_domain,
            format!(
                "base_domain {}: codeb generates the names there for projects ({{project}}.{0}, {{project}}-{{environment}}.{0})",
                naming.base_domain
            ),
        ),
        (
            &naming.preview_domain,
            format!(
                "the preview domain {}: codeb generates the preview hosts there",
                naming.preview_domain
            ),
        ),
        (
            &naming.route_zone,
            format!(
                "the route zone {}, which codeb manages itself",
                naming.route_zone
            ),
        ),
    ];
    // The innermost zone names the reason (the preview domain may lie
    // under base_domain).
    if let Some((_, what)) = zones
        .into_iter()
        .filter(|(zone, _)| is_at_or_under(domain, zone))
        .max_by_key(|(zone, _)| zone.len())
    {
        return Some(format!(
            "domain {domain} is in {what}; choose a domain outside it (a project's own host names need no domain_setup)"
        ));
    }
    naming
        .reserved
        .iter()
        .find(|(name, _)| is_at_or_under(domain, name))
        .map(|(name, what)| {
            format!("domain {domain} is at or under {name}, {what}; choose another domain")
        })
}

/// One record at a name, as PowerDNS holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRecord {
    /// Record type (`A`, `CNAME`, ...).
    pub rtype: String,
    /// Content as PowerDNS writes it.
    pub content: String,
    /// Whether the record is disabled (kept but not served).
    pub disabled: bool,
}

impl NameRecord {
    /// `A 192.0.2.77`, `CNAME x.example. (disabled)`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}{}",
            self.rtype,
            self.content,
            if self.disabled { " (disabled)" } else { "" }
        )
    }
}

/// Record types that decide where a name's traffic goes: the ones
/// domain_setup sets (A, AAAA) and the one that excludes them (CNAME).
pub const ADDRESS_TYPES: [&str; 3] = ["A", "AAAA", "CNAME"];

/// Whose a name's address records are, as domain_setup sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRow {
    /// codeb has no domain row for the name.
    None,
    /// The name is a domain of the same project environment and codeb
    /// set its records (`dns_state` ok).
    OwnSet,
    /// The name is a domain of the same project environment whose setup
    /// did not finish (`dns_state` pending or failed).
    OwnUnfinished,
}

/// The address records (A, AAAA, CNAME) at a name that codeb did not make,
/// described (`A 192.0.2.77`); empty when there are none. codeb made a
/// name's records when it has the name's domain row and set them (`OwnSet`);
/// after an unfinished setup only records holding exactly what codeb sets
/// (`ipv4`, `ipv6`) are its own. Without a row, every address record is
/// someone else's, whatever it points at.
pub fn foreign_address_records(
    records: &[NameRecord],
    row: NameRow,
    ipv4: &str,
    ipv6: Option<&str>,
) -> Vec<String> {
    let address: Vec<&NameRecord> = records
        .iter()
        .filter(|r| ADDRESS_TYPES.contains(&r.rtype.as_str()))
        .collect();
    let codebs = |r: &NameRecord| {
        !r.disabled
            && match r.rtype.as_str() {
                "A" => r.content == ipv4,
                "AAAA" => Some(r.content.as_str()) == ipv6,
                _ => false,
            }
    };
    let foreign = match row {
        NameRow::OwnSet => false,
        NameRow::OwnUnfinished => !address.iter().all(|r| codebs(r)),
        NameRow::None => !address.is_empty(),
    };
    if foreign {
        address.iter().map(|r| r.describe()).collect()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(base: &str, preview: &str) -> HostNaming {
        HostNaming {
            base_domain: base.into(),
            preview_domain: preview.into(),
            route_zone: format!("route.{base}"),
            reserved: vec![
                (format!("ns1.{base}"), "a name server".into()),
                (format!("app.route.{base}"), "the SRV target".into()),
                (format!("route.{base}"), "the route zone".into()),
                (preview.into(), "the preview domain".into()),
                (base.into(), "the base domain".into()),
            ],
            managed_zones: vec!["example.test".into()],
        }
    }

    #[test]
    fn suffixes_come_from_environments_and_slots() {
        let s: Vec<String> = reserved_suffixes().into_iter().map(|(s, _)| s).collect();
        assert_eq!(
            s,
            ["-production", "-staging", "-preview", "-blue", "-green"]
        );
    }

    #[test]
    fn reserved_suffixes_are_refused_with_the_colliding_host() {
        let n = naming("codeb.test", "preview.codeb.test");
        let e = check_project_name("shop-staging", &n).unwrap_err();
        assert_eq!(
            e,
            "project name `shop-staging` ends in `-staging`, which is reserved for the staging host of project `shop` (shop-staging.codeb.test); choose another name (no project name may end in `-production`, `-staging`, `-preview`, `-blue`, `-green`)"
        );
        assert!(check_project_name("shop-preview", &n)
            .unwrap_err()
            .contains("preview host of project `shop`"));
        let e = check_project_name("shop-green", &n).unwrap_err();
        assert!(e.contains("slot green"), "{e}");
        let e = check_project_name("shop-production", &n).unwrap_err();
        assert!(
            e.contains(
                "shop-production-blue.preview.codeb.test, shop-production-green.preview.codeb.test"
            ),
            "{e}"
        );
        for ok in ["shop", "staging", "shop-stag", "blue-shop", "shopstaging"] {
            assert_eq!(check_project_name(ok, &n), Ok(()), "{ok}");
        }
    }

    #[test]
    fn hosts_that_are_or_hold_reserved_names_are_refused() {
        let n = naming("codeb.test", "preview.codeb.test");
        assert_eq!(
            check_project_name("ns1", &n).unwrap_err(),
            "project name `ns1` would give the production host ns1.codeb.test, which is a name server; choose another name"
        );
        let e = check_project_name("route", &n).unwrap_err();
        assert!(e.contains("which is the route zone"), "{e}");
        let e = check_project_name("preview", &n).unwrap_err();
        assert!(e.contains("the preview domain"), "{e}");
        // A preview zone two labels down: its first label is reserved too.
        let mut deep = naming("codeb.test", "pv.apps.codeb.test");
        deep.reserved
            .push(("pv.apps.codeb.test".into(), "the preview domain".into()));
        let e = check_project_name("apps", &deep).unwrap_err();
        assert!(e.contains("which holds pv.apps.codeb.test"), "{e}");
    }

    #[test]
    fn custom_domains_in_codebs_names_are_reserved() {
        let n = naming("codeb.test", "preview.codeb.test");
        for d in [
            "codeb.test",
            "shop.codeb.test",
            "www.shop.codeb.test",
            "x.preview.codeb.test",
            "_http._tcp.x.route.codeb.test",
        ] {
            assert!(reserved_domain(d, &n).is_some(), "{d}");
        }
        let e = reserved_domain("x.preview.codeb.test", &n).unwrap();
        assert!(
            e.contains("is in the preview domain preview.codeb.test"),
            "{e}"
        );
        let e = reserved_domain("shop-staging.codeb.test", &n).unwrap();
        assert!(
            e.starts_with("domain shop-staging.codeb.test is in base_domain codeb.test"),
            "{e}"
        );
        for d in ["shop.example.test", "codeb.test.example", "xcodeb.test"] {
            assert_eq!(reserved_domain(d, &n), None, "{d}");
        }
        // Name servers outside base_domain are reserved as well.
        let mut n2 = n.clone();
        n2.reserved
            .push(("ns.dns.example".into(), "a name server".into()));
        assert!(reserved_domain("ns.dns.example", &n2).is_some());
        assert_eq!(reserved_domain("www.dns.example", &n2), None);
    }

    fn rec(rtype: &str, content: &str) -> NameRecord {
        NameRecord {
            rtype: rtype.into(),
            content: content.into(),
            disabled: false,
        }
    }

    #[test]
    fn records_without_a_row_are_foreign_whatever_they_point_at() {
        let v4 = "10.77.0.11";
        let outside = [rec("A", "192.0.2.77"), rec("TXT", "\"x\"")];
        assert_eq!(
            foreign_address_records(&outside, NameRow::None, v4, None),
            ["A 192.0.2.77"]
        );
        let same = [rec("A", v4)];
        assert_eq!(
            foreign_address_records(&same, NameRow::None, v4, None),
            ["A 10.77.0.11"]
        );
        let cname = [rec("CNAME", "elsewhere.test.")];
        assert_eq!(
            foreign_address_records(&cname, NameRow::None, v4, None),
            ["CNAME elsewhere.test."]
        );
        // Other types do not decide where traffic goes.
        assert!(
            foreign_address_records(&[rec("MX", "10 mx.test.")], NameRow::None, v4, None)
                .is_empty()
        );
        assert!(foreign_address_records(&[], NameRow::None, v4, None).is_empty());
    }

    #[test]
    fn records_of_own_rows_are_codebs_unless_an_unfinished_setup_left_others() {
        let v4 = "10.77.0.11";
        let moved = [rec("A", "192.0.2.77")];
        assert!(foreign_address_records(&moved, NameRow::OwnSet, v4, None).is_empty());
        assert_eq!(
            foreign_address_records(&moved, NameRow::OwnUnfinished, v4, None),
            ["A 192.0.2.77"]
        );
        let ours = [rec("A", v4), rec("AAAA", "fd00::1")];
        assert!(
            foreign_address_records(&ours, NameRow::OwnUnfinished, v4, Some("fd00::1")).is_empty()
        );
        assert_eq!(
            foreign_address_records(&ours, NameRow::OwnUnfinished, v4, None),
            ["A 10.77.0.11", "AAAA fd00::1"]
        );
        let mut off = rec("A", v4);
        off.disabled = true;
        assert_eq!(
            foreign_address_records(&[off], NameRow::OwnUnfinished, v4, None),
            ["A 10.77.0.11 (disabled)"]
        );
    }

    #[test]
    fn is_at_or_under_is_at_label_boundaries() {
        assert!(is_at_or_under("a.b.test", "b.test"));
        assert!(is_at_or_under("B.test.", "b.test"));
        assert!(!is_at_or_under("ab.test", "b.test"));
        assert!(!is_at_or_under("b.test", ""));
    }
}

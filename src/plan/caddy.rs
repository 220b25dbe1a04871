//! Caddy's one static config (DESIGN §2): a catch-all site whose
//! `reverse_proxy` finds its upstreams in PowerDNS SRV records
//! `_http._tcp.{host}.{route_zone}`, so a route switch is a DNS change and
//! Caddy is never reloaded for it. This file renders that config and the
//! command that validates it; `ops::caddy` installs it.

use std::time::Duration;

use crate::model::{describe_input, validate_hostname, Invalid};
use crate::plan::cmd::RemoteCmd;
use crate::plan::health::validate_probe_url;

/// How often Caddy re-resolves a route's SRV rrset: a switch is visible
/// through Caddy within about this long.
pub const SRV_REFRESH: &str = "250ms";
/// Caddy's SRV `grace_period`, in seconds. When a lookup fails, Caddy keeps
/// serving the last answer (stale routes while PowerDNS is down) and looks
/// up again only this much later; each failed retry extends the stale
/// answer by the same amount. So it is not how long stale answers last but
/// how long routes stay frozen once PowerDNS answers again: with `1h` a
/// PowerDNS restart froze every route Caddy had looked up meanwhile for an
/// hour, and promotes failed their verification (found on the testbed).
/// It must stay well under `ops::lifecycle::SWITCH_VERIFY_DEADLINE`, so a
/// switch right after PowerDNS comes back still verifies. Shorter is not
/// free: a lookup holds Caddy's SRV cache lock, and a hung (not stopped)
/// PowerDNS is retried that often.
pub const SRV_GRACE_PERIOD_SECS: u64 = 10;
/// How long one request may keep trying upstreams before it fails.
pub const LB_TRY_DURATION: &str = "3s";
/// How long a failed upstream is skipped. Without it Caddy keeps choosing
/// the failed priority-0 slot under `lb_policy first` and the priority-10
/// fallback is never used (found on the testbed).
pub const FAIL_DURATION: &str = "2s";
/// Response header naming the upstream port, so a switch can be verified
/// through Caddy.
pub const UPSTREAM_HEADER: &str = "X-CodeB-Upstream";
/// Time limit of `caddy validate` (it loads and provisions the config).
pub const CADDY_VALIDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the static config depends on; from validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaddySiteConfig {
    /// Admin API address, on the app server's loopback (`127.0.0.1:2019`).
    pub admin_addr: String,
    /// Zone holding the route SRV rrsets (`route.codeb.test`).
    pub route_zone: String,
    /// DNS server answering the route zone (`127.0.0.1:53`), used for the
    /// SRV lookups and for dialing the SRV targets.
    pub resolver: String,
    /// TLS policy of routed hostnames.
    pub tls: CaddyTls,
}

/// TLS policy of the catch-all site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaddyTls {
    /// Plain HTTP on :80, `auto_https off` (the testbed).
    Off,
    /// HTTPS on :443 with on-demand certificates; Caddy asks `ask_url`
    /// (`?domain=HOST`, 200 = allowed) before obtaining one, and codeb
    /// answers from its route table. Plain HTTP on :80 redirects to HTTPS.
    OnDemand {
        /// The `ask` endpoint (http:// or https:// URL).
        ask_url: String,
    },
}

/// `host:port` with a host of letters, digits, '.', '-' (or `[v6]`).
fn validate_host_port(what: &str, s: &str) -> Result<(), Invalid> {
    let ok = s.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "{what} {} is invalid: write HOST:PORT, e.g. 127.0.0.1:53",
            describe_input(s)
        )))
    }
}

impl CaddySiteConfig {
    /// Checks every value before it is written into a Caddyfile, so no
    /// value can add a directive (no spaces, braces or newlines).
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_host_port("Caddy admin address", &self.admin_addr)?;
        validate_host_port("resolver address", &self.resolver)?;
        validate_hostname(&self.route_zone)
            .map_err(|e| Invalid(format!("route zone is invalid: {e}")))?;
        if let CaddyTls::OnDemand { ask_url } = &self.tls {
            validate_probe_url(ask_url)
                .map_err(|e| Invalid(format!("on-demand TLS ask URL: {e}")))?;
            if ask_url.contains(['{', '}', '"', '#']) {
                return Err(Invalid(
                    "on-demand TLS ask URL must not contain '{', '}', '\"' or '#'".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Renders the static catch-all Caddyfile (tabs, as `caddy fmt` writes it,
/// so `caddy validate` prints no formatting warning). `c` must have passed
/// `CaddySiteConfig::validate`.
///
/// With `CaddyTls::Off` it is equivalent to the config `tools/testbed up`
/// writes (checked against the running testbed in `tests/it/caddy.rs`).
pub fn render_caddyfile(c: &CaddySiteConfig) -> String {
    debug_assert!(c.validate().is_ok(), "{:?}", c.validate());
    let zone = c.route_zone.trim_end_matches('.');
    let resolver = &c.resolver;
    let mut out = String::new();
    out.push_str("# Written by codeb: the static catch-all site (DESIGN §2).\n");
    out.push_str(&format!(
        "# Routes live in PowerDNS as SRV rrsets _http._tcp.<host>.{zone};\n"
    ));
    out.push_str("# switching a route never reloads Caddy.\n");
    out.push_str("{\n");
    out.push_str(&format!("\tadmin {}\n", c.admin_addr));
    match &c.tls {
        CaddyTls::Off => out.push_str("\tauto_https off\n"),
        CaddyTls::OnDemand { ask_url } => {
            out.push_str("\ton_demand_tls {\n");
            out.push_str(&format!("\t\task {ask_url}\n"));
            out.push_str("\t}\n");
        }
    }
    out.push_str("}\n\n");
    let proxy = format!(
        "\treverse_proxy {{
\t\tdynamic srv {{
\t\t\tname _http._tcp.{{http.request.host}}.{zone}
\t\t\trefresh {SRV_REFRESH}
\t\t\tgrace_period {SRV_GRACE_PERIOD_SECS}s
\t\t\tresolvers {resolver}
\t\t}}
\t\tlb_policy first
\t\tlb_try_duration {LB_TRY_DURATION}
\t\tfail_duration {FAIL_DURATION}
\t\theader_down {UPSTREAM_HEADER} {{http.reverse_proxy.upstream.port}}
\t\ttransport http {{
\t\t\tresolvers {resolver}
\t\t}}
\t}}
"
    );
    match &c.tls {
        CaddyTls::Off => {
            out.push_str(":80 {\n");
            out.push_str(&proxy);
            out.push_str("}\n");
        }
        CaddyTls::OnDemand { .. } => {
            out.push_str("https:// {\n");
            out.push_str("\ttls {\n\t\ton_demand\n\t}\n");
            out.push_str(&proxy);
            out.push_str("}\n\n");
            out.push_str("http:// {\n");
            out.push_str("\tredir https://{host}{uri} permanent\n");
            out.push_str("}\n");
        }
    }
    out
}

/// `caddy validate --config PATH --adapter caddyfile`: exits 0 and prints
/// `Valid configuration` on stdout, or exits 1 with JSON log lines on
/// stderr whose `"level":"error"` lines say what is wrong (read them with
/// `validation_errors`). `path` must have passed
/// `files::validate_remote_path`.
pub fn validate_cmd(path: &str) -> RemoteCmd {
    RemoteCmd::new("caddy")
        .args(["validate", "--config"])
        .arg(path)
        .args(["--adapter", "caddyfile"])
        .timeout(CADDY_VALIDATE_TIMEOUT)
}

/// Most error lines `validation_errors` keeps.
pub const VALIDATION_ERROR_MAX_LINES: usize = 5;
/// Longest error line `validation_errors` keeps, in characters.
pub const VALIDATION_ERROR_MAX_CHARS: usize = 400;

/// The first error lines of `caddy validate`'s stderr: the `msg` of JSON
/// log lines at level `error`/`fatal`/`panic`, and plain lines that are not
/// JSON (`Error: ...`). At most `VALIDATION_ERROR_MAX_LINES` lines of at
/// most `VALIDATION_ERROR_MAX_CHARS` characters each.
pub fn validation_errors(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v.is_object() => {
                let level = v["level"].as_str().unwrap_or("");
                matches!(level, "error" | "fatal" | "panic")
                    .then(|| v["msg"].as_str().unwrap_or(l).to_string())
            }
            _ => Some(l.to_string()),
        })
        .take(VALIDATION_ERROR_MAX_LINES)
        .map(|l| {
            if l.chars().count() > VALIDATION_ERROR_MAX_CHARS {
                let cut: String = l.chars().take(VALIDATION_ERROR_MAX_CHARS).collect();
                format!("{cut}…")
            } else {
                l
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testbed_site() -> CaddySiteConfig {
        CaddySiteConfig {
            admin_addr: "127.0.0.1:2019".into(),
            route_zone: "route.codeb.test".into(),
            resolver: "127.0.0.1:53".into(),
            tls: CaddyTls::Off,
        }
    }

    #[test]
    fn golden_caddyfile_plain_http() {
        assert_eq!(
            render_caddyfile(&testbed_site()),
            "# Written by codeb: the static catch-all site (DESIGN §2).
# Routes live in PowerDNS as SRV rrsets _http._tcp.<host>.route.codeb.test;
# switching a route never reloads Caddy.
{
\tadmin 127.0.0.1:2019
\tauto_https off
}

:80 {
\treverse_proxy {
\t\tdynamic srv {
\t\t\tname _http._tcp.{http.request.host}.route.codeb.test
\t\t\trefresh 250ms
\t\t\tgrace_period 10s
\t\t\tresolvers 127.0.0.1:53
\t\t}
\t\tlb_policy first
\t\tlb_try_duration 3s
\t\tfail_duration 2s
\t\theader_down X-CodeB-Upstream {http.reverse_proxy.upstream.port}
\t\ttransport http {
\t\t\tresolvers 127.0.0.1:53
\t\t}
\t}
}
"
        );
    }

    #[test]
    fn golden_caddyfile_on_demand_tls() {
        let mut c = testbed_site();
        c.route_zone = "route.example.com.".into();
        c.tls = CaddyTls::OnDemand {
            ask_url: "http://127.0.0.1:9102/caddy/ask".into(),
        };
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            render_caddyfile(&c),
            "# Written by codeb: the static catch-all site (DESIGN §2).
# Routes live in PowerDNS as SRV rrsets _http._tcp.<host>.route.example.com;
# switching a route never reloads Caddy.
{
\tadmin 127.0.0.1:2019
\ton_demand_tls {
\t\task http://127.0.0.1:9102/caddy/ask
\t}
}

https:// {
\ttls {
\t\ton_demand
\t}
\treverse_proxy {
\t\tdynamic srv {
\t\t\tname _http._tcp.{http.request.host}.route.example.com
\t\t\trefresh 250ms
\t\t\tgrace_period 10s
\t\t\tresolvers 127.0.0.1:53
\t\t}
\t\tlb_policy first
\t\tlb_try_duration 3s
\t\tfail_duration 2s
\t\theader_down X-CodeB-Upstream {http.reverse_proxy.upstream.port}
\t\ttransport http {
\t\t\tresolvers 127.0.0.1:53
\t\t}
\t}
}

http:// {
\tredir https://{host}{uri} permanent
}
"
        );
    }

    #[test]
    fn refuses_values_that_could_inject_directives() {
        let cases: Vec<fn(&mut CaddySiteConfig)> = vec![
            |c| c.admin_addr = "127.0.0.1:2019\n}\n:81 {".into(),
            |c| c.admin_addr = "127.0.0.1".into(),
            |c| c.resolver = "127.0.0.1:53 8.8.8.8:53".into(),
            |c| c.route_zone = "route.codeb.test }".into(),
            |c| c.route_zone = "".into(),
            |c| {
                c.tls = CaddyTls::OnDemand {
                    ask_url: "http://x/{path}".into(),
                }
            },
            |c| {
                c.tls = CaddyTls::OnDemand {
                    ask_url: "file:///etc/passwd".into(),
                }
            },
        ];
        for f in cases {
            let mut c = testbed_site();
            f(&mut c);
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert_eq!(testbed_site().validate(), Ok(()));
    }

    #[test]
    fn golden_validate_cmd() {
        let c = validate_cmd("/etc/caddy/Caddyfile.codeb-new");
        assert_eq!(
            c.argv(),
            vec![
                "caddy",
                "validate",
                "--config",
                "/etc/caddy/Caddyfile.codeb-new",
                "--adapter",
                "caddyfile"
            ]
        );
        assert_eq!(c.timeout, Some(CADDY_VALIDATE_TIMEOUT));
    }

    #[test]
    fn reads_validator_errors() {
        // Real stderr of caddy 2.11.7 on the testbed.
        let stderr = r#"{"level":"info","ts":1795309613.69,"msg":"using config from file","file":"/x/Caddyfile"}
{"level":"warn","ts":1795309619.43,"msg":"Caddyfile input is not formatted; run 'caddy fmt --overwrite' to fix inconsistencies","adapter":"caddyfile","file":"F","line":2}
{"level":"error","ts":1795309613.69,"msg":"adapting config using caddyfile: parsing caddyfile tokens for 'reverse_proxy': getting module named 'http.reverse_proxy.selection_policies.firstt': module not registered: http.reverse_proxy.selection_policies.firstt, at /x/Caddyfile:16"}
"#;
        assert_eq!(
            validation_errors(stderr),
            vec!["adapting config using caddyfile: parsing caddyfile tokens for 'reverse_proxy': getting module named 'http.reverse_proxy.selection_policies.firstt': module not registered: http.reverse_proxy.selection_policies.firstt, at /x/Caddyfile:16"]
        );
        assert_eq!(
            validation_errors("Error: something plain\n\n"),
            vec!["Error: something plain"]
        );
        let many = "x\n".repeat(50) + &"y".repeat(1000);
        let v = validation_errors(&many);
        assert_eq!(v.len(), VALIDATION_ERROR_MAX_LINES);
        let long = validation_errors(&"y".repeat(1000));
        assert_eq!(long[0].chars().count(), VALIDATION_ERROR_MAX_CHARS + 1);
    }
}

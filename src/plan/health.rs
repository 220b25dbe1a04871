//! Health probes per server role (DESIGN §1): which command checks which
//! service, and how its output is read. Pure: the executor runs the
//! commands, `interpret` reads the results.

use std::time::Duration;

use crate::model::ServerRole;
use crate::plan::cmd::RemoteCmd;

/// Time limit of one probe command on the server.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(4);
/// curl's own limit inside a probe, below `HEALTH_PROBE_TIMEOUT`.
pub const HEALTH_CURL_MAX_TIME_SECS: u32 = 3;
/// The backup disk is unhealthy below this much free space.
pub const BACKUP_MIN_FREE_BYTES: u64 = 1 << 30;
/// Directory whose file system holds codeb's files on every server.
pub const CODEB_ROOT: &str = "/opt/codeb";

/// How a probe's output is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Exit status 0; the first stdout line is the detail.
    ExitZero,
    /// Exit 0 and stdout (trimmed) equal to this.
    Stdout(&'static str),
    /// Exit 0 and the first stdout line starting with one of these.
    StdoutPrefix(&'static [&'static str]),
    /// curl printed one of these HTTP status codes.
    HttpStatus(&'static [u16]),
    /// `df -P -B1` output with at least `BACKUP_MIN_FREE_BYTES` available.
    FreeSpace,
}

/// One service check on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Service name shown to the caller.
    pub service: &'static str,
    /// Command to run on the server.
    pub cmd: RemoteCmd,
    /// How to judge the result.
    pub expect: Expect,
}

/// Where the probes look; taken from config, validated there.
#[derive(Debug, Clone)]
pub struct ProbeTargets {
    /// Caddy admin address (`127.0.0.1:2019`).
    pub caddy_admin: String,
    /// PowerDNS API base URL (`http://127.0.0.1:8081`).
    pub pdns_api_url: String,
    /// PostgreSQL host and port as reachable from the storage server.
    pub postgres_host: String,
    /// PostgreSQL port.
    pub postgres_port: u16,
    /// Registry `host:port`.
    pub registry: String,
    /// Streaming health URL.
    pub streaming_health_url: String,
}

/// Checks that a URL is a plain http(s) URL that cannot be read as an option.
pub fn validate_probe_url(url: &str) -> Result<(), String> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() < 512
        && url.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!("{url:?} is not an http:// or https:// URL"))
    }
}

fn curl_status(url: String) -> RemoteCmd {
    RemoteCmd::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time"])
        .arg(HEALTH_CURL_MAX_TIME_SECS.to_string())
        .arg("--")
        .arg(url)
        .timeout(HEALTH_PROBE_TIMEOUT)
}

/// The command that proves a server answers at all.
pub fn reachability_probe() -> RemoteCmd {
    RemoteCmd::new("true").timeout(HEALTH_PROBE_TIMEOUT)
}

/// The probes for one role.
pub fn probes_for_role(role: ServerRole, t: &ProbeTargets) -> Vec<Probe> {
    match role {
        ServerRole::App => vec![
            Probe {
                service: "podman",
                cmd: RemoteCmd::new("podman")
                    .args(["version", "--format", "{{.Client.Version}}"])
                    .timeout(HEALTH_PROBE_TIMEOUT),
                expect: Expect::ExitZero,
            },
            Probe {
                service: "caddy_admin",
                cmd: curl_status(format!("http://{}/config/", t.caddy_admin)),
                expect: Expect::HttpStatus(&[200]),
            },
            Probe {
                // Unauthenticated on purpose: the key must not appear in a
                // process list. 401 proves the API is up and guarded.
                service: "pdns_api",
                cmd: curl_status(format!(
                    "{}/api/v1/servers",
                    t.pdns_api_url.trim_end_matches('/')
                )),
                expect: Expect::HttpStatus(&[200, 401]),
            },
        ],
        ServerRole::Storage => vec![
            Probe {
                service: "postgres",
                cmd: RemoteCmd::new("pg_isready")
                    .args(["-q", "-t", "3", "-h"])
                    .arg(t.postgres_host.clone())
                    .arg("-p")
                    .arg(t.postgres_port.to_string())
                    .timeout(HEALTH_PROBE_TIMEOUT),
                expect: Expect::ExitZero,
            },
            Probe {
                service: "redis",
                cmd: RemoteCmd::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
                    .timeout(HEALTH_PROBE_TIMEOUT),
                // A Redis with an admin password answers NOAUTH: up and guarded.
                expect: Expect::StdoutPrefix(&["PONG", "NOAUTH"]),
            },
            Probe {
                service: "registry",
                cmd: curl_status(format!("http://{}/v2/", t.registry)),
                expect: Expect::HttpStatus(&[200]),
            },
        ],
        ServerRole::Streaming => vec![Probe {
            service: "streaming_health",
            cmd: curl_status(t.streaming_health_url.clone()),
            expect: Expect::HttpStatus(&[200]),
        }],
        ServerRole::Backup => vec![Probe {
            service: "backup_disk",
            cmd: RemoteCmd::new("df")
                .args(["-P", "-B1", "--", CODEB_ROOT])
                .timeout(HEALTH_PROBE_TIMEOUT),
            expect: Expect::FreeSpace,
        }],
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// True when the service is healthy.
    pub healthy: bool,
    /// Short human detail (version, status code, free space, error).
    pub detail: String,
}

/// Judges a finished probe. `exit` is the remote exit status.
pub fn interpret(expect: &Expect, exit: Option<i32>, stdout: &str, stderr: &str) -> Verdict {
    let first_line = |s: &str| {
        s.lines()
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .take(200)
            .collect::<String>()
    };
    let failed = |what: String| Verdict {
        healthy: false,
        detail: what,
    };
    match expect {
        Expect::ExitZero => {
            if exit == Some(0) {
                Verdict {
                    healthy: true,
                    detail: non_empty(first_line(stdout), "ok"),
                }
            } else {
                failed(format!(
                    "exit status {}: {}",
                    exit.map_or("none".into(), |c| c.to_string()),
                    non_empty(first_line(stderr), "no output")
                ))
            }
        }
        Expect::StdoutPrefix(wants) => {
            let got = first_line(stdout);
            if exit == Some(0) && wants.iter().any(|w| got.starts_with(w)) {
                Verdict {
                    healthy: true,
                    detail: got,
                }
            } else {
                failed(format!(
                    "expected {}, got {}",
                    wants.join(" or "),
                    non_empty(
                        if got.is_empty() {
                            first_line(stderr)
                        } else {
                            got
                        },
                        "nothing"
                    )
                ))
            }
        }
        Expect::Stdout(want) => {
            let got = first_line(stdout);
            if exit == Some(0) && got == *want {
                Verdict {
                    healthy: true,
                    detail: got,
                }
            } else {
                failed(format!(
                    "expected {want}, got {}",
                    non_empty(
                        if got.is_empty() {
                            first_line(stderr)
                        } else {
                            got
                        },
                        "nothing"
                    )
                ))
            }
        }
        Expect::HttpStatus(ok) => {
            let code: Option<u16> = stdout.trim().parse().ok();
            match code {
                Some(c) if ok.contains(&c) => Verdict {
                    healthy: true,
                    detail: format!("HTTP {c}"),
                },
                Some(0) | None => failed(format!(
                    "no HTTP answer: {}",
                    non_empty(first_line(stderr), "connection failed")
                )),
                Some(c) => failed(format!("HTTP {c}")),
            }
        }
        Expect::FreeSpace => match parse_df_available(stdout) {
            Some((avail, size)) if exit == Some(0) => {
                let detail = format!("{} free of {}", human_bytes(avail), human_bytes(size));
                Verdict {
                    healthy: avail >= BACKUP_MIN_FREE_BYTES,
                    detail,
                }
            }
            _ => failed(format!(
                "cannot read free space: {}",
                non_empty(first_line(stderr), "no output")
            )),
        },
    }
}

fn non_empty(s: String, fallback: &str) -> String {
    if s.is_empty() {
        fallback.to_string()
    } else {
        s
    }
}

/// Parses `df -P -B1` output: (available bytes, size bytes) of the first file system.
pub fn parse_df_available(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout.lines().nth(1)?;
    let cols: Vec<&str> = line.split_whitespace().collect();
    if cols.len() < 6 {
        return None;
    }
    let size = cols[1].parse().ok()?;
    let avail = cols[3].parse().ok()?;
    Some((avail, size))
}

/// `1.5 GiB`-style rendering.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> ProbeTargets {
        ProbeTargets {
            caddy_admin: "127.0.0.1:2019".into(),
            pdns_api_url: "http://127.0.0.1:8081".into(),
            postgres_host: "10.77.0.12".into(),
            postgres_port: 5432,
            registry: "10.77.0.12:5000".into(),
            streaming_health_url: "http://127.0.0.1:8000/health".into(),
        }
    }

    fn argv(role: ServerRole) -> Vec<Vec<String>> {
        probes_for_role(role, &targets())
            .into_iter()
            .map(|p| p.cmd.argv())
            .collect()
    }

    #[test]
    fn golden_app_probes() {
        assert_eq!(
            argv(ServerRole::App),
            vec![
                vec!["podman", "version", "--format", "{{.Client.Version}}"],
                vec![
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "3",
                    "--",
                    "http://127.0.0.1:2019/config/"
                ],
                vec![
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "3",
                    "--",
                    "http://127.0.0.1:8081/api/v1/servers"
                ],
            ]
        );
    }

    #[test]
    fn golden_storage_probes() {
        assert_eq!(
            argv(ServerRole::Storage),
            vec![
                vec![
                    "pg_isready",
                    "-q",
                    "-t",
                    "3",
                    "-h",
                    "10.77.0.12",
                    "-p",
                    "5432"
                ],
                vec!["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"],
                vec![
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "3",
                    "--",
                    "http://10.77.0.12:5000/v2/"
                ],
            ]
        );
    }

    #[test]
    fn golden_streaming_and_backup_probes() {
        assert_eq!(
            argv(ServerRole::Streaming),
            vec![vec![
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "3",
                "--",
                "http://127.0.0.1:8000/health"
            ]]
        );
        assert_eq!(
            argv(ServerRole::Backup),
            vec![vec!["df", "-P", "-B1", "--", "/opt/codeb"]]
        );
        assert!(probes_for_role(ServerRole::Backup, &targets())
            .iter()
            .all(|p| p.cmd.timeout == Some(HEALTH_PROBE_TIMEOUT)));
    }

    #[test]
    fn interpret_http() {
        let e = Expect::HttpStatus(&[200, 401]);
        assert!(interpret(&e, Some(0), "401", "").healthy);
        let v = interpret(&e, Some(0), "500", "");
        assert!(!v.healthy);
        assert_eq!(v.detail, "HTTP 500");
        let v = interpret(&e, Some(7), "000", "curl: (7) Failed to connect");
        assert!(!v.healthy);
        assert!(v.detail.contains("Failed to connect"), "{}", v.detail);
    }

    #[test]
    fn interpret_stdout_and_exit() {
        assert!(interpret(&Expect::Stdout("PONG"), Some(0), "PONG\n", "").healthy);
        assert!(!interpret(&Expect::Stdout("PONG"), Some(1), "", "Could not connect").healthy);
        let redis = Expect::StdoutPrefix(&["PONG", "NOAUTH"]);
        assert!(interpret(&redis, Some(0), "NOAUTH Authentication required.\n", "").healthy);
        assert!(!interpret(&redis, Some(0), "ERR unknown\n", "").healthy);
        assert!(!interpret(&redis, Some(1), "", "Could not connect").healthy);
        let v = interpret(&Expect::ExitZero, Some(0), "4.3.1\n", "");
        assert_eq!(
            v,
            Verdict {
                healthy: true,
                detail: "4.3.1".into()
            }
        );
        let v = interpret(&Expect::ExitZero, Some(2), "", "no response\n");
        assert_eq!(v.detail, "exit status 2: no response");
    }

    #[test]
    fn interpret_df() {
        let out = "Filesystem 1-B-blocks Used Available Capacity Mounted on\n/dev/vda 270000000000 11000000000 80000000000 13% /\n";
        let v = interpret(&Expect::FreeSpace, Some(0), out, "");
        assert!(v.healthy);
        assert!(v.detail.contains("GiB free"), "{}", v.detail);
        let tiny = "Filesystem 1-B-blocks Used Available Capacity Mounted on\n/dev/x 2000 1000 1000 50% /\n";
        assert!(!interpret(&Expect::FreeSpace, Some(0), tiny, "").healthy);
        assert!(!interpret(&Expect::FreeSpace, Some(0), "garbage", "").healthy);
    }

    #[test]
    fn probe_urls() {
        assert!(validate_probe_url("http://127.0.0.1:8000/health").is_ok());
        assert!(validate_probe_url("-o/etc/passwd").is_err());
        assert!(validate_probe_url("http://a b").is_err());
    }
}

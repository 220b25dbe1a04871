//! EFFECTS: a client of the PowerDNS HTTP API (DESIGN §2, §4), used for the
//! route table (SRV rrsets) and public DNS records.
//!
//! The API listens on the app server's loopback; `ops::pdns` reaches it
//! through an SSH-forwarded local port and hands this client the local URL.
//! The API key travels only in the `X-API-Key` header: it is kept out of
//! `Debug`, and every error text built from an answer is scrubbed of it
//! (PowerDNS does not echo it, but a proxy in between might).
//!
//! Written against PowerDNS 4.7 (Debian bookworm), which
//! - honours `rrset_name` (with or without trailing dot) and, together with
//!   it, `rrset_type` on `GET .../zones/{zone}`; `rrset_type` alone is
//!   ignored. The answer is filtered here again, so a server that ignores
//!   the filters (older versions) still gives the right result;
//! - answers errors of the API proper as JSON `{"error": "..."}` (422 for a
//!   refused change, e.g. an SRV target without trailing dot or a name out
//!   of zone) but 401, 404 and 400 as `text/plain` bodies such as
//!   `Not Found`, without saying whether the zone or the server id is wrong;
//! - answers a DELETE of a missing rrset with 204, so deletes are idempotent;
//! - closes the connection after every answer (`Connection: close`).

use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::plan::dns::{absolute_name, parse_srv_content, SrvTarget};
use crate::plan::names::NameRecord;

/// Header PowerDNS reads the API key from.
const API_KEY_HEADER: &str = "X-API-Key";
/// Longest part of an error body kept in an error message, in characters.
const ERROR_BODY_CHARS: usize = 400;
/// What replaces the API key wherever it would appear in a message.
const REDACTED: &str = "[redacted]";

/// Why a PowerDNS API call failed. Every message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum PdnsError {
    /// No answer: connection refused or reset, forward down, timeout.
    #[error("PowerDNS API is unreachable: {0}")]
    Unreachable(String),
    /// PowerDNS answered with an error status.
    #[error("PowerDNS API answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// What PowerDNS said and what to do about it.
        message: String,
    },
    /// Anything else: an answer that could not be read, a bad URL or key
    /// in the configuration.
    #[error("PowerDNS API: {0}")]
    Unexpected(String),
}

/// A PowerDNS HTTP API client for one server id. Cheap to clone.
#[derive(Clone)]
pub struct PdnsClient {
    http: reqwest::Client,
    base_url: String,
    server_id: String,
    api_key: String,
    /// How messages name this API (defaults to the base URL).
    label: String,
}

impl std::fmt::Debug for PdnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdnsClient")
            .field("base_url", &self.base_url)
            .field("server_id", &self.server_id)
            .field("label", &self.label)
            .field("api_key", &REDACTED)
            .finish()
    }
}

/// The parts of a zone document this client reads.
#[derive(Debug, Deserialize)]
struct ZoneDoc {
    #[serde(default)]
    rrsets: Vec<RrsetDoc>,
}

#[derive(Debug, Deserialize)]
struct RrsetDoc {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    records: Vec<RecordDoc>,
}

#[derive(Debug, Deserialize)]
struct RecordDoc {
    content: String,
    #[serde(default)]
    disabled: bool,
}

/// One record of a search-data answer.
#[derive(Debug, Deserialize)]
struct SearchDoc {
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    rtype: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    object_type: String,
    #[serde(default)]
    disabled: bool,
}

/// One enabled DNS record as PowerDNS serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Absolute, lowercased owner name (`shop.codeb.test.`).
    pub name: String,
    /// Record type (`A`, `SRV`, ...).
    pub rtype: String,
    /// Record content as PowerDNS writes it.
    pub content: String,
    /// Absolute zone name holding it.
    pub zone: String,
}

impl PdnsClient {
    /// A client of the API at `base_url` (`http://127.0.0.1:8081`, no
    /// `/api/v1`), server id `server_id` (normally `localhost`). Every
    /// request, connect included, is bounded by `timeout`. Connects nothing.
    pub fn new(base_url: &str, server_id: &str, api_key: String, timeout: Duration) -> Self {
        let base_url = base_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // The API is on a (forwarded) loopback port: never through a proxy
            // from the environment, and never follow a redirect, which would
            // carry the key header to wherever it points.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "PowerDNS client options refused; using defaults");
                reqwest::Client::new()
            });
        Self {
            http,
            label: base_url.clone(),
            base_url,
            server_id: server_id.to_string(),
            api_key,
        }
    }

    /// Names the API differently in messages, e.g. "http://127.0.0.1:8081 on
    /// app (forwarded to 127.0.0.1:40123)".
    pub fn described_as(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// One atomic PATCH of rrsets in `zone` (zone given with or without
    /// trailing dot); `body` is `{"rrsets": [...]}` as built by
    /// `plan::dns::srv_patch_body`. PowerDNS applies all of it or nothing.
    pub async fn patch_rrsets(&self, zone: &str, body: &Value) -> Result<(), PdnsError> {
        let zone = absolute_name(zone);
        let url = self.url(&["zones", &zone])?;
        self.send(Method::PATCH, url, Some(body), &zone).await?;
        Ok(())
    }

    /// The SRV targets of one rrset name (enabled records only), `None` when
    /// no SRV rrset of that name exists.
    pub async fn srv_rrset(
        &self,
        zone: &str,
        name: &str,
    ) -> Result<Option<Vec<SrvTarget>>, PdnsError> {
        let zone = absolute_name(zone);
        let name = absolute_name(name);
        let mut url = self.url(&["zones", &zone])?;
        url.query_pairs_mut()
            .append_pair("rrset_name", &name)
            .append_pair("rrset_type", "SRV");
        let doc = self.zone_doc(url, &zone).await?;
        // Filter again: servers before 4.7 ignore the query parameters.
        let mut found = None;
        for rrset in doc.rrsets {
            if rrset.rtype == "SRV" && absolute_name(&rrset.name) == name {
                let targets = self.srv_targets(&rrset)?;
                found.get_or_insert_with(Vec::new).extend(targets);
            }
        }
        Ok(found)
    }

    /// The absolute names of the zone's rrsets, sorted and deduplicated.
    pub async fn rrset_names(&self, zone: &str) -> Result<Vec<String>, PdnsError> {
        let zone = absolute_name(zone);
        let url = self.url(&["zones", &zone])?;
        let doc = self.zone_doc(url, &zone).await?;
        let mut names: Vec<String> = doc.rrsets.iter().map(|r| absolute_name(&r.name)).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// All SRV rrsets in the zone, sorted by name: (absolute name, enabled
    /// targets) — for drift reports and observation.
    pub async fn srv_rrsets(&self, zone: &str) -> Result<Vec<(String, Vec<SrvTarget>)>, PdnsError> {
        let zone = absolute_name(zone);
        let url = self.url(&["zones", &zone])?;
        let doc = self.zone_doc(url, &zone).await?;
        let mut out = Vec::new();
        for rrset in doc.rrsets.iter().filter(|r| r.rtype == "SRV") {
            out.push((absolute_name(&rrset.name), self.srv_targets(rrset)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every record of every zone on the server in ONE request
    /// (`GET .../search-data?q=*&object_type=record&max=MAX`), enabled
    /// records only, names absolute and lowercased — what `drift_report`
    /// compares against. More than `max - 1` records is an error rather
    /// than a silently cut listing.
    pub async fn all_records(&self, max: usize) -> Result<Vec<DnsRecord>, PdnsError> {
        let mut url = self.url(&["search-data"])?;
        url.query_pairs_mut()
            .append_pair("q", "*")
            .append_pair("object_type", "record")
            .append_pair("max", &max.to_string());
        let resp = self.send(Method::GET, url, None, "").await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e, "reading the record listing"))?;
        let found: Vec<SearchDoc> = serde_json::from_slice(&bytes).map_err(|e| {
            PdnsError::Unexpected(format!(
                "the record search of {} is not a PowerDNS search result ({e}): check that pdns.api_url points at the PowerDNS webserver",
                self.label
            ))
        })?;
        if found.len() >= max {
            return Err(PdnsError::Unexpected(format!(
                "PowerDNS at {} holds {max} records or more, more than one listing reads",
                self.label
            )));
        }
        Ok(found
            .into_iter()
            .filter(|r| !r.disabled && r.object_type == "record")
            .map(|r| DnsRecord {
                name: absolute_name(&r.name),
                rtype: r.rtype,
                content: r.content,
                zone: absolute_name(&r.zone),
            })
            .collect())
    }

    /// The names of every zone on the server, absolute, sorted.
    pub async fn zones(&self) -> Result<Vec<String>, PdnsError> {
        #[derive(Deserialize)]
        struct ZoneItem {
            name: String,
        }
        let url = self.url(&["zones"])?;
        let resp = self.send(Method::GET, url, None, "").await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e, "reading the zone list"))?;
        let items: Vec<ZoneItem> = serde_json::from_slice(&bytes).map_err(|e| {
            PdnsError::Unexpected(format!(
                "the zone list from {} is not a PowerDNS answer ({e}): check pdns.api_url",
                self.label
            ))
        })?;
        let mut names: Vec<String> = items.into_iter().map(|z| absolute_name(&z.name)).collect();
        names.sort();
        Ok(names)
    }

    /// Creates a zone (`POST /zones`) from `body` as built by
    /// `plan::dns::zone_create_body`.
    pub async fn create_zone(&self, body: &Value) -> Result<(), PdnsError> {
        let url = self.url(&["zones"])?;
        self.send(Method::POST, url, Some(body), "").await?;
        Ok(())
    }

    /// Deletes the zone `zone` with every record in it.
    pub async fn delete_zone(&self, zone: &str) -> Result<(), PdnsError> {
        let zone = absolute_name(zone);
        let url = self.url(&["zones", &zone])?;
        self.send(Method::DELETE, url, None, &zone).await?;
        Ok(())
    }

    /// The enabled record contents of the rrset (`name`, `rtype`) in `zone`,
    /// sorted; `None` when there is no such rrset.
    pub async fn rrset_contents(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Option<Vec<String>>, PdnsError> {
        let zone = absolute_name(zone);
        let name = absolute_name(name);
        let mut url = self.url(&["zones", &zone])?;
        url.query_pairs_mut()
            .append_pair("rrset_name", &name)
            .append_pair("rrset_type", rtype);
        let doc = self.zone_doc(url, &zone).await?;
        let mut found: Option<Vec<String>> = None;
        for rrset in doc.rrsets {
            if rrset.rtype == rtype && absolute_name(&rrset.name) == name {
                let list = found.get_or_insert_with(Vec::new);
                list.extend(
                    rrset
                        .records
                        .into_iter()
                        .filter(|r| !r.disabled)
                        .map(|r| r.content),
                );
            }
        }
        if let Some(list) = found.as_mut() {
            list.sort();
        }
        Ok(found)
    }

    /// Every record at exactly `name` in `zone` (all types, disabled ones
    /// too), sorted by type and content: what is there before codeb
    /// changes a name.
    pub async fn records_at(&self, zone: &str, name: &str) -> Result<Vec<NameRecord>, PdnsError> {
        let zone = absolute_name(zone);
        let name = absolute_name(name);
        let mut url = self.url(&["zones", &zone])?;
        url.query_pairs_mut().append_pair("rrset_name", &name);
        let doc = self.zone_doc(url, &zone).await?;
        let mut out: Vec<NameRecord> = doc
            .rrsets
            .into_iter()
            .filter(|r| absolute_name(&r.name) == name)
            .flat_map(|r| {
                let rtype = r.rtype;
                r.records.into_iter().map(move |rec| NameRecord {
                    rtype: rtype.clone(),
                    content: rec.content,
                    disabled: rec.disabled,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.rtype, &a.content).cmp(&(&b.rtype, &b.content)));
        Ok(out)
    }

    /// Cheap authenticated check (GET /api/v1/servers/{id}): the API answers
    /// and accepts the key.
    pub async fn ping(&self) -> Result<(), PdnsError> {
        let url = self.url(&[])?;
        self.send(Method::GET, url, None, "").await?;
        Ok(())
    }

    /// `{base}/api/v1/servers/{server_id}/{rest...}`, each part escaped.
    fn url(&self, rest: &[&str]) -> Result<Url, PdnsError> {
        let bad = |why: String| {
            PdnsError::Unexpected(format!(
                "the API address {} is not a usable URL ({why}): check pdns.api_url",
                self.base_url
            ))
        };
        let mut url = Url::parse(&self.base_url).map_err(|e| bad(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| bad("it cannot have a path".into()))?
            .pop_if_empty()
            .extend(["api", "v1", "servers", &self.server_id])
            .extend(rest);
        Ok(url)
    }

    async fn zone_doc(&self, url: Url, zone: &str) -> Result<ZoneDoc, PdnsError> {
        let resp = self.send(Method::GET, url, None, zone).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e, "reading the zone"))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            PdnsError::Unexpected(format!(
                "the zone {zone} from {} is not a PowerDNS zone document ({e}): check that pdns.api_url points at the PowerDNS webserver",
                self.label
            ))
        })
    }

    /// The enabled targets of an rrset in a canonical order (priority, then
    /// port): PowerDNS returns records in no particular order.
    fn srv_targets(&self, rrset: &RrsetDoc) -> Result<Vec<SrvTarget>, PdnsError> {
        let mut targets = rrset
            .records
            .iter()
            .filter(|r| !r.disabled)
            .map(|r| {
                parse_srv_content(&r.content).ok_or_else(|| {
                    PdnsError::Unexpected(self.scrub(format!(
                        "SRV record {} has content {:?}, not \"priority weight port target\"",
                        rrset.name, r.content
                    )))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        targets.sort_by_key(|t| (t.priority, t.port));
        Ok(targets)
    }

    /// Sends one request; a non-2xx answer becomes `PdnsError::Api` with a
    /// message naming what to check. `zone` names the zone for 404s ("" when
    /// the request is about the server itself).
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        zone: &str,
    ) -> Result<reqwest::Response, PdnsError> {
        let key = HeaderValue::from_str(&self.api_key)
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })
            .map_err(|_| {
                PdnsError::Unexpected(
                    "the API key holds characters an HTTP header cannot carry (a line break?): check pdns.api_key_file or CODEB_PDNS_API_KEY".into(),
                )
            })?;
        let started = Instant::now();
        let path = url.path().to_string();
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(API_KEY_HEADER, key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.unreachable(&e, "sending the request"))?;
        let status = resp.status();
        tracing::debug!(%method, path, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "pdns api");
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(PdnsError::Api {
            status: status.as_u16(),
            message: self.api_message(status, &text, zone),
        })
    }

    fn api_message(&self, status: StatusCode, body: &str, zone: &str) -> String {
        let said = self.scrub(error_text(body));
        let label = &self.label;
        let id = &self.server_id;
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                "PowerDNS API at {label} refused the key: check pdns.api_key_file (or CODEB_PDNS_API_KEY) against api-key in the app server's pdns.conf"
            ),
            StatusCode::NOT_FOUND if zone.is_empty() => format!(
                "PowerDNS API at {label} has no server {id:?}: check pdns.server_id (normally \"localhost\")"
            ),
            StatusCode::NOT_FOUND => format!(
                "PowerDNS API at {label} has no zone {zone} on server {id:?}: check routing.route_zone (the zone is created when the app server is set up) and pdns.server_id"
            ),
            StatusCode::UNPROCESSABLE_ENTITY => format!(
                "PowerDNS refused the change: {said}"
            ),
            StatusCode::BAD_REQUEST => format!(
                "PowerDNS could not read the request: {said}"
            ),
            s if s.is_redirection() => format!(
                "{label} redirects API requests ({said}): check that pdns.api_url points at the PowerDNS webserver itself"
            ),
            s if s.is_server_error() => format!(
                "PowerDNS failed: {said}: see its log on the app server (journalctl -u pdns)"
            ),
            _ => said,
        }
    }

    fn unreachable(&self, e: &reqwest::Error, doing: &str) -> PdnsError {
        let what = if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            error_chain(e)
        };
        PdnsError::Unreachable(self.scrub(format!(
            "{doing} to {}: {what}: check that pdns runs on the app server and that pdns.api_url names its webserver",
            self.label
        )))
    }

    /// `s` with every occurrence of the API key replaced.
    fn scrub(&self, s: String) -> String {
        if self.api_key.is_empty() || !s.contains(&self.api_key) {
            s
        } else {
            s.replace(&self.api_key, REDACTED)
        }
    }
}

/// The readable part of an error body: the `error` field of PowerDNS's JSON,
/// else the text itself, on one line and shortened.
fn error_text(body: &str) -> String {
    let text = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(no detail)".into();
    }
    match one_line.char_indices().nth(ERROR_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode as AxStatus, Uri};
    use axum::response::{IntoResponse, Response};

    use super::*;
    use crate::plan::dns::{srv_patch_body, RrsetChange, PRIORITY_ACTIVE, PRIORITY_FALLBACK};

    const CANARY: &str = "canary-key-3f9c1a7e5b";

    /// What the fake API saw: (method, path and query, X-API-Key).
    type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

    /// A local HTTP server answering every request with `status` and `body`
    /// after `delay`; returns its base URL and what it saw.
    async fn fake_api(status: u16, body: &'static str, delay: Duration) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let seen2 = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method, uri: Uri, headers: HeaderMap| {
                let seen = seen2.clone();
                async move {
                    seen.lock().unwrap().push((
                        method.to_string(),
                        uri.to_string(),
                        headers
                            .get(API_KEY_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    ));
                    tokio::time::sleep(delay).await;
                    let ct = if body.starts_with('{') {
                        "application/json"
                    } else {
                        "text/plain"
                    };
                    let r: Response = (
                        AxStatus::from_u16(status).unwrap(),
                        [("content-type", ct), ("location", "http://127.0.0.1:9/")],
                        body,
                    )
                        .into_response();
                    r
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn client(base: &str) -> PdnsClient {
        PdnsClient::new(
            base,
            "localhost",
            CANARY.to_string(),
            Duration::from_secs(2),
        )
    }

    fn assert_no_key(e: &PdnsError) {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(CANARY), "key leaked: {shown}");
    }

    fn patch() -> Value {
        srv_patch_body(
            &[RrsetChange::Replace {
                name: "_http._tcp.a.codeb.test.route.codeb.test.".into(),
                targets: vec![SrvTarget {
                    priority: PRIORITY_ACTIVE,
                    port: 4100,
                }],
            }],
            "app.route.codeb.test",
        )
    }

    #[tokio::test]
    async fn refused_change_keeps_the_key_out_of_the_error() {
        // The fake echoes the key back, as a misbehaving proxy might.
        let (base, seen) = fake_api(
            422,
            r#"{"error": "RRset refused for key canary-key-3f9c1a7e5b"}"#,
            Duration::ZERO,
        )
        .await;
        let e = client(&base)
            .patch_rrsets("route.codeb.test", &patch())
            .await
            .unwrap_err();
        assert_no_key(&e);
        match &e {
            PdnsError::Api { status, message } => {
                assert_eq!(*status, 422);
                assert!(message.contains("refused the change"), "{message}");
                assert!(message.contains(REDACTED), "{message}");
            }
            other => panic!("want Api, got {other:?}"),
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (method, uri, key) = &seen[0];
        assert_eq!(method, "PATCH");
        assert_eq!(uri, "/api/v1/servers/localhost/zones/route.codeb.test.");
        assert_eq!(key.as_deref(), Some(CANARY), "key goes in X-API-Key");
    }

    #[tokio::test]
    async fn wrong_key_says_what_to_check() {
        let (base, _) = fake_api(401, "Unauthorized", Duration::ZERO).await;
        let e = client(&base).ping().await.unwrap_err();
        assert_no_key(&e);
        assert!(matches!(e, PdnsError::Api { status: 401, .. }), "{e:?}");
        assert!(e.to_string().contains("refused the key"), "{e}");
        assert!(e.to_string().contains("pdns.api_key_file"), "{e}");
    }

    #[tokio::test]
    async fn missing_zone_and_server_name_their_settings() {
        let (base, _) = fake_api(404, "Not Found", Duration::ZERO).await;
        let c = client(&base);
        let e = c
            .srv_rrset("nozone.test", "x.nozone.test")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no zone nozone.test."), "{e}");
        assert!(e.to_string().contains("routing.route_zone"), "{e}");
        let e = c.ping().await.unwrap_err();
        assert!(e.to_string().contains("pdns.server_id"), "{e}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (base, _) = fake_api(302, "", Duration::ZERO).await;
        let e = client(&base).ping().await.unwrap_err();
        assert!(matches!(e, PdnsError::Api { status: 302, .. }), "{e:?}");
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = client(&format!("http://{addr}")).ping().await.unwrap_err();
        assert_no_key(&e);
        assert!(matches!(e, PdnsError::Unreachable(_)), "{e:?}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[tokio::test]
    async fn slow_answer_is_unreachable_in_time() {
        let (base, _) = fake_api(200, "{}", Duration::from_secs(5)).await;
        let c = PdnsClient::new(
            &base,
            "localhost",
            CANARY.into(),
            Duration::from_millis(300),
        );
        let started = Instant::now();
        let e = c.ping().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(matches!(e, PdnsError::Unreachable(_)), "{e:?}");
        assert!(e.to_string().contains("no answer in time"), "{e}");
    }

    #[tokio::test]
    async fn key_that_cannot_be_a_header_is_refused_without_showing_it() {
        let (base, seen) = fake_api(200, "{}", Duration::ZERO).await;
        let c = PdnsClient::new(
            &base,
            "localhost",
            format!("{CANARY}\nx"),
            Duration::from_secs(2),
        );
        let e = c.ping().await.unwrap_err();
        assert_no_key(&e);
        assert!(matches!(e, PdnsError::Unexpected(_)), "{e:?}");
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn reads_srv_rrsets_and_filters_a_full_zone() {
        // A server that ignores rrset_name/rrset_type answers the whole zone.
        let zone = r#"{"name": "route.codeb.test.", "rrsets": [
            {"name": "app.route.codeb.test.", "type": "A", "ttl": 60,
             "records": [{"content": "127.0.0.1", "disabled": false}]},
            {"name": "_http._tcp.b.codeb.test.route.codeb.test.", "type": "SRV", "ttl": 1,
             "records": [{"content": "0 0 4102 app.route.codeb.test.", "disabled": false}]},
            {"name": "_http._tcp.a.codeb.test.route.codeb.test.", "type": "SRV", "ttl": 1,
             "records": [{"content": "10 0 4101 app.route.codeb.test.", "disabled": false},
                         {"content": "0 0 4100 app.route.codeb.test.", "disabled": false},
                         {"content": "20 0 4999 app.route.codeb.test.", "disabled": true}]}
        ]}"#;
        let (base, seen) = fake_api(200, zone, Duration::ZERO).await;
        let c = client(&base);
        let a = c
            .srv_rrset(
                "route.codeb.test.",
                "_http._tcp.A.codeb.test.route.codeb.test",
            )
            .await
            .unwrap();
        assert_eq!(
            a,
            Some(vec![
                SrvTarget {
                    priority: PRIORITY_ACTIVE,
                    port: 4100
                },
                SrvTarget {
                    priority: PRIORITY_FALLBACK,
                    port: 4101
                },
            ])
        );
        let none = c
            .srv_rrset(
                "route.codeb.test",
                "_http._tcp.z.codeb.test.route.codeb.test.",
            )
            .await
            .unwrap();
        assert_eq!(none, None);
        let all = c.srv_rrsets("route.codeb.test").await.unwrap();
        // Records come back in canonical (priority, port) order whatever
        // order PowerDNS lists them in.
        assert_eq!(Some(all[0].1.clone()), a);
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "_http._tcp.a.codeb.test.route.codeb.test.",
                "_http._tcp.b.codeb.test.route.codeb.test."
            ]
        );
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].1,
            "/api/v1/servers/localhost/zones/route.codeb.test.?rrset_name=_http._tcp.a.codeb.test.route.codeb.test.&rrset_type=SRV"
        );
    }

    #[tokio::test]
    async fn garbage_zone_is_unexpected() {
        let (base, _) = fake_api(200, "<html>hello</html>", Duration::ZERO).await;
        let e = client(&base)
            .srv_rrsets("route.codeb.test")
            .await
            .unwrap_err();
        assert!(matches!(e, PdnsError::Unexpected(_)), "{e:?}");
        assert!(e.to_string().contains("pdns.api_url"), "{e}");
    }

    #[test]
    fn debug_hides_the_key() {
        let c = client("http://127.0.0.1:8081/");
        let shown = format!("{c:?}");
        assert!(!shown.contains(CANARY), "{shown}");
        assert_eq!(c.base_url(), "http://127.0.0.1:8081");
    }

    #[test]
    fn urls_are_built_and_escaped() {
        let c = PdnsClient::new(
            "http://127.0.0.1:8081/",
            "local/../host",
            String::new(),
            Duration::from_secs(1),
        );
        assert_eq!(
            c.url(&["zones", "z."]).unwrap().as_str(),
            "http://127.0.0.1:8081/api/v1/servers/local%2F..%2Fhost/zones/z."
        );
        let bad = client("not a url").url(&[]).unwrap_err();
        assert!(bad.to_string().contains("pdns.api_url"), "{bad}");
    }

    #[test]
    fn error_text_prefers_the_json_error_and_shortens() {
        assert_eq!(
            error_text(r#"{"error": "Name is out of zone"}"#),
            "Name is out of zone"
        );
        assert_eq!(error_text("Not Found\n"), "Not Found");
        assert_eq!(error_text(""), "(no detail)");
        let long = "x".repeat(5000);
        assert_eq!(error_text(&long).chars().count(), ERROR_BODY_CHARS + 1);
    }
}

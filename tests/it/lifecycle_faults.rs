//! The blue-green lifecycle under faults (issue [2]), end to end through
//! MCP on the testbed: PowerDNS stopped during a promote, the app host cut
//! mid-deploy, codeb killed mid-deploy, a burst of concurrent deploys over
//! two codeb processes, a client that goes away before and after the
//! traffic switch, and progress notifications for every phase.
//!
//! Tests that cut links or stop services hold `FAULT_LOCK` for writing and
//! restore the fault from a drop guard, so a failed assertion never leaves
//! the testbed broken. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codeb::plan::podman;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, ProgressNotificationParam, ProgressToken,
    Request, ServerResult,
};
use rmcp::service::{PeerRequestOptions, RequestHandle, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};

use super::app_host::{app_remote, run, with_cleanup};
use super::common::{
    db, delete_project, error_text, structured, testbed, testbed_cmd, unique_project, HttpServer,
    FAULT_LOCK,
};
use super::lifecycle::{expect_served, image, through_caddy};

/// The health deadline of tests that need a long health gate (DESIGN default).
const LONG_HEALTH_DEADLINE_SECS: u64 = 60;
/// Longest wait for one progress notification the test expects.
const PROGRESS_WAIT: Duration = Duration::from_secs(30);
/// Upper bound on any single successful lifecycle call.
const CALL_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A client that records progress notifications with their arrival time.
#[derive(Clone, Default)]
struct Timed {
    seen: Arc<Mutex<Vec<(Instant, ProgressNotificationParam)>>>,
}

impl ClientHandler for Timed {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _c: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.seen.lock().unwrap().push((Instant::now(), params));
    }
}

type Client = RunningService<RoleClient, Timed>;

/// `codeb serve --http` with its own SSH control directory, so the SSH
/// masters it leaves behind when it is killed can be closed by the test
/// (they are detached processes that outlive codeb).
struct Codeb {
    server: Option<HttpServer>,
    runtime_dir: PathBuf,
}

impl Codeb {
    async fn start(env: &[(&str, &str)]) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let runtime_dir = std::env::temp_dir().join(format!("codeb-lf-{}", &id[..8]));
        std::fs::create_dir_all(&runtime_dir).unwrap();
        let dir = runtime_dir.to_str().unwrap().to_string();
        let mut all: Vec<(&str, &str)> = vec![("XDG_RUNTIME_DIR", &dir)];
        all.extend_from_slice(env);
        let server = HttpServer::start_with(&testbed().config, &all).await;
        Self {
            server: Some(server),
            runtime_dir,
        }
    }

    fn url(&self) -> &str {
        &self.server.as_ref().expect("running").url
    }

    async fn client(&self) -> Client {
        let transport = self.server.as_ref().expect("running").transport();
        Timed::default().serve(transport).await.expect("initialize")
    }

    /// SIGKILL, then close the SSH masters the dead process left behind.
    async fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill().await;
        }
        close_ssh_masters(&self.runtime_dir);
    }
}

impl Drop for Codeb {
    fn drop(&mut self) {
        drop(self.server.take());
        close_ssh_masters(&self.runtime_dir);
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// Asks every SSH master under `runtime_dir` to exit (`ssh -O exit`).
fn close_ssh_masters(runtime_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(runtime_dir.join("codeb-ssh")) else {
        return;
    };
    for e in entries.flatten() {
        let socket = e.path().join("master");
        if socket.exists() {
            let _ = std::process::Command::new("ssh")
                .args(["-F", "/dev/null", "-O", "exit", "-S"])
                .arg(&socket)
                .arg("codeb-test-master")
                .output();
        }
    }
}

/// Runs `tools/testbed ARGS` when dropped: puts a fault right even when an
/// assertion failed. Never panics (a panic in a drop during unwinding aborts).
struct RestoreOnDrop(&'static [&'static str]);

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        let out = std::process::Command::new(super::common::repo().join("tools/testbed"))
            .args(self.0)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "tools/testbed {:?} failed: {}",
                self.0,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("tools/testbed {:?} could not run: {e}", self.0),
        }
    }
}

fn args_map(args: Value) -> serde_json::Map<String, Value> {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    map
}

/// Sends a tools/call with a progress token; the caller awaits or cancels it.
async fn start_call(client: &Client, tool: &str, args: Value) -> RequestHandle<RoleClient> {
    client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(
                CallToolRequestParams::new(tool.to_string()).with_arguments(args_map(args)),
            )),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("send tools/call")
}

async fn response(handle: RequestHandle<RoleClient>) -> CallToolResult {
    match handle.await_response().await.expect("response") {
        ServerResult::CallToolResult(r) => r,
        other => panic!("unexpected response {other:?}"),
    }
}

/// Calls a tool, bounded by `CALL_LIMIT`.
async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let handle = start_call(client, tool, args).await;
    tokio::time::timeout(CALL_LIMIT, response(handle))
        .await
        .unwrap_or_else(|_| panic!("{tool} did not answer within {CALL_LIMIT:?}"))
}

/// Calls a tool; returns the result and the progress of that call.
async fn call_timed(
    client: &Client,
    tool: &str,
    args: Value,
) -> (CallToolResult, Vec<(Instant, ProgressNotificationParam)>) {
    let handle = start_call(client, tool, args).await;
    let token = handle.progress_token.clone();
    let r = tokio::time::timeout(CALL_LIMIT, response(handle))
        .await
        .unwrap_or_else(|_| panic!("{tool} did not answer within {CALL_LIMIT:?}"));
    // The server sends every progress notification before the response,
    // but rmcp's client hands notifications to the handler in tasks of
    // their own: the last ones may land just after the response. Wait
    // (bounded) for the final phase of a call that reached it.
    if r.is_error != Some(true) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && !progress_of(client, &token)
                .iter()
                .any(|(_, p)| p.total.is_some_and(|t| p.progress >= t))
        {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    (r, progress_of(client, &token))
}

fn progress_of(
    client: &Client,
    token: &ProgressToken,
) -> Vec<(Instant, ProgressNotificationParam)> {
    client
        .service()
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p)| &p.progress_token == token)
        .cloned()
        .collect()
}

/// Waits (bounded) for a progress notification of `token` whose message
/// contains `needle`.
async fn wait_progress(client: &Client, token: &ProgressToken, needle: &str) {
    let started = Instant::now();
    loop {
        let seen = progress_of(client, token);
        if seen
            .iter()
            .any(|(_, p)| p.message.as_deref().is_some_and(|m| m.contains(needle)))
        {
            return;
        }
        assert!(
            started.elapsed() < PROGRESS_WAIT,
            "no progress {needle:?} within {PROGRESS_WAIT:?}; seen: {:?}",
            seen.iter().map(|(_, p)| &p.message).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts one call's progress: one total, no value twice (MCP requires
/// values to increase), and phases (`floor(progress)`) 1, 2, ... without
/// gaps. rmcp's client runs each notification's handler in its own task,
/// so notifications sent close together may be recorded out of order: the
/// values are checked in sorted order. Returns (last phase, total).
fn assert_phases(what: &str, seen: &[(Instant, ProgressNotificationParam)]) -> (u32, u32) {
    assert!(!seen.is_empty(), "{what}: no progress at all");
    let mut seen = seen.to_vec();
    seen.sort_by(|a, b| a.1.progress.total_cmp(&b.1.progress));
    let seen = &seen[..];
    let total = seen[0].1.total.expect("progress carries a total");
    let described: Vec<String> = seen
        .iter()
        .map(|(_, p)| format!("{} {:?}", p.progress, p.message))
        .collect();
    for (_, p) in seen {
        assert_eq!(p.total, Some(total), "{what}: one total: {described:#?}");
    }
    for w in seen.windows(2) {
        assert!(
            w[1].1.progress > w[0].1.progress,
            "{what}: no progress value twice: {described:#?}"
        );
    }
    let phases: Vec<u32> = seen
        .iter()
        .map(|(_, p)| p.progress.floor() as u32)
        .collect();
    assert_eq!(phases[0], 1, "{what}: starts at phase 1: {described:#?}");
    for w in phases.windows(2) {
        assert!(
            w[1] == w[0] || w[1] == w[0] + 1,
            "{what}: no phase skipped: {described:#?}"
        );
    }
    let last = *phases.last().unwrap();
    assert!(
        f64::from(last) <= total,
        "{what}: phase beyond total: {described:#?}"
    );
    (last, total as u32)
}

fn domain(p: &str) -> String {
    format!(
        "{p}.{}",
        testbed().status["zones"]["base"].as_str().unwrap()
    )
}

fn preview(p: &str, slot: &str) -> String {
    format!(
        "{p}-production-{slot}.{}",
        testbed().status["zones"]["preview"].as_str().unwrap()
    )
}

fn deploy_args(p: &str, tag: &str) -> Value {
    json!({"project": p, "environment": "production", "image": image(tag), "override_reason": "test: no staging in this test"})
}

fn env_args(p: &str) -> Value {
    json!({"project": p, "environment": "production"})
}

/// The production slots as slot_status reports them.
async fn slots(client: &Client, p: &str) -> Value {
    let r = call(client, "slot_status", env_args(p)).await;
    structured(&r).clone()
}

fn slot<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == name)
        .unwrap_or_else(|| panic!("no slot {name}: {status}"))
}

/// (slot, state, image) of each production slot: what "unchanged" compares.
fn recorded(status: &Value) -> Vec<(String, String, Option<String>)> {
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["slot"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
                s["image"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// slot_status once the container listing has caught up: codeb serves a
/// listing up to 10 s old while it refreshes, so poll (bounded) until no
/// slot differs from the server; returns the last answer either way.
async fn settled_slots(client: &Client, p: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..30 {
        last = slots(client, p).await;
        let clean = last["observe_error"].is_null()
            && last["slots"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["mismatch"].is_null());
        if clean {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}

fn assert_consistent(status: &Value) {
    assert!(status["observe_error"].is_null(), "{status}");
    for s in status["slots"].as_array().unwrap() {
        assert!(s["mismatch"].is_null(), "no mismatch: {s}");
    }
}

/// project_create, deploy v1, promote: the domain serves v1 from blue.
async fn with_v1_active(client: &Client, p: &str) {
    let r = call(client, "project_create", json!({"project": p})).await;
    structured(&r);
    let r = call(client, "deploy", deploy_args(p, "v1")).await;
    assert_eq!(structured(&r)["slot"], json!("blue"));
    let r = call(client, "promote", env_args(p)).await;
    assert_eq!(structured(&r)["active"], json!("blue"));
    expect_served(&domain(p), "demo v1").await;
}

/// The newest deployment row of `p` for `operation`: (id, status, error).
async fn newest(
    pool: &sqlx::PgPool,
    p: &str,
    operation: &str,
) -> (uuid::Uuid, String, Option<String>) {
    sqlx::query_as(
        "SELECT d.id, d.status, d.error FROM deployments d JOIN projects p ON p.id = d.project_id
          WHERE p.name = $1 AND d.operation = $2 ORDER BY d.created_at DESC LIMIT 1",
    )
    .bind(p)
    .bind(operation)
    .fetch_one(pool)
    .await
    .expect("a deployment row")
}

/// Waits (bounded by `limit`) until the newest `operation` of `p` is no
/// longer running; returns its row and how long that took.
async fn wait_finished(
    pool: &sqlx::PgPool,
    p: &str,
    operation: &str,
    limit: Duration,
) -> ((uuid::Uuid, String, Option<String>), Duration) {
    let started = Instant::now();
    loop {
        let row = newest(pool, p, operation).await;
        if row.1 != "running" {
            return (row, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "{operation} {} still running after {limit:?}",
            row.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes a test project's containers and rows.
async fn remove_project(p: &str) {
    let (fleet, app) = app_remote();
    for slot in ["blue", "green"] {
        if let Ok(cmd) = podman::rm_force(&format!("{p}-production-{slot}")) {
            let _ = app.run(&cmd).await;
        }
    }
    fleet.close().await;
    delete_project(&db().await, p).await;
}

/// The container of a slot as podman reports it right now (no cache).
async fn container_labels(
    p: &str,
    slot: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let (fleet, app) = app_remote();
    let out = run(app.as_ref(), &podman::ps(Some(p)).unwrap()).await;
    fleet.close().await;
    podman::parse_ps(&out.stdout_text())
        .expect("podman ps parses")
        .into_iter()
        .find(|c| c.name == format!("{p}-production-{slot}"))
        .map(|c| c.labels)
}

// ---------------------------------------------------------------------------
// 1. PowerDNS stopped during a promote
// ---------------------------------------------------------------------------

/// A Caddy of the test's own on the app host, running the static config
/// codeb renders (on another port, admin off), so the test exercises
/// codeb's current config whatever the shared testbed Caddy was started
/// with. Killed on drop.
struct PrivateCaddy {
    _child: tokio::process::Child,
    dir: PathBuf,
    /// `address:port` it serves on.
    addr: String,
}

impl PrivateCaddy {
    async fn start() -> Self {
        use codeb::plan::caddy::{render_caddyfile, CaddySiteConfig, CaddyTls};
        let status = &testbed().status;
        let config = codeb::config::Config::load(&testbed().config).expect("testbed config");
        let site = CaddySiteConfig {
            admin_addr: config.caddy.admin_addr.clone(),
            route_zone: config.routing.route_zone.clone(),
            resolver: "127.0.0.1:53".into(),
            tls: CaddyTls::Off,
        };
        let rendered = render_caddyfile(&site);
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 10_000) as u16;
        let admin = format!("admin {}", site.admin_addr);
        assert!(
            rendered.contains(":80 {") && rendered.contains(&admin),
            "{rendered}"
        );
        let caddyfile = rendered
            .replacen(":80 {", &format!(":{port} {{"), 1)
            .replacen(&admin, "admin off", 1);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("codeb-lf-caddy-{}", &id[..8]));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::write(dir.join("Caddyfile"), caddyfile).unwrap();
        let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
        let netns = format!(
            "/var/run/netns/{}",
            status["hosts"]["app"]["netns"].as_str().unwrap()
        );
        let mntns = format!("{}/ns/app.mnt", status["dir"].as_str().unwrap());
        let child = tokio::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .arg(format!("--mount={mntns}"))
            .arg("--")
            .arg(status["caddy_bin"].as_str().unwrap())
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start a private Caddy on the app host");
        let addr = format!(
            "{}:{port}",
            status["hosts"]["app"]["address"].as_str().unwrap()
        );
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "private Caddy does not listen on {addr}: {}",
                std::fs::read_to_string(dir.join("caddy.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            _child: child,
            dir,
            addr,
        }
    }

    /// GET / with `host`: (status, body).
    async fn get(&self, host: &str) -> (u16, String) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        match client
            .get(format!("http://{}/", self.addr))
            .header("host", host)
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// Waits (bounded) until `host` serves `want` through this Caddy.
    async fn expect_served(&self, host: &str, want: &str) {
        let mut last = (0, String::new());
        for _ in 0..40 {
            last = self.get(host).await;
            if last.0 == 200 && last.1.contains(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{host} did not serve {want:?} through {}; last: {last:?}",
            self.addr
        );
    }
}

impl Drop for PrivateCaddy {
    fn drop(&mut self) {
        let _ = self._child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_with_powerdns_stopped_fails_cleanly_then_succeeds() {
    let _guard = FAULT_LOCK.write().await;
    let caddy = PrivateCaddy::start().await;
    let public_http = format!("http://{}", caddy.addr);
    let codeb = Codeb::start(&[("CODEB_ROUTING__PUBLIC_HTTP", public_http.as_str())]).await;
    let client = codeb.client().await;
    let p = unique_project("lf-pdns");
    with_cleanup(
        async {
            with_v1_active(&client, &p).await;
            let r = call(&client, "deploy", deploy_args(&p, "v2")).await;
            assert_eq!(structured(&r)["slot"], json!("green"));
            let before = recorded(&slots(&client, &p).await);

            testbed_cmd(&["stop", "app", "pdns"]);
            let pdns = RestoreOnDrop(&["start", "app", "pdns"]);
            let started = Instant::now();
            let r = call(&client, "promote", env_args(&p)).await;
            let took = started.elapsed();
            let text = error_text(&r);
            eprintln!("promote with PowerDNS stopped failed after {took:?}: {text}");
            assert!(text.contains("PowerDNS"), "names PowerDNS: {text}");
            assert!(
                text.contains("promote again"),
                "says what to do next: {text}"
            );
            assert!(
                took < Duration::from_secs(30),
                "reported within 30 s, took {took:?}"
            );

            // Caddy keeps its last SRV answers (grace_period): the old
            // release keeps serving, several refresh periods later too.
            for _ in 0..4 {
                for (via, (status, body)) in [
                    ("testbed Caddy", {
                        let (s, b, _) = through_caddy(&domain(&p)).await;
                        (s, b)
                    }),
                    ("codeb's config", caddy.get(&domain(&p)).await),
                ] {
                    assert_eq!(status, 200, "{via}: {body}");
                    assert!(body.contains("demo v1"), "{via} still serves v1: {body}");
                }
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            assert_eq!(
                recorded(&slots(&client, &p).await),
                before,
                "slot states unchanged"
            );

            drop(pdns);
            let r = call(&client, "promote", env_args(&p)).await;
            let v = structured(&r);
            assert_eq!(v["active"], json!("green"), "{v}");
            eprintln!(
                "promote after PowerDNS came back: switch visible through Caddy after {} ms",
                v["switch_visible_ms"]
            );
            caddy.expect_served(&domain(&p), "demo v2").await;
            assert_consistent(&settled_slots(&client, &p).await);
        },
        remove_project(&p),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 2. App host cut mid-deploy
// ---------------------------------------------------------------------------

/// Deploys `tag`, cuts the app link once progress `cut_at` arrives, and
/// returns the error text and how long after the cut it came. The link is
/// healed before this returns.
async fn deploy_with_app_cut(
    client: &Client,
    p: &str,
    tag: &str,
    cut_at: &str,
) -> (String, Duration) {
    let handle = start_call(client, "deploy", deploy_args(p, tag)).await;
    let token = handle.progress_token.clone();
    let pending = tokio::spawn(response(handle));
    wait_progress(client, &token, cut_at).await;
    testbed_cmd(&["cut", "app"]);
    let heal = RestoreOnDrop(&["heal", "app"]);
    let cut = Instant::now();
    // ssh keepalive (5 s × 3) finds the dead link, every later command
    // fails its connect timeout (5 s): a minute is a generous bound.
    let r = tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .expect("the deploy fails within 60 s of the cut")
        .expect("call task");
    let took = cut.elapsed();
    drop(heal);
    (error_text(&r), took)
}

/// After a failed deploy with the app host cut: the domain still serves
/// v1 from blue, states are as before, and a retry of `retry_tag` works.
async fn after_heal_nothing_half_switched(
    client: &Client,
    p: &str,
    before: &[(String, String, Option<String>)],
    retry_tag: &str,
) {
    expect_served(&domain(p), "demo v1").await;
    assert_eq!(
        recorded(&slots(client, p).await),
        before,
        "states unchanged"
    );
    let r = call(client, "deploy", deploy_args(p, retry_tag)).await;
    let v = structured(&r);
    assert_eq!(v["slot"], json!("green"), "{v}");
    expect_served(&preview(p, "green"), &format!("demo {retry_tag}")).await;
    expect_served(&domain(p), "demo v1").await;
    let status = settled_slots(client, p).await;
    assert_consistent(&status);
    assert_eq!(slot(&status, "green")["state"], json!("deployed"));
    assert_eq!(slot(&status, "blue")["state"], json!("active"));
}

#[tokio::test(flavor = "multi_thread")]
async fn app_host_cut_during_pull_fails_in_bounded_time_then_retry_succeeds() {
    let _guard = FAULT_LOCK.write().await;
    let codeb = Codeb::start(&[]).await;
    let client = codeb.client().await;
    let p = unique_project("lf-cut");
    with_cleanup(
        async {
            with_v1_active(&client, &p).await;
            let before = recorded(&slots(&client, &p).await);
            // Cut as soon as the deploy has planned: it is then pulling.
            let (text, took) = deploy_with_app_cut(&client, &p, "v2", "planned").await;
            eprintln!("deploy with the app host cut (pull) failed {took:?} after the cut: {text}");
            assert!(text.contains("failed at"), "{text}");
            assert!(text.contains("the active slot was not touched"), "{text}");
            assert!(text.contains("deploy again"), "says what to do: {text}");
            let pool = db().await;
            let (_, status, _) = newest(&pool, &p, "deploy").await;
            assert_eq!(status, "failed");
            after_heal_nothing_half_switched(&client, &p, &before, "v2").await;
        },
        remove_project(&p),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn app_host_cut_during_health_gate_fails_in_bounded_time_then_retry_succeeds() {
    let _guard = FAULT_LOCK.write().await;
    // The default health deadline (60 s): a gate whose probes cannot reach
    // the app server gives up after two of them instead of waiting it out.
    let codeb = Codeb::start(&[]).await;
    let client = codeb.client().await;
    let p = unique_project("lf-cutgate");
    with_cleanup(
        async {
            with_v1_active(&client, &p).await;
            let before = recorded(&slots(&client, &p).await);
            // demo:broken never gets healthy: its gate lasts the deadline.
            let (text, took) = deploy_with_app_cut(&client, &p, "broken", "health-gating").await;
            eprintln!(
                "deploy with the app host cut (health gate) failed {took:?} after the cut: {text}"
            );
            assert!(
                text.contains("app server stopped answering during the health gate"),
                "{text}"
            );
            assert!(text.contains("the active slot was not touched"), "{text}");
            assert!(text.contains("deploy again"), "says what to do: {text}");
            after_heal_nothing_half_switched(&client, &p, &before, "v2").await;
        },
        remove_project(&p),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 3. codeb killed with SIGKILL mid-deploy
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn codeb_killed_mid_deploy_is_recovered_within_the_lease() {
    let _guard = FAULT_LOCK.read().await;
    const LEASE_SECS: u64 = 6;
    let lease = LEASE_SECS.to_string();
    let deadline = LONG_HEALTH_DEADLINE_SECS.to_string();
    let env = [
        ("CODEB_LIFECYCLE__LEASE_SECS", lease.as_str()),
        ("CODEB_LIFECYCLE__HEALTH_DEADLINE_SECS", deadline.as_str()),
    ];
    let mut first = Codeb::start(&env).await;
    let client = first.client().await;
    let p = unique_project("lf-kill");
    let pool = db().await;
    with_cleanup(
        async {
            with_v1_active(&client, &p).await;
            let handle = start_call(&client, "deploy", deploy_args(&p, "broken")).await;
            let token = handle.progress_token.clone();
            let pending = tokio::spawn(response(handle));
            wait_progress(&client, &token, "health-gating").await;
            let (crashed, status, _) = newest(&pool, &p, "deploy").await;
            assert_eq!(status, "running");
            first.kill().await;
            let killed = Instant::now();
            pending.abort();
            drop(client);

            let second = Codeb::start(&env).await;
            let client = second.client().await;
            // Until the lease expires the crashed deploy holds the
            // environment; then the next deploy recovers it and proceeds.
            let mut busy = 0;
            let outcome = loop {
                let r = call(&client, "deploy", deploy_args(&p, "v2")).await;
                if r.is_error != Some(true) {
                    break structured(&r).clone();
                }
                let text = error_text(&r);
                assert!(
                    text.contains(&crashed.to_string())
                        && text.contains("already running")
                        && text.contains("lease expires"),
                    "busy names the crashed deploy: {text}"
                );
                busy += 1;
                assert!(
                    killed.elapsed() < Duration::from_secs(LEASE_SECS + 10),
                    "still busy {:?} after the kill (lease {LEASE_SECS} s): {text}",
                    killed.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            eprintln!(
                "a new deploy proceeded {:?} after the kill ({busy} busy answers, lease {LEASE_SECS} s)",
                killed.elapsed()
            );
            assert_eq!(outcome["slot"], json!("green"), "{outcome}");
            let (status, error): (String, Option<String>) =
                sqlx::query_as("SELECT status, error FROM deployments WHERE id = $1")
                    .bind(crashed)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(status, "recovered", "{error:?}");
            assert!(error.unwrap_or_default().contains("lease"));

            // Nothing disagrees with the database; the crashed deploy's
            // container is gone (green now runs the new deployment).
            let status = settled_slots(&client, &p).await;
            assert_consistent(&status);
            assert_eq!(slot(&status, "green")["state"], json!("deployed"));
            // The slot runs the deploy's digest (`REPOSITORY@DIGEST`).
            let pinned = format!(
                "{}@{}",
                image("v2").rsplit_once(':').unwrap().0,
                outcome["digest"].as_str().expect("the deploy's digest")
            );
            assert_eq!(slot(&status, "green")["image"], json!(pinned));
            assert_eq!(slot(&status, "blue")["state"], json!("active"));
            let labels = container_labels(&p, "green").await.expect("green container");
            assert_eq!(
                labels.get(podman::LABEL_DEPLOYMENT).map(String::as_str),
                outcome["deployment_id"].as_str(),
                "the green container is the new deployment's"
            );
            expect_served(&domain(&p), "demo v1").await;
            expect_served(&preview(&p, "green"), "demo v2").await;
        },
        remove_project(&p),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 4. Ten concurrent deploys over two codeb processes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_deploys_over_two_processes_run_exactly_once() {
    let _guard = FAULT_LOCK.read().await;
    let (a, b) = tokio::join!(Codeb::start(&[]), Codeb::start(&[]));
    let (ca, cb) = tokio::join!(a.client(), b.client());
    let p = unique_project("lf-burst");
    let pool = db().await;
    with_cleanup(
        async {
            let r = call(&ca, "project_create", json!({"project": p})).await;
            structured(&r);
            let calls = (0..10).map(|i| {
                let client = if i % 2 == 0 { &ca } else { &cb };
                call(client, "deploy", deploy_args(&p, "v1"))
            });
            let results = futures::future::join_all(calls).await;
            let ok: Vec<&CallToolResult> = results
                .iter()
                .filter(|r| r.is_error != Some(true))
                .collect();
            assert_eq!(ok.len(), 1, "exactly one deploy runs");
            let id = structured(ok[0])["deployment_id"]
                .as_str()
                .unwrap()
                .to_string();
            for r in results.iter().filter(|r| r.is_error == Some(true)) {
                let text = error_text(r);
                assert!(
                    text.contains(&id) && text.contains("already running"),
                    "names the running deployment {id}: {text}"
                );
            }
            let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
                "SELECT d.id, d.status FROM deployments d JOIN projects p ON p.id = d.project_id
                  WHERE p.name = $1",
            )
            .bind(&p)
            .fetch_all(&pool)
            .await
            .unwrap();
            assert_eq!(rows.len(), 1, "one row for the burst: {rows:?}");
            assert_eq!(rows[0].0.to_string(), id);
            assert_eq!(rows[0].1, "succeeded");
            expect_served(&preview(&p, "blue"), "demo v1").await;
        },
        remove_project(&p),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 5. A client that goes away: before the switch abort, after it complete
// ---------------------------------------------------------------------------

/// After a deploy was abandoned mid-health-gate: it ended (cancelled)
/// promptly, green is empty and has no container, blue still serves.
async fn assert_abandoned_deploy_cleaned(client: &Client, pool: &sqlx::PgPool, p: &str, how: &str) {
    let ((id, status, error), took) =
        wait_finished(pool, p, "deploy", Duration::from_secs(30)).await;
    let error = error.unwrap_or_default();
    eprintln!("{how}: deploy {id} ended {status} {took:?} after the client went away: {error}");
    assert_eq!(status, "failed", "{error}");
    assert!(
        error.contains("cancelled before the traffic switch"),
        "{error}"
    );
    assert!(
        took < Duration::from_secs(LONG_HEALTH_DEADLINE_SECS / 2),
        "ended well before the health deadline: {took:?}"
    );
    let status = settled_slots(client, p).await;
    assert_consistent(&status);
    let green = slot(&status, "green");
    assert_eq!(green["state"], json!("empty"), "{green}");
    assert!(green["container"].is_null(), "{green}");
    assert_eq!(slot(&status, "blue")["state"], json!("active"));
    expect_served(&domain(p), "demo v1").await;
}

/// Sends a 2026-07-28 stateless deploy over plain HTTP, reads its SSE
/// stream until the health gate starts, then drops the connection.
async fn stateless_deploy_then_disconnect(url: &str, key: &str, args: Value) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": "deploy",
            "arguments": args,
            "_meta": {
                "progressToken": "lf-disconnect",
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "lifecycle-faults", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut resp = http
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "deploy")
        .body(body.to_string())
        .send()
        .await
        .expect("POST tools/call");
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    tokio::time::timeout(PROGRESS_WAIT, async {
        while !text.contains("health-gating") {
            let chunk = resp
                .chunk()
                .await
                .expect("read the SSE stream")
                .unwrap_or_else(|| panic!("stream ended before the health gate: {text}"));
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no health-gating progress in {PROGRESS_WAIT:?}: {text}"));
    drop(resp);
    drop(http);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_gone_before_the_switch_aborts_cleanly_after_it_completes() {
    let _guard = FAULT_LOCK.read().await;
    let deadline = LONG_HEALTH_DEADLINE_SECS.to_string();
    let codeb = Codeb::start(&[("CODEB_LIFECYCLE__HEALTH_DEADLINE_SECS", deadline.as_str())]).await;
    let client = codeb.client().await;
    let p = unique_project("lf-gone");
    let pool = db().await;
    with_cleanup(
        async {
            with_v1_active(&client, &p).await;

            // A legacy (session) client cancels the request mid-health-gate.
            let handle = start_call(&client, "deploy", deploy_args(&p, "broken")).await;
            let token = handle.progress_token.clone();
            wait_progress(&client, &token, "health-gating").await;
            handle
                .cancel(Some("test: client gone".into()))
                .await
                .unwrap();
            assert_abandoned_deploy_cleaned(&client, &pool, &p, "notifications/cancelled").await;

            // A stateless (2026-07-28) client drops its connection mid-health-gate.
            stateless_deploy_then_disconnect(codeb.url(), &codeb.server.as_ref().expect("running").key, deploy_args(&p, "broken")).await;
            assert_abandoned_deploy_cleaned(&client, &pool, &p, "disconnect").await;

            // After the switch the promote completes although the client left.
            let r = call(&client, "deploy", deploy_args(&p, "v2")).await;
            assert_eq!(structured(&r)["slot"], json!("green"));
            let handle = start_call(&client, "promote", env_args(&p)).await;
            let token = handle.progress_token.clone();
            wait_progress(&client, &token, "switching").await;
            handle
                .cancel(Some("test: client gone".into()))
                .await
                .unwrap();
            let ((id, status, error), took) =
                wait_finished(&pool, &p, "promote", Duration::from_secs(30)).await;
            eprintln!("promote {id} cancelled after its switch ended {status} after {took:?}");
            assert_eq!(status, "succeeded", "{error:?}");
            let noted: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM deployment_steps WHERE deployment_id = $1 AND step = 'client_gone')",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
            eprintln!("the journal notes that the client left mid-promote: {noted}");
            expect_served(&domain(&p), "demo v2").await;
            let status = settled_slots(&client, &p).await;
            assert_consistent(&status);
            assert_eq!(slot(&status, "green")["state"], json!("active"));
            assert_eq!(slot(&status, "blue")["state"], json!("grace"));
        },
        remove_project(&p),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 6. Progress for every phase, and heartbeats during a long health gate
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn progress_reports_every_phase_and_heartbeats() {
    let _guard = FAULT_LOCK.read().await;
    const GATE_SECS: u64 = 14;
    let gate = GATE_SECS.to_string();
    let codeb = Codeb::start(&[("CODEB_LIFECYCLE__HEALTH_DEADLINE_SECS", gate.as_str())]).await;
    let client = codeb.client().await;
    let p = unique_project("lf-prog");
    with_cleanup(
        async {
            let r = call(&client, "project_create", json!({"project": p})).await;
            structured(&r);
            for (tool, args) in [
                ("deploy", deploy_args(&p, "v1")),
                ("promote", env_args(&p)),
                ("deploy", deploy_args(&p, "v2")),
                ("promote", env_args(&p)),
                (
                    "rollback",
                    json!({"project": p, "environment": "production", "reason": "progress test"}),
                ),
            ] {
                let (r, seen) = call_timed(&client, tool, args).await;
                structured(&r);
                let (last, total) = assert_phases(tool, &seen);
                assert_eq!(last, total, "{tool} reports its last phase");
            }

            // A long health gate (demo:broken): a report at least every 5 s.
            let (r, seen) = call_timed(&client, "deploy", deploy_args(&p, "broken")).await;
            error_text(&r);
            let (last, total) = assert_phases("failing deploy", &seen);
            assert!(last < total, "a failed deploy stops early");
            let mut seen = seen;
            seen.sort_by_key(|(at, _)| *at);
            let gate_start = seen
                .iter()
                .position(|(_, p)| {
                    p.message
                        .as_deref()
                        .is_some_and(|m| m.contains("health-gating"))
                })
                .expect("a health-gating phase");
            let during = &seen[gate_start..];
            let span = during.last().unwrap().0 - during[0].0;
            assert!(
                span >= Duration::from_secs(GATE_SECS - 4),
                "the gate's reports span most of its {GATE_SECS} s: {span:?}"
            );
            let longest = during
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .max()
                .unwrap_or_default();
            eprintln!(
                "{} reports during a {GATE_SECS} s health gate; longest silence {longest:?}",
                during.len()
            );
            assert!(
                longest <= Duration::from_secs(5),
                "a report at least every 5 s; longest silence {longest:?}"
            );
        },
        remove_project(&p),
    )
    .await;
}

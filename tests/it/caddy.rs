//! Caddy's one static config on the real app host (against a temp path,
//! never /etc/caddy/Caddyfile): the rendered config equals the one the
//! testbed runs, a valid config installs, and a broken edit is refused by
//! `caddy validate` with the installed file left byte-identical and its
//! `.bak` in place.

use codeb::ops::caddy::{install_caddy_config, CaddyInstallError, BACKUP_SUFFIX, CANDIDATE_SUFFIX};
use codeb::plan::caddy::{render_caddyfile, CaddySiteConfig, CaddyTls};
use codeb::plan::cmd::RemoteCmd;

use super::app_host::{app_remote, remove_dir, run, run_ok, unique_dir, with_cleanup};
use super::common::{testbed, FAULT_LOCK};

fn testbed_site() -> CaddySiteConfig {
    let config = codeb::config::Config::load(&testbed().config).expect("load the testbed config");
    CaddySiteConfig {
        admin_addr: config.caddy.admin_addr.clone(),
        route_zone: config.routing.route_zone.clone(),
        resolver: "127.0.0.1:53".into(),
        tls: CaddyTls::Off,
    }
}

/// The lines that matter: no comments, no blank lines.
fn directives(caddyfile: &str) -> Vec<String> {
    caddyfile
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect()
}

async fn cat(remote: &dyn codeb::exec::Remote, path: &str) -> Vec<u8> {
    run_ok(remote, &RemoteCmd::new("cat").arg("--").arg(path))
        .await
        .stdout
}

async fn exists(remote: &dyn codeb::exec::Remote, path: &str) -> bool {
    run(remote, &RemoteCmd::new("test").arg("-e").arg(path))
        .await
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_config_is_the_testbed_config() {
    let _guard = FAULT_LOCK.read().await;
    let (fleet, remote) = app_remote();
    let running = String::from_utf8(cat(&*remote, "/etc/caddy/Caddyfile").await).unwrap();
    fleet.close().await;
    let rendered = render_caddyfile(&testbed_site());
    assert_eq!(directives(&rendered), directives(&running));
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_edit_is_refused_and_the_config_kept() {
    let _guard = FAULT_LOCK.read().await;
    let (fleet, remote) = app_remote();
    let dir = unique_dir("caddy-test");
    let path = format!("{dir}/Caddyfile");
    let backup = format!("{path}{BACKUP_SUFFIX}");
    with_cleanup(
        async {
            let good = render_caddyfile(&testbed_site());

            // First install: nothing to back up; the file is the content.
            install_caddy_config(&*remote, &path, good.clone())
                .await
                .expect("a valid config installs");
            assert_eq!(cat(&*remote, &path).await, good.as_bytes());
            assert!(!exists(&*remote, &backup).await);

            // A second valid config (on-demand TLS): the first becomes the backup.
            let mut tls = testbed_site();
            tls.tls = CaddyTls::OnDemand {
                ask_url: "http://127.0.0.1:9102/caddy/ask".into(),
            };
            let good2 = render_caddyfile(&tls);
            install_caddy_config(&*remote, &path, good2.clone())
                .await
                .expect("the on-demand TLS config installs");
            assert_eq!(cat(&*remote, &path).await, good2.as_bytes());
            assert_eq!(cat(&*remote, &backup).await, good.as_bytes());
            let mode = run_ok(
                &*remote,
                &RemoteCmd::new("stat").args(["-c", "%a", "--"]).arg(&path),
            )
            .await
            .stdout_text();
            assert_eq!(mode.trim(), "644");

            // The broken edit, injected: a load-balancing policy that does not exist.
            let broken = good.replace("lb_policy first", "lb_policy firstt");
            assert_ne!(broken, good);
            let e = install_caddy_config(&*remote, &path, broken)
                .await
                .expect_err("caddy validate refuses the broken config");
            let msg = e.to_string();
            assert!(matches!(e, CaddyInstallError::Refused { .. }), "{msg}");
            assert!(msg.contains("firstt"), "the error names the problem: {msg}");
            assert!(msg.contains("is unchanged"), "{msg}");
            assert!(msg.len() < 2500, "bounded: {} bytes", msg.len());
            assert_eq!(
                cat(&*remote, &path).await,
                good2.as_bytes(),
                "the installed config is byte-identical to before"
            );
            assert_eq!(
                cat(&*remote, &backup).await,
                good2.as_bytes(),
                "the .bak holds the config that stayed"
            );
            assert!(!exists(&*remote, &format!("{path}{CANDIDATE_SUFFIX}")).await);

            // A syntax error (unclosed block) is refused the same way.
            let e = install_caddy_config(&*remote, &path, ":80 {\n\treverse_proxy {\n".into())
                .await
                .expect_err("caddy validate refuses an unclosed block");
            assert!(e.to_string().contains("unexpected EOF"), "{e}");
            assert_eq!(cat(&*remote, &path).await, good2.as_bytes());
        },
        async {
            let _ = remote.run(&remove_dir(&dir)).await;
            fleet.close().await;
        },
    )
    .await;
}

/// The live config through the CLI a server setup uses: a broken edit of
/// `/etc/caddy/Caddyfile` is refused by `caddy validate`, the live file
/// stays byte-identical and its `.bak` is there; Caddy keeps routing.
#[tokio::test(flavor = "multi_thread")]
async fn live_config_refuses_a_broken_edit() {
    let _guard = FAULT_LOCK.write().await;
    let (_fleet, remote) = app_remote();
    let live_path = "/etc/caddy/Caddyfile";
    let before = cat(remote.as_ref(), live_path).await;
    let text = String::from_utf8(before.clone()).unwrap();
    assert!(text.contains("lb_policy first"), "{text}");
    let broken = text.replace("lb_policy first", "lb_policy firstt");
    let file =
        std::env::temp_dir().join(format!("codeb-broken-{}.Caddyfile", uuid::Uuid::new_v4()));
    std::fs::write(&file, broken).unwrap();
    let out = std::process::Command::new(super::common::codeb_bin())
        .arg("--config")
        .arg(&testbed().config)
        .arg("caddy-install")
        .arg("--file")
        .arg(&file)
        .env("CODEB_LOG", "warn")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a broken config must be refused: {stderr}"
    );
    assert!(
        stderr.contains("firstt"),
        "the error quotes the validator: {stderr}"
    );
    assert_eq!(
        cat(remote.as_ref(), live_path).await,
        before,
        "live config unchanged"
    );
    assert!(
        exists(remote.as_ref(), &format!("{live_path}{BACKUP_SUFFIX}")).await,
        ".bak kept"
    );
    assert!(
        !exists(remote.as_ref(), &format!("{live_path}{CANDIDATE_SUFFIX}")).await,
        "candidate removed"
    );
    let admin = run_ok(
        remote.as_ref(),
        &RemoteCmd::new("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--",
            "http://127.0.0.1:2019/config/",
        ]),
    )
    .await;
    assert_eq!(admin.stdout_text().trim(), "200", "Caddy still up");
}

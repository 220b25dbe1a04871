//! The production deploy policy (DESIGN §6) on the testbed: an image goes
//! to production only after a healthy staging deploy of the same image,
//! unless an admin or owner passes `override_reason` (recorded); a dry run
//! says whether the policy would refuse.

use codeb::config::Config;
use codeb::model::{Environment, Role};
use codeb::ops::lifecycle::{self, Caller, OpError, Outcome};
use codeb::ops::Ctx;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::common::{
    call, db, error_text, structured, testbed, unique_project, HttpServer, FAULT_LOCK,
};
use super::lifecycle::image;

fn deploy_args(p: &str, environment: &str, tag: &str, extra: Value) -> Value {
    let mut a = json!({"project": p, "environment": environment, "image": image(tag)});
    a.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    a
}

/// Removes a test project's containers and rows.
async fn remove_project(p: &str) {
    let (fleet, app) = super::app_host::app_remote();
    for env in ["production", "staging"] {
        for slot in ["blue", "green"] {
            if let Ok(cmd) = codeb::plan::podman::rm_force(&format!("{p}-{env}-{slot}")) {
                let _ = app.run(&cmd).await;
            }
        }
    }
    fleet.close().await;
    super::common::delete_project(&db().await, p).await;
}

async fn deployments_of(p: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM deployments d JOIN projects p ON p.id = d.project_id WHERE p.name = $1",
    )
    .bind(p)
    .fetch_one(&db().await)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_takes_only_staged_images_unless_an_owner_overrides() {
    let _shared = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = server.client().await;
    let p = unique_project("pol");
    structured(&call(&client, "project_create", json!({"project": p})).await);

    // A fresh image straight to production: refused, dry run included,
    // with advice, and nothing is recorded.
    for dry_run in [true, false] {
        let r = call(
            &client,
            "deploy",
            deploy_args(&p, "production", "v1", json!({"dry_run": dry_run})),
        )
        .await;
        let e = error_text(&r);
        assert!(e.contains("never deployed healthy"), "{e}");
        assert!(e.contains("Deploy it to staging first"), "{e}");
        assert!(e.contains("override_reason"), "{e}");
    }
    assert_eq!(
        deployments_of(&p).await,
        0,
        "a refused deploy records nothing"
    );

    // Staging first, then production is allowed; its dry run says why.
    let r = call(
        &client,
        "deploy",
        deploy_args(&p, "staging", "v1", json!({})),
    )
    .await;
    assert!(structured(&r)["policy"].is_null(), "{r:?}");
    let r = call(
        &client,
        "deploy",
        deploy_args(&p, "production", "v1", json!({"dry_run": true})),
    )
    .await;
    let s = structured(&r);
    assert!(
        s["policy"]
            .as_str()
            .unwrap()
            .contains("deployed healthy to staging"),
        "{s}"
    );
    assert!(
        s["summary"].as_str().unwrap().contains("policy allowed"),
        "{s}"
    );
    let r = call(
        &client,
        "deploy",
        deploy_args(&p, "production", "v1", json!({})),
    )
    .await;
    let s = structured(&r);
    assert_eq!(s["image"], json!(image("v1")));
    let staged_id = s["deployment_id"].as_str().unwrap().to_string();
    let got = call(&client, "deployment_get", json!({"id": staged_id})).await;
    assert!(structured(&got)["deployment"]["reason"].is_null());

    // The staging check is per image: v2 was never staged. The owner (the
    // local principal) overrides with a reason; it is recorded.
    let reason = "hotfix for incident 42; staging is down";
    let e = error_text(
        &call(
            &client,
            "deploy",
            deploy_args(&p, "production", "v2", json!({})),
        )
        .await,
    );
    assert!(e.contains("Deploy it to staging first"), "{e}");
    let r = call(
        &client,
        "deploy",
        deploy_args(&p, "production", "v2", json!({"override_reason": reason})),
    )
    .await;
    let s = structured(&r);
    assert!(s["policy"].as_str().unwrap().contains("override"), "{s}");
    let got = call(
        &client,
        "deployment_get",
        json!({"id": s["deployment_id"].as_str().unwrap()}),
    )
    .await;
    let d = &structured(&got)["deployment"];
    assert_eq!(d["reason"], json!(reason), "{d}");
    assert_eq!(d["status"], json!("succeeded"), "{d}");

    // An override reason must be text.
    let e = error_text(
        &call(
            &client,
            "deploy",
            deploy_args(&p, "production", "v2", json!({"override_reason": "  "})),
        )
        .await,
    );
    assert!(e.contains("override_reason must be"), "{e}");

    drop(client);
    remove_project(&p).await;
}

/// Roles over HTTP arrive with API keys (built elsewhere); the policy reads
/// the caller's role, so a member and an admin are checked here through the
/// operation itself. Dry runs: nothing executes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_override_is_refused_and_an_admins_is_not() {
    let _shared = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = server.client().await;
    let p = unique_project("polm");
    structured(&call(&client, "project_create", json!({"project": p})).await);
    drop(client);
    drop(server);

    let ctx = Ctx::new(Config::load(&testbed().config).unwrap());
    let caller = |role: Role| Caller {
        principal: format!("test-{}", role.as_str()),
        holder: format!("test-{}", role.as_str()),
        team: "default".into(),
        role,
        key_id: None,
    };
    let img = image("v1");
    let project = p.as_str();
    let deploy = |who: Caller, environment: Environment, reason: Option<&'static str>| {
        let (ctx, img) = (&ctx, img.clone());
        async move {
            lifecycle::deploy(
                ctx,
                project,
                environment,
                &img,
                None,
                reason,
                true,
                &who,
                tokio::sync::mpsc::unbounded_channel().0,
                CancellationToken::new(),
            )
            .await
        }
    };

    for role in [Role::Viewer, Role::Member] {
        match deploy(caller(role), Environment::Production, Some("trust me")).await {
            Err(OpError::Refused(msg)) => {
                assert!(msg.contains("only from an admin or owner"), "{msg}");
                assert!(msg.contains(role.as_str()), "{msg}");
            }
            other => panic!("{role:?}: expected a refusal, got {other:?}"),
        }
        match deploy(caller(role), Environment::Production, None).await {
            Err(OpError::Refused(msg)) => assert!(msg.contains("staging first"), "{msg}"),
            other => panic!("{role:?}: expected a refusal, got {other:?}"),
        }
    }
    for role in [Role::Admin, Role::Owner] {
        match deploy(
            caller(role),
            Environment::Production,
            Some("approved by on-call"),
        )
        .await
        {
            Ok(Outcome::Planned(plan)) => {
                assert!(plan.policy.unwrap().contains("override"))
            }
            other => panic!("{role:?}: expected a plan, got {other:?}"),
        }
    }
    // A member deploys to staging freely.
    match deploy(caller(Role::Member), Environment::Staging, None).await {
        Ok(Outcome::Planned(plan)) => assert!(plan.policy.is_none()),
        other => panic!("expected a plan, got {other:?}"),
    }
    assert_eq!(deployments_of(&p).await, 0, "dry runs record nothing");
    super::common::delete_project(&db().await, &p).await;
}

/// The digest the testbed registry serves for `demo:{tag}` now.
async fn registry_digest(tag: &str) -> String {
    let registry = testbed().status["registry"].as_str().unwrap().to_string();
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .head(format!("http://{registry}/v2/demo/manifests/{tag}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("HEAD a manifest");
    assert!(r.status().is_success(), "demo:{tag}: {}", r.status());
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Pushes the content of `demo:{from}` as `demo:{to}` from the app host.
async fn push_as(app: &dyn codeb::exec::Remote, from: &str, to: &str) {
    use super::app_host::run_ok;
    use codeb::plan::cmd::RemoteCmd;
    let podman = |args: &[&str]| RemoteCmd::new("podman").args(args.iter().copied());
    run_ok(app, &podman(&["pull", "-q", "--", &image(from)])).await;
    run_ok(app, &podman(&["tag", &image(from), &image(to)])).await;
    run_ok(
        app,
        &podman(&["push", "-q", "--tls-verify=false", &image(to)]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_pushed_over_after_staging_never_reaches_production() {
    let _shared = FAULT_LOCK.read().await;
    let pool = db().await;
    let p = unique_project("poldg");
    super::common::insert_project_of(&pool, &p, "default").await;
    let tag = format!(
        "pushover-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let tagged = image(&tag);
    let (fleet, app) = super::app_host::app_remote();
    let server = HttpServer::start().await;
    let client = server.client().await;

    let body = async {
        // The tag holds v1's content; staging runs it.
        push_as(app.as_ref(), "v1", &tag).await;
        let r = call(
            &client,
            "deploy",
            deploy_args(&p, "staging", &tag, json!({})),
        )
        .await;
        let staging = structured(&r).clone();

        // The tag is pushed over with v2's content.
        push_as(app.as_ref(), "v2", &tag).await;
        let moved = registry_digest(&tag).await;

        // Production of the tag, no override: what it serves through Caddy
        // is what staging ran, not what the tag names now.
        let r = call(
            &client,
            "deploy",
            deploy_args(&p, "production", &tag, json!({})),
        )
        .await;
        let s = structured(&r).clone();
        let host = s["preview_url"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_string();
        // Caddy picks a new route up within a second: wait (bounded) for
        // an answer, then look at what it serves.
        let mut served = (0, String::new(), String::new());
        for _ in 0..40 {
            served = super::lifecycle::through_caddy(&host).await;
            if served.0 == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(served.0, 200, "{host} is not served: {served:?}");
        assert!(
            !served.1.contains("demo v2"),
            "production serves the content pushed over the staged tag: {served:?}"
        );
        assert!(served.1.contains("demo v1"), "{served:?}");

        // The digests: recorded by staging, run by production, shown by
        // deploy, deployment_get and slot_status.
        let staged = staging["digest"]
            .as_str()
            .expect("staging records a digest")
            .to_string();
        assert!(
            staged.starts_with("sha256:") && staged.len() == 71,
            "{staging}"
        );
        assert_ne!(moved, staged, "the tag was pushed over");
        assert_eq!(staging["image"], json!(tagged), "{staging}");
        assert_eq!(s["digest"], json!(staged), "{s}");
        assert_eq!(s["image"], json!(tagged), "{s}");
        assert!(s["policy"].as_str().unwrap().contains(&staged), "{s}");
        for id in [&staging["deployment_id"], &s["deployment_id"]] {
            let got = call(&client, "deployment_get", json!({"id": id})).await;
            assert_eq!(
                structured(&got)["deployment"]["image_digest"],
                json!(staged)
            );
        }
        let st = call(
            &client,
            "slot_status",
            json!({"project": p, "environment": "production"}),
        )
        .await;
        let st = structured(&st).to_string();
        assert!(st.contains(&format!("demo@{staged}")), "{st}");

        // A dry run says the same before anything runs.
        let r = call(
            &client,
            "deploy",
            deploy_args(&p, "production", &tag, json!({"dry_run": true})),
        )
        .await;
        let d = structured(&r);
        assert_eq!(d["digest"], json!(staged), "{d}");
        let plan = d["plan"].to_string();
        assert!(plan.contains(&format!("demo@{staged}")), "{plan}");

        // By digest: the new content was never staged, the old one was.
        let repo = tagged.rsplit_once(':').unwrap().0.to_string();
        let e = error_text(
            &call(
                &client,
                "deploy",
                json!({"project": p, "environment": "production", "image": format!("{repo}@{moved}"), "dry_run": true}),
            )
            .await,
        );
        assert!(e.contains("never deployed healthy"), "{e}");
        let r = call(
            &client,
            "deploy",
            json!({"project": p, "environment": "production", "image": format!("{repo}@{staged}"), "dry_run": true}),
        )
        .await;
        assert_eq!(structured(&r)["digest"], json!(staged));
        let e = error_text(
            &call(
                &client,
                "deploy",
                json!({"project": p, "environment": "production", "image": format!("{repo}@sha256:1234"), "dry_run": true}),
            )
            .await,
        );
        assert!(e.contains("digest is not sha256"), "{e}");

        // An owner's override of a never-staged reference runs the digest
        // it names now, recorded.
        let fresh = format!("{tag}-new");
        push_as(app.as_ref(), "v2", &fresh).await;
        let r = call(
            &client,
            "deploy",
            deploy_args(
                &p,
                "production",
                &fresh,
                json!({"override_reason": "test: hotfix"}),
            ),
        )
        .await;
        let s = structured(&r);
        assert_eq!(s["digest"], json!(registry_digest(&fresh).await), "{s}");
    };
    super::app_host::with_cleanup(body, async {
        use codeb::plan::cmd::RemoteCmd;
        remove_project(&p).await;
        // The local tags only: the registry's manifests may be shared with
        // demo:v1 and demo:v2 (the same content), so they stay.
        for t in [tag.clone(), format!("{tag}-new")] {
            let _ = app
                .run(&RemoteCmd::new("podman").args(["rmi", "--ignore", "--", &image(&t)]))
                .await;
        }
        fleet.close().await;
    })
    .await;
}

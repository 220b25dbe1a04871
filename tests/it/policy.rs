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

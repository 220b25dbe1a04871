//! Secrets never reach MCP output or logs: a canary database password is
//! used (and refused by PostgreSQL) while every tool runs at debug logging.

use std::process::Stdio;

use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::ServiceExt;
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::common::{call, codeb_bin, error_text, structured, testbed, FAULT_LOCK};

#[tokio::test(flavor = "multi_thread")]
async fn canary_database_password_never_leaks() {
    let _guard = FAULT_LOCK.read().await;
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let config = testbed().config.clone();
    let (transport, stderr) =
        TokioChildProcess::builder(tokio::process::Command::new(codeb_bin()).configure(|c| {
            c.arg("--config")
                .arg(&config)
                .arg("serve")
                .env("CODEB_LOG", "debug")
                .env("CODEB_DATABASE_PASSWORD", &canary);
        }))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn codeb");
    let mut stderr = stderr.expect("stderr piped");
    let log = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let client = ().serve(transport).await.expect("initialize");

    let mut outputs = Vec::new();
    let r = call(&client, "health_check", json!({})).await;
    let v = structured(&r).clone();
    assert_eq!(
        v["database"]["healthy"],
        json!(false),
        "wrong password refused: {v}"
    );
    assert!(
        v["database"]["detail"]
            .as_str()
            .unwrap()
            .contains("password authentication failed"),
        "{v}"
    );
    outputs.push(serde_json::to_string(&r).unwrap());
    for (tool, args) in [
        ("project_list", json!({})),
        ("slot_status", json!({"project": "shop"})),
    ] {
        let r = call(&client, tool, args).await;
        let text = error_text(&r);
        assert!(text.contains("database unavailable"), "{text}");
        outputs.push(serde_json::to_string(&r).unwrap());
    }
    client.cancel().await.unwrap();
    let log = log.await.unwrap();
    assert!(!log.is_empty(), "debug logging produced output");
    for o in &outputs {
        assert!(
            !o.contains(&canary),
            "canary leaked into a tool result: {o}"
        );
    }
    assert!(!log.contains(&canary), "canary leaked into the log");
}

//! Tool schema snapshots: `schemas/<tool>.json` must match what
//! `tools/list` shows. Regenerate with `tools/update-schemas`.

use codeb::mcp::CodebServer;
use serde_json::Value;

#[test]
fn snapshots_match_tool_definitions() {
    let dir = super::common::repo().join("schemas");
    let tools = CodebServer::tool_definitions();
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut problems = Vec::new();
    for t in &tools {
        let path = dir.join(format!("{}.json", t.name));
        let want = codeb::cli::tool_snapshot(t);
        if update {
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => problems.push(format!("{} is stale", path.display())),
            Err(_) => problems.push(format!("{} is missing", path.display())),
        }
    }
    let names: Vec<String> = tools.iter().map(|t| format!("{}.json", t.name)).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let f = entry.unwrap().file_name().to_string_lossy().to_string();
        if !names.contains(&f) {
            problems.push(format!("schemas/{f} belongs to no tool"));
        }
    }
    assert!(
        problems.is_empty(),
        "{problems:#?}\nrun tools/update-schemas and review the diff"
    );
}

#[test]
fn every_tool_is_fully_described() {
    for t in CodebServer::tool_definitions() {
        let v = serde_json::to_value(&t).unwrap();
        let name = &t.name;
        assert!(v["title"].is_string(), "{name}: title");
        assert!(
            v["description"].as_str().is_some_and(|d| d.len() > 20),
            "{name}: description"
        );
        for hint in [
            "readOnlyHint",
            "destructiveHint",
            "idempotentHint",
            "openWorldHint",
        ] {
            assert!(
                v["annotations"][hint].is_boolean(),
                "{name}: annotation {hint} must be explicit"
            );
        }
        let props = v["inputSchema"]["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (field, schema) in props {
            assert!(
                schema["description"].is_string(),
                "{name}.{field}: every parameter needs a description"
            );
        }
        assert_eq!(
            v["inputSchema"]["type"],
            Value::from("object"),
            "{name}: input schema is an object"
        );
        let out = &v["outputSchema"];
        assert!(out.is_object(), "{name}: output schema");
        assert!(
            out["required"]
                .as_array()
                .is_some_and(|r| r.contains(&Value::from("summary"))),
            "{name}: structured result needs a required summary"
        );
    }
}

/// DESIGN §5: the whole `tools/list` for an owner stays under about 6,000
/// tokens. Guarded as compact JSON of at most 24,000 bytes (about 4 bytes
/// per token for this kind of JSON).
#[test]
fn tools_list_fits_the_token_budget() {
    let tools = CodebServer::tool_definitions();
    let bytes = serde_json::to_string(&serde_json::json!({ "tools": tools }))
        .unwrap()
        .len();
    eprintln!("tools/list: {} tools, {bytes} bytes", tools.len());
    assert!(
        bytes <= 24_000,
        "tools/list is {bytes} bytes for {} tools; trim descriptions or schemas",
        tools.len()
    );
}

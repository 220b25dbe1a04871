//! The binary's command line: bad config gives one line naming the field
//! and exit code 2; stdio answers `initialize` before touching any server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::common::{codeb_bin, testbed};

fn temp_config(edit: impl FnOnce(String) -> String) -> PathBuf {
    let base = std::fs::read_to_string(&testbed().config).expect("read testbed config");
    let dir = std::env::temp_dir().join(format!("codeb-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("codeb.toml");
    std::fs::write(&path, edit(base)).unwrap();
    path
}

fn run_migrate(config: &Path) -> (i32, String) {
    let out = Command::new(codeb_bin())
        .arg("--config")
        .arg(config)
        .arg("migrate")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_config_error(config: &Path, field: &str) {
    let (code, stderr) = run_migrate(config);
    assert_eq!(code, 2, "exit code 2 for bad config; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("codeb: config error: {field}:")),
        "names {field}: {stderr}"
    );
}

#[test]
fn missing_config_file() {
    assert_config_error(Path::new("/nonexistent/codeb.toml"), "file");
}

#[test]
fn unknown_field() {
    let p = temp_config(|s| s.replace("[ssh]\n", "[ssh]\nretries = 3\n"));
    assert_config_error(&p, "ssh.retries");
}

#[test]
fn invalid_host() {
    let p = temp_config(|s| s.replacen("address = \"10.77.0.12\"", "address = \"bad host!\"", 1));
    assert_config_error(&p, "servers[1].address");
}

#[test]
fn unreadable_key() {
    let p = temp_config(|s| s.replacen("ssh_key_file = \"", "ssh_key_file = \"/nonexistent", 1));
    assert_config_error(&p, "servers[0].ssh_key_file");
}

#[test]
fn bad_toml_syntax() {
    let p = temp_config(|s| format!("{s}\n[[servers]\n"));
    let (code, stderr) = run_migrate(&p);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn http_refuses_non_loopback_address() {
    let out = Command::new(codeb_bin())
        .arg("--config")
        .arg(&testbed().config)
        .args(["serve", "--http", "0.0.0.0:0"])
        .env("CODEB_LOG", "off")
        .output()
        .unwrap();
    // Allowed since access control, but only with explicit Host/Origin
    // allowlists; the testbed config names loopback only.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mcp.allowed_hosts"), "{stderr}");
}

/// stdio opens no SSH or database connection before it answers
/// `initialize`: every server and the database point at a listener of this
/// test, which must have no pending connection after the handshake and a
/// tools/list round trip.
#[test]
fn stdio_initialize_touches_no_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = temp_config(|s| {
        let s = s.replace("ssh_port = 22", &format!("ssh_port = {port}"));
        let s = regex_like_replace_addresses(&s);
        s.replace("@10.77.0.12:5432/", &format!("@127.0.0.1:{port}/"))
    });
    let mut child = Command::new(codeb_bin())
        .arg("--config")
        .arg(&p)
        .arg("serve")
        .env("CODEB_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
    )
    .unwrap();
    let init: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "codeb");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
    let list: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(list["result"]["tools"].as_array().unwrap().len() >= 3);
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("codeb connected to a server ({from}) before any tool needed it"),
        Err(e) => panic!("accept: {e}"),
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "codeb exits cleanly when stdin closes: {status}"
    );
}

/// Points every server address at 127.0.0.1.
fn regex_like_replace_addresses(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.starts_with("address = \"10.77.0.") {
                "address = \"127.0.0.1\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// 10 MB of text in a tool argument over stdio: a clear isError, no
/// command run, and the server keeps answering.
#[test]
fn stdio_ten_megabyte_argument_is_refused_and_serving_continues() {
    let mut child = Command::new(codeb_bin())
        .arg("--config")
        .arg(&testbed().config)
        .arg("serve")
        .env("CODEB_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
    )
    .unwrap();
    lines.next().unwrap().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "deploy", "arguments": {"project": "a".repeat(10_000_000), "environment": "production", "image": "10.77.0.12:5000/demo:v1"}}});
    writeln!(stdin, "{call}").unwrap();
    let reply: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        reply["result"]["isError"],
        serde_json::json!(true),
        "{}",
        reply.to_string().chars().take(300).collect::<String>()
    );
    let text = reply["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("a value of 10000000 bytes"), "{text}");
    assert!(text.len() < 500, "the error does not echo the input");
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":3,"method":"ping"}}"#).unwrap();
    let pong: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(pong["id"], 3);
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// The scripts that mint keys (`tools/up`, `tools/conformance`) pass labels
/// the key validator accepts: a refused label would break the README's
/// first command, which no other test runs end to end.
#[test]
fn key_labels_in_scripts_are_valid() {
    let mut labels = Vec::new();
    for script in ["tools/up", "tools/conformance"] {
        let text = std::fs::read_to_string(super::common::repo().join(script)).unwrap();
        for part in text.split("--label ").skip(1) {
            let label: String = part
                .trim_start_matches('"')
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ')')
                .collect();
            labels.push((script, label));
        }
    }
    assert!(labels.len() >= 2, "labels found: {labels:?}");
    for (script, label) in labels {
        assert!(
            codeb::mcp::keys::validate_label(&label).is_ok(),
            "{script}: label {label:?} would be refused"
        );
    }
}

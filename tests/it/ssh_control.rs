//! SSH control sockets (DESIGN §8): whoever can write to the control
//! directory can stand in for a server's multiplexing master, so codeb
//! never uses a directory it did not make itself.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::ServiceExt;
use serde_json::json;

use super::common::{call, codeb_bin, error_text, testbed, FAULT_LOCK};

/// Directories planted under the runtime dir by another user — with the
/// names codeb used before, world-writable — stay untouched: codeb makes
/// its own private directory beside them and the SSH calls work.
#[tokio::test(flavor = "multi_thread")]
async fn planted_control_directories_are_never_used() {
    let _guard = FAULT_LOCK.read().await;
    // Short: the sockets inside must fit a Unix socket path.
    let base = std::env::temp_dir().join(format!(
        "sc-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir(&base).unwrap();
    let nobody = 65534;
    let planted: Vec<_> = ["codeb-ssh", "codeb-ssh-0", "codeb"]
        .iter()
        .map(|name| {
            let dir = base.join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            std::os::unix::fs::chown(&dir, Some(nobody), Some(nobody)).unwrap();
            dir
        })
        .collect();
    let config = testbed().config.clone();
    let transport =
        TokioChildProcess::new(tokio::process::Command::new(codeb_bin()).configure(|c| {
            c.arg("--config")
                .arg(&config)
                .arg("serve")
                .env("CODEB_LOG", "warn")
                .env("XDG_RUNTIME_DIR", &base);
        }))
        .expect("spawn codeb serve");
    let client = ().serve(transport).await.expect("stdio initialize");
    // health_check runs a command on every server over SSH.
    let r = call(&client, "health_check", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{}", error_text(&r));
    let text = serde_json::to_string(&r.structured_content).unwrap();
    assert!(text.contains("\"reachable\":true"), "{text}");
    assert!(!text.contains("\"reachable\":false"), "SSH worked: {text}");
    for dir in &planted {
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "codeb used {}: {left:?}", dir.display());
    }
    let own: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !planted.contains(p))
        .collect();
    assert_eq!(own.len(), 1, "one directory of codeb's own: {own:?}");
    let meta = std::fs::symlink_metadata(&own[0]).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o700, "private");
    assert_eq!(meta.uid(), own_uid(), "owned by codeb's user");
    client.cancel().await.unwrap();
    let _ = std::fs::remove_dir_all(&base);
}

/// This process's effective uid (the owner of what it creates).
fn own_uid() -> u32 {
    let probe = std::env::temp_dir().join(format!("uid-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&probe, b"").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    std::fs::remove_file(&probe).unwrap();
    uid
}

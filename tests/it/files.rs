//! Atomic file writes over the real SSH executor: the payload travels on
//! stdin and lands byte for byte with the asked mode.

use codeb::plan::cmd::RemoteCmd;
use codeb::plan::files::{write_file_atomic, TMP_SUFFIX};

use super::app_host::{app_remote, remove_dir, run, run_ok, unique_dir, with_cleanup};
use super::common::FAULT_LOCK;

async fn read_back(remote: &dyn codeb::exec::Remote, path: &str) -> (Vec<u8>, String) {
    let data = run_ok(remote, &RemoteCmd::new("cat").arg("--").arg(path))
        .await
        .stdout;
    let mode = run_ok(
        remote,
        &RemoteCmd::new("stat").args(["-c", "%a %U", "--"]).arg(path),
    )
    .await
    .stdout_text()
    .trim()
    .to_string();
    (data, mode)
}

#[tokio::test(flavor = "multi_thread")]
async fn atomic_write_is_byte_exact_with_its_mode() {
    let _guard = FAULT_LOCK.read().await;
    let (fleet, remote) = app_remote();
    let dir = unique_dir("files");
    let path = format!("{dir}/env/.env.production");
    with_cleanup(
        async {
            // Bytes a shell or an env parser would mangle, plus every byte value.
            let mut data = "A=x=y\nB=\"double\" 'single'\nC=$HOME `id` $(id) \\n\nD=ünï 🚀\r\n\n"
                .as_bytes()
                .to_vec();
            data.extend(0..=255u8);
            for cmd in write_file_atomic(&path, data.clone(), 0o600).unwrap() {
                run_ok(&*remote, &cmd).await;
            }
            assert_eq!(
                read_back(&*remote, &path).await,
                (data, "600 root".to_string())
            );
            let dir_mode = run_ok(
                &*remote,
                &RemoteCmd::new("stat")
                    .args(["-c", "%a", "--"])
                    .arg(format!("{dir}/env")),
            )
            .await
            .stdout_text();
            assert_eq!(dir_mode.trim(), "700");

            // Overwrite with a larger payload than any pipe buffer and a new
            // mode; the temp file is gone afterwards.
            let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
            for cmd in write_file_atomic(&path, big.clone(), 0o640).unwrap() {
                run_ok(&*remote, &cmd).await;
            }
            let (back, mode) = read_back(&*remote, &path).await;
            assert!(back == big, "3 MB payload differs after the round trip");
            assert_eq!(mode, "640 root");
            let tmp = run(
                &*remote,
                &RemoteCmd::new("test")
                    .arg("-e")
                    .arg(format!("{path}{TMP_SUFFIX}")),
            )
            .await;
            assert_eq!(tmp.status, Some(1), "the temp file was renamed away");

            // A command that fails without reading its stdin (no such
            // directory) reports its failure; the unread payload does not
            // block the executor.
            let install = write_file_atomic(&format!("{dir}/missing/x/f"), big, 0o600)
                .unwrap()
                .remove(1);
            let out = run(&*remote, &install).await;
            assert!(!out.success());
            assert!(
                out.stderr_tail().contains("No such file or directory"),
                "{}",
                out.stderr_tail()
            );

            // An empty payload makes an empty file.
            for cmd in write_file_atomic(&path, Vec::new(), 0o600).unwrap() {
                run_ok(&*remote, &cmd).await;
            }
            assert_eq!(
                read_back(&*remote, &path).await,
                (Vec::new(), "600 root".to_string())
            );
        },
        async {
            let _ = remote.run(&remove_dir(&dir)).await;
            fleet.close().await;
        },
    )
    .await;
}

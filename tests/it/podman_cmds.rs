//! podman commands over the real SSH executor on the app host (podman
//! 4.3.1): pull and its digest, network exists/create, run with labels, limits and an env
//! file, probe, logs, rm. Uses its own container, network, directory and a
//! port in 5400-5499, and removes them even when an assertion fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use codeb::exec::Remote;
use codeb::plan::cmd::RemoteCmd;
use codeb::plan::files::write_file_atomic;
use codeb::plan::podman::{
    image_digests, logs, network_create, network_exists, parse_http_status, parse_image_digest,
    parse_ps, parse_pulled_id, pinned_image, probe_http, ps, pull, rm_force, run as podman_run,
    RunSpec, LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_PROJECT, LABEL_SLOT,
};

use super::app_host::{app_remote, remove_dir, run, run_ok, unique_dir, with_cleanup};
use super::common::{testbed, FAULT_LOCK};

/// Polls a probe until it reports `want` or `deadline` passes; returns the last status.
async fn probe_until(remote: &dyn Remote, port: u16, path: &str, want: u16) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(remote, &probe_http(port, path, 2).unwrap()).await;
        let status = parse_http_status(&out.stdout_text());
        if status == Some(want) || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_network_run_probe_logs_rm() {
    let _guard = FAULT_LOCK.read().await;
    let (fleet, remote) = app_remote();
    let registry = testbed().status["registry"]
        .as_str()
        .expect("registry")
        .to_string();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let project = format!("wtp-{}", &id[..8]);
    let name = format!("{project}-preview-blue");
    let network = format!("wtp-net-{}", &id[..8]);
    // Low collision risk: preview ports are allocated lowest first from 5000.
    let port = 5400 + (u16::from_str_radix(&id[..4], 16).unwrap() % 100);
    let dir = unique_dir("podman");
    let env_file = format!("{dir}/.env.preview");

    with_cleanup(
        async {
            // pull: a real tag succeeds and prints the image id; a missing one
            // fails and says why.
            let image = format!("{registry}/demo:v1");
            let out = run_ok(&*remote, &pull(&image).unwrap()).await;
            assert_eq!(out.stdout_text().trim().len(), 64, "{}", out.stdout_text());
            // Its digest, read by image id, names the same image in the
            // repository: pulling REPOSITORY@DIGEST gives that id again.
            let id = parse_pulled_id(&out.stdout_text()).unwrap();
            let out = run_ok(&*remote, &image_digests(&id).unwrap()).await;
            let digest = parse_image_digest(&out.stdout_text(), &image).unwrap();
            let pinned = pinned_image(&image, &digest).unwrap();
            assert_eq!(pinned, format!("{registry}/demo@{digest}"));
            let out = run_ok(&*remote, &pull(&pinned).unwrap()).await;
            assert_eq!(parse_pulled_id(&out.stdout_text()).unwrap(), id);
            let out = run(&*remote, &pull(&format!("{registry}/demo:wtp-missing")).unwrap()).await;
            assert!(!out.success());
            assert!(out.stderr_tail().contains("manifest unknown"), "{}", out.stderr_tail());

            // network: absent, created, present; a second create fails (4.3
            // has no --ignore), which is why callers check first.
            assert_eq!(run(&*remote, &network_exists(&network)).await.status, Some(1));
            run_ok(&*remote, &network_create(&network)).await;
            assert_eq!(run(&*remote, &network_exists(&network)).await.status, Some(0));
            assert!(!run(&*remote, &network_create(&network)).await.success());

            // The env file, written atomically, reaches the container literally.
            for cmd in write_file_atomic(&env_file, b"WTP_KEY=a=b \"c\" $HOME\n".to_vec(), 0o600).unwrap() {
                run_ok(&*remote, &cmd).await;
            }

            let spec = RunSpec {
                name: name.clone(),
                image: image.clone(),
                labels: BTreeMap::from([
                    (LABEL_PROJECT.to_string(), project.clone()),
                    (LABEL_ENVIRONMENT.to_string(), "preview".to_string()),
                    (LABEL_SLOT.to_string(), "blue".to_string()),
                    (LABEL_DEPLOYMENT.to_string(), "wtp 1".to_string()),
                ]),
                network: network.clone(),
                host_port: port,
                container_port: 3000,
                memory: "64m".into(),
                cpus: "0.5".into(),
                env_file: Some(env_file.clone()),
                env_secrets: Vec::new(),
            };
            // Replacing a slot starts with removing whatever holds the name.
            run_ok(&*remote, &rm_force(&name).unwrap()).await;
            let out = run_ok(&*remote, &podman_run(&spec).unwrap()).await;
            assert_eq!(out.stdout_text().trim().len(), 64, "container id: {}", out.stdout_text());

            assert_eq!(probe_until(&*remote, port, "/health", 200).await, Some(200));
            assert_eq!(probe_until(&*remote, port, "/", 200).await, Some(200));
            assert_eq!(probe_until(&*remote, port, "/wtp-nothing", 404).await, Some(404));

            // What podman reports: running, labelled, published on the port.
            let listed = parse_ps(&run_ok(&*remote, &ps(Some(&project)).unwrap()).await.stdout_text())
                .unwrap();
            assert_eq!(listed.len(), 1, "{listed:?}");
            let c = &listed[0];
            assert_eq!(c.name, name);
            assert_eq!(c.state, "running");
            assert_eq!(c.host_ports, vec![port]);
            assert_eq!(c.labels.get(LABEL_DEPLOYMENT).map(String::as_str), Some("wtp 1"));
            assert_eq!(c.labels.get(LABEL_SLOT).map(String::as_str), Some("blue"));

            // Limits, restart policy, network and env as podman applied them.
            let inspect = run_ok(
                &*remote,
                &RemoteCmd::new("podman").args([
                    "inspect",
                    "--format",
                    "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.LogConfig.Size}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
                    "--",
                    &name,
                ]),
            )
            .await
            .stdout_text();
            assert_eq!(
                inspect.trim(),
                format!("67108864 500000000 always 10MB {network}")
            );
            let env = run_ok(
                &*remote,
                &RemoteCmd::new("podman").args(["exec", "--", &name, "/bin/busybox", "env"]),
            )
            .await
            .stdout_text();
            assert!(
                env.lines().any(|l| l == "WTP_KEY=a=b \"c\" $HOME"),
                "{env}"
            );

            // logs: bounded tail, exit 0 (busybox httpd logs nothing).
            run_ok(&*remote, &logs(&name, 50).unwrap()).await;

            // rm: removes the running container at once; again is a no-op.
            let started = Instant::now();
            run_ok(&*remote, &rm_force(&name).unwrap()).await;
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
            run_ok(&*remote, &rm_force(&name).unwrap()).await;
            let out = run(&*remote, &probe_http(port, "/health", 2).unwrap()).await;
            assert_eq!(parse_http_status(&out.stdout_text()), None, "nothing answers after rm");
            assert!(!out.success());
            let out = run(&*remote, &logs(&name, 5).unwrap()).await;
            assert!(out.stderr_tail().contains("no container"), "{}", out.stderr_tail());
        },
        async {
            let _ = remote.run(&rm_force(&name).unwrap()).await;
            let _ = remote
                .run(&RemoteCmd::new("podman").args(["network", "rm", "-f", "--", &network]))
                .await;
            let _ = remote.run(&remove_dir(&dir)).await;
            fleet.close().await;
        },
    )
    .await;
}

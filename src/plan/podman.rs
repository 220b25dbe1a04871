//! podman commands (DESIGN §2) and the parsing of their output.
//!
//! Every builder here was run by hand against the testbed's podman 4.3.1
//! (Debian 12, CNI networking, runc) and is exercised over SSH by
//! `tests/it/podman_cmds.rs`. Facts of that version the builders rely on:
//! - `--` before the image (`podman run ... -- IMAGE`, `podman pull --
//!   IMAGE`) and before names (`rm`, `logs`, `network exists|create`) is
//!   accepted, so no value can be read as an option.
//! - `podman rm -f --ignore --time 0` removes a running container at once
//!   and exits 0 when the container does not exist.
//! - `podman network create` has no `--ignore` in 4.3 (it exits 125 when
//!   the network exists): check with `network exists` first.
//! - A `podman run` that fails after creating the container (exit 126, e.g.
//!   a memory limit below the container's usage) leaves the created
//!   container behind holding the name: remove it before retrying.
//! - `--env-file` takes `KEY=VALUE` lines literally: no quote removal, no
//!   `$` expansion, `#` lines and empty lines skipped.
//! - `podman-restart.service` of 4.3 restarts only containers with
//!   `--restart always` at boot (`--filter restart-policy=always`), which is
//!   why `run` uses `always` rather than `unless-stopped`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{describe_input, validate_project_name, Invalid};
use crate::plan::cmd::RemoteCmd;
use crate::plan::files::validate_remote_path;

/// Label naming the project a container belongs to.
pub const LABEL_PROJECT: &str = "codeb.project";
/// Label naming the environment.
pub const LABEL_ENVIRONMENT: &str = "codeb.environment";
/// Label naming the slot.
pub const LABEL_SLOT: &str = "codeb.slot";
/// Label naming the deployment id.
pub const LABEL_DEPLOYMENT: &str = "codeb.deployment";
/// Time limit of a listing.
pub const PODMAN_PS_TIMEOUT: Duration = Duration::from_secs(15);
/// The network every codeb container joins (DESIGN §2).
pub const NETWORK: &str = "codeb-main";
/// Time limit of an image pull (large images over a slow link).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(300);
/// Time limit of `podman run -d`: it returns once the container started;
/// the image is already local (`--pull never`).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Time limit of removing a container (killed at once, `--time 0`).
pub const RM_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of `podman network exists|create`.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(15);
/// Time limit of reading a container's log tail.
pub const LOGS_TIMEOUT: Duration = Duration::from_secs(15);
/// Most log lines `logs` asks for.
pub const LOGS_MAX_TAIL: u32 = 1000;
/// Extra time over curl's own `--max-time` for a probe command.
pub const PROBE_MARGIN: Duration = Duration::from_secs(2);
/// Longest curl `--max-time` a probe may ask for, in seconds.
pub const PROBE_MAX_TIME_SECS: u32 = 60;
/// Restart policy of codeb containers: `always`, because podman 4.3's
/// `podman-restart.service` brings back only `always` containers after a
/// reboot; podman does not restart a container stopped with `podman stop`,
/// so at runtime it behaves like Docker's `unless-stopped`.
pub const RESTART_POLICY: &str = "always";
/// Size at which podman rotates a container's log file (k8s-file driver),
/// so a chatty app cannot fill the disk.
pub const LOG_MAX_SIZE: &str = "10mb";
/// Host address the slot ports are published on (DESIGN §2).
pub const PUBLISH_ADDRESS: &str = "127.0.0.1";
/// Longest image reference accepted.
pub const IMAGE_REF_MAX_LEN: usize = 255;
/// Longest container or network name accepted.
pub const CONTAINER_NAME_MAX_LEN: usize = 128;
/// podman refuses memory limits below 6 MiB.
const MEMORY_MIN_BYTES: u64 = 6 << 20;

/// Lists every codeb container, or only one project's (`podman ps -a`).
pub fn ps(project: Option<&str>) -> Result<RemoteCmd, Invalid> {
    let filter = match project {
        Some(p) => {
            validate_project_name(p)?;
            format!("label={LABEL_PROJECT}={p}")
        }
        None => format!("label={LABEL_PROJECT}"),
    };
    Ok(RemoteCmd::new("podman")
        .args(["ps", "-a", "--format", "json", "--filter"])
        .arg(filter)
        .timeout(PODMAN_PS_TIMEOUT))
}

/// One container as `podman ps --format json` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// Human status (`Up 3 minutes`).
    pub status: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Host ports published.
    pub host_ports: Vec<u16>,
    /// Host address of each published port, in the order of `host_ports`
    /// (empty when podman does not say, e.g. "" for all addresses).
    pub host_ips: Vec<String>,
}

#[derive(Deserialize)]
struct PsEntry {
    #[serde(rename = "Names", default)]
    names: Vec<String>,
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "State", default)]
    state: String,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Ports", default)]
    ports: Option<Vec<PsPort>>,
}

#[derive(Deserialize)]
struct PsPort {
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_ip: String,
}

/// Parses `podman ps --format json` output.
pub fn parse_ps(stdout: &str) -> Result<Vec<Container>, String> {
    let trimmed = stdout.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(Vec::new());
    }
    let entries: Vec<PsEntry> =
        serde_json::from_str(trimmed).map_err(|e| format!("unexpected podman ps output: {e}"))?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let ports = e.ports.unwrap_or_default();
            Container {
                name: e.names.into_iter().next().unwrap_or_default(),
                image: e.image,
                state: e.state,
                status: e.status,
                labels: e.labels.unwrap_or_default(),
                host_ports: ports.iter().map(|p| p.host_port).collect(),
                host_ips: ports.into_iter().map(|p| p.host_ip).collect(),
            }
        })
        .collect())
}

fn invalid_image(image: &str, why: &str) -> Invalid {
    Invalid(format!(
        "image reference {} is invalid: {why}; expected REGISTRY[:PORT]/NAME[:TAG][@sha256:DIGEST] with a lowercase name, e.g. 10.77.0.12:5000/shop:v1",
        describe_input(image)
    ))
}

/// Checks a fully qualified image reference:
/// `registry[:port]/name[/name...][:tag][@sha256:<64 hex>]`.
///
/// The registry part is required (it contains a `.` or a `:`, or is
/// `localhost`), so podman never resolves a short name through its search
/// list. Name components follow the OCI distribution grammar (lowercase
/// letters and digits joined by `.`, `_`, `__` or dashes); tags are
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`. At most `IMAGE_REF_MAX_LEN` bytes.
pub fn validate_image_ref(image: &str) -> Result<(), Invalid> {
    if image.is_empty() {
        return Err(invalid_image(image, "it is empty"));
    }
    if image.len() > IMAGE_REF_MAX_LEN {
        return Err(invalid_image(
            image,
            &format!("it is longer than {IMAGE_REF_MAX_LEN} characters"),
        ));
    }
    if !image.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid_image(
            image,
            "it contains whitespace, control or non-ASCII characters",
        ));
    }
    if image.starts_with('-') {
        return Err(invalid_image(image, "it starts with '-'"));
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !ok {
            return Err(invalid_image(
                image,
                "the digest is not sha256: followed by 64 lowercase hex digits",
            ));
        }
    }
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(colon) if last_slash.is_none_or(|s| colon > s) => {
            (&name_tag[..colon], Some(&name_tag[colon + 1..]))
        }
        _ => (name_tag, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(invalid_image(
                image,
                "the tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            ));
        }
    }
    let Some((registry, path)) = name.split_once('/') else {
        return Err(invalid_image(
            image,
            "it names no registry (write the registry address first)",
        ));
    };
    if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
        return Err(invalid_image(
            image,
            &format!(
                "{} is not a registry address (it needs a '.' or a ':PORT', or is localhost)",
                describe_input(registry)
            ),
        ));
    }
    validate_registry(registry).map_err(|why| invalid_image(image, &why))?;
    for component in path.split('/') {
        if !is_name_component(component) {
            return Err(invalid_image(
                image,
                &format!(
                    "name component {} must be lowercase letters and digits, joined by '.', '_', '__' or '-'",
                    describe_input(component)
                ),
            ));
        }
    }
    Ok(())
}

/// `host[:port]`, host labels of letters, digits and inner '-'.
fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !host_ok {
        return Err(format!(
            "registry host {} is not a host name or IPv4 address",
            describe_input(host)
        ));
    }
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !ok {
            return Err(format!(
                "registry port {} is not a number from 1 to 65535",
                describe_input(p)
            ));
        }
    }
    Ok(())
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_name_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// podman's own name rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// `CONTAINER_NAME_MAX_LEN` characters.
fn is_podman_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= CONTAINER_NAME_MAX_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Checks a container name (podman's rule; it cannot start with '-').
pub fn validate_container_name(name: &str) -> Result<(), Invalid> {
    if is_podman_name(name) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "container name {} is invalid: use 1-{CONTAINER_NAME_MAX_LEN} letters, digits, '_', '.' or '-', starting with a letter or digit",
            describe_input(name)
        )))
    }
}

/// Checks a network name (the same rule as container names).
pub fn validate_network_name(name: &str) -> Result<(), Invalid> {
    if is_podman_name(name) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "network name {} is invalid: use 1-{CONTAINER_NAME_MAX_LEN} letters, digits, '_', '.' or '-', starting with a letter or digit",
            describe_input(name)
        )))
    }
}

/// Checks a label key: lowercase reverse-DNS style (`codeb.project`).
pub fn validate_label_key(key: &str) -> Result<(), Invalid> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && is_lower_alnum(key.as_bytes()[0])
        && is_lower_alnum(key.as_bytes()[key.len() - 1])
        && key
            .bytes()
            .all(|b| is_lower_alnum(b) || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "label key {} is invalid: use lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
            describe_input(key)
        )))
    }
}

/// Checks a label value: at most 256 bytes, no control characters.
pub fn validate_label_value(value: &str) -> Result<(), Invalid> {
    if value.len() <= 256 && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "label value {} is invalid: at most 256 bytes without control characters",
            describe_input(value)
        )))
    }
}

/// Checks a memory limit: digits and a unit `k`, `m` or `g` (`512m`,
/// `1g`), at least 6 MiB (podman's minimum).
pub fn validate_memory(memory: &str) -> Result<(), Invalid> {
    let bad = || {
        Invalid(format!(
            "memory limit {} is invalid: write a number with unit k, m or g (e.g. 512m or 1g), at least 6m",
            describe_input(memory)
        ))
    };
    let (digits, unit) = memory.split_at(memory.len().saturating_sub(1));
    let shift = match unit {
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(bad()),
    };
    if digits.is_empty()
        || digits.len() > 9
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    if (n << shift) < MEMORY_MIN_BYTES {
        return Err(bad());
    }
    Ok(())
}

/// Checks a CPU limit: a positive decimal with at most 3 fraction digits
/// (`1`, `0.5`, `2.25`), at most 1024.
pub fn validate_cpus(cpus: &str) -> Result<(), Invalid> {
    let bad = || {
        Invalid(format!(
            "cpu limit {} is invalid: write a positive number such as 1 or 0.5 (at most 3 decimals, at most 1024)",
            describe_input(cpus)
        ))
    };
    let (int, frac) = match cpus.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (cpus, None),
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(int, 4) || frac.is_some_and(|f| !digits(f, 3)) {
        return Err(bad());
    }
    let v: f64 = cpus.parse().map_err(|_| bad())?;
    if v <= 0.0 || v > 1024.0 {
        return Err(bad());
    }
    Ok(())
}

/// Pulls an image (`podman pull -q -- IMAGE`); stdout is the image id,
/// stderr the reason on failure (e.g. `manifest unknown`).
pub fn pull(image: &str) -> Result<RemoteCmd, Invalid> {
    validate_image_ref(image)?;
    Ok(RemoteCmd::new("podman")
        .args(["pull", "-q", "--"])
        .arg(image)
        .timeout(PULL_TIMEOUT))
}

/// Time limit of reading a local image's digests.
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The repository of a valid image reference: the reference without its
/// tag and digest (`10.77.0.12:5000/demo:v1@sha256:…` → `10.77.0.12:5000/demo`).
pub fn image_repository(image: &str) -> &str {
    let name_tag = image.split_once('@').map_or(image, |(n, _)| n);
    match name_tag.rfind(':') {
        Some(colon) if name_tag.rfind('/').is_none_or(|s| colon > s) => &name_tag[..colon],
        _ => name_tag,
    }
}

/// The digest a reference names (`…@sha256:…`), if it names one.
pub fn image_ref_digest(image: &str) -> Option<&str> {
    image.split_once('@').map(|(_, d)| d)
}

/// Checks a manifest digest: `sha256:` and 64 lowercase hex digits.
pub fn validate_digest(digest: &str) -> Result<(), Invalid> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "image digest {} is invalid: expected sha256: and 64 lowercase hex digits",
            describe_input(digest)
        )))
    }
}

/// `REPOSITORY@DIGEST`: the reference that names exactly the image
/// `digest` of `image`'s repository, whatever its tags point at now.
pub fn pinned_image(image: &str, digest: &str) -> Result<String, Invalid> {
    validate_digest(digest)?;
    let pinned = format!("{}@{digest}", image_repository(image));
    validate_image_ref(&pinned)?;
    Ok(pinned)
}

/// Reads the digests of a local image by its id (what `pull` printed):
/// `podman image inspect --format '{{.Digest}}{{range .RepoDigests}} {{.}}{{end}}' -- ID`
/// prints the digest of the manifest it was pulled by, then every
/// `repository@digest` it is known as (`parse_image_digest`).
pub fn image_digests(image_id: &str) -> Result<RemoteCmd, Invalid> {
    if !is_image_id(image_id) {
        return Err(Invalid(format!(
            "image id {} is invalid: expected 64 lowercase hex digits",
            describe_input(image_id)
        )));
    }
    Ok(RemoteCmd::new("podman")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Digest}}{{range .RepoDigests}} {{.}}{{end}}",
            "--",
        ])
        .arg(image_id)
        .timeout(INSPECT_TIMEOUT))
}

fn is_image_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The image id `podman pull -q` printed: its last line, 64 hex digits.
pub fn parse_pulled_id(stdout: &str) -> Result<String, String> {
    let last = stdout.lines().map(str::trim).rfind(|l| !l.is_empty());
    match last {
        Some(id) if is_image_id(id) => Ok(id.to_string()),
        _ => Err(format!(
            "podman pull printed no image id (expected 64 hex digits, got {})",
            describe_input(stdout.trim())
        )),
    }
}

/// The digest `image` was pulled as, from `image_digests` output: the
/// digest `image` names, if it names one (and podman knows the image by
/// it); else the digest podman records for the pull when the image is
/// known by it in `image`'s repository, else the one digest it is known
/// by there, else the recorded digest. `REPOSITORY@DIGEST` of the answer
/// names exactly the pulled image.
pub fn parse_image_digest(stdout: &str, image: &str) -> Result<String, String> {
    let mut tokens = stdout.split_whitespace();
    let primary = tokens.next().filter(|d| validate_digest(d).is_ok());
    let repository = image_repository(image);
    let in_repository: Vec<&str> = tokens
        .filter_map(|t| t.split_once('@'))
        .filter(|(repo, d)| *repo == repository && validate_digest(d).is_ok())
        .map(|(_, d)| d)
        .collect();
    let known = |d: &str| primary == Some(d) || in_repository.contains(&d);
    if let Some(wanted) = image_ref_digest(image) {
        return if known(wanted) {
            Ok(wanted.to_string())
        } else {
            Err(format!(
                "the image pulled as {image} is not known by digest {wanted} (podman reports {})",
                describe_input(stdout.trim())
            ))
        };
    }
    match (primary, in_repository.as_slice()) {
        (Some(p), list) if list.contains(&p) => Ok(p.to_string()),
        (_, [only]) => Ok(only.to_string()),
        (Some(p), _) => Ok(p.to_string()),
        (None, _) => Err(format!(
            "podman reports no digest for the image pulled as {image} (got {}); codeb runs images by digest, so push it to a registry and deploy it from there",
            describe_input(stdout.trim())
        )),
    }
}

/// Exits 0 when the network exists, 1 when it does not.
/// `name` is codeb's own (`NETWORK`) or from validated config.
pub fn network_exists(name: &str) -> RemoteCmd {
    RemoteCmd::new("podman")
        .args(["network", "exists", "--"])
        .arg(name)
        .timeout(NETWORK_TIMEOUT)
}

/// Creates a bridge network; exits 125 when it already exists (podman 4.3
/// has no `--ignore` here), so run `network_exists` first and, when create
/// fails, check again before reporting (another codeb may have won).
pub fn network_create(name: &str) -> RemoteCmd {
    RemoteCmd::new("podman")
        .args(["network", "create", "--"])
        .arg(name)
        .timeout(NETWORK_TIMEOUT)
}

/// Removes a container whether it runs or not, and succeeds when it does
/// not exist: `podman rm -f --ignore --time 0 -- NAME`. `--time 0` kills at
/// once: a container being replaced is no longer served traffic.
pub fn rm_force(container: &str) -> Result<RemoteCmd, Invalid> {
    validate_container_name(container)?;
    Ok(RemoteCmd::new("podman")
        .args(["rm", "-f", "--ignore", "--time", "0", "--"])
        .arg(container)
        .timeout(RM_TIMEOUT))
}

/// Everything `run` needs to start one slot's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Container name, `{project}-{environment}-{slot}`.
    pub name: String,
    /// Fully qualified image reference, already pulled.
    pub image: String,
    /// Labels (`codeb.project`, ...), in key order.
    pub labels: BTreeMap<String, String>,
    /// Network to join (`NETWORK`).
    pub network: String,
    /// Host port, published on `PUBLISH_ADDRESS` only.
    pub host_port: u16,
    /// Port the app listens on inside the container.
    pub container_port: u16,
    /// Memory limit (`512m`).
    pub memory: String,
    /// CPU limit (`1`, `0.5`).
    pub cpus: String,
    /// Absolute path of the env file on the server, if any.
    pub env_file: Option<String>,
    /// podman secrets exposed as environment variables: (secret name,
    /// variable name). Values with line breaks travel this way.
    pub env_secrets: Vec<(String, String)>,
}

/// Starts a slot's container, detached:
///
/// `podman run -d --name N [--label K=V]... --network NET
///  -p 127.0.0.1:HOST:CONT --memory M --cpus C [--env-file F]
///  --restart always --pull never --log-opt max-size=10mb -- IMAGE`
///
/// `--pull never` because the image was pulled by `pull` under its own
/// time limit; a run never talks to the registry. stdout is the new
/// container's id.
pub fn run(spec: &RunSpec) -> Result<RemoteCmd, Invalid> {
    validate_container_name(&spec.name)?;
    validate_image_ref(&spec.image)?;
    validate_network_name(&spec.network)?;
    for (k, v) in &spec.labels {
        validate_label_key(k)?;
        validate_label_value(v)?;
    }
    if spec.host_port == 0 || spec.container_port == 0 {
        return Err(Invalid("ports must be from 1 to 65535".into()));
    }
    validate_memory(&spec.memory)?;
    validate_cpus(&spec.cpus)?;
    if let Some(f) = &spec.env_file {
        validate_remote_path(f)?;
    }
    for (secret, var) in &spec.env_secrets {
        validate_secret_name(secret)?;
        crate::plan::envvars::validate_key(var)?;
    }
    let mut c = RemoteCmd::new("podman")
        .args(["run", "-d", "--name"])
        .arg(spec.name.clone());
    for (k, v) in &spec.labels {
        c = c.arg("--label").arg(format!("{k}={v}"));
    }
    c = c
        .arg("--network")
        .arg(spec.network.clone())
        .arg("-p")
        .arg(format!(
            "{PUBLISH_ADDRESS}:{}:{}",
            spec.host_port, spec.container_port
        ))
        .arg("--memory")
        .arg(spec.memory.clone())
        .arg("--cpus")
        .arg(spec.cpus.clone());
    if let Some(f) = &spec.env_file {
        c = c.arg("--env-file").arg(f.clone());
    }
    for (secret, var) in &spec.env_secrets {
        c = c
            .arg("--secret")
            .arg(format!("{secret},type=env,target={var}"));
    }
    Ok(
        c.args(["--restart", RESTART_POLICY, "--pull", "never", "--log-opt"])
            .arg(format!("max-size={LOG_MAX_SIZE}"))
            .arg("--")
            .arg(spec.image.clone())
            .timeout(RUN_TIMEOUT),
    )
}

/// Checks a podman secret name: a container name, `-env-`, a variable
/// name (what `envvars::secret_name` makes), at most 253 bytes.
pub fn validate_secret_name(name: &str) -> Result<(), Invalid> {
    let ok = name.len() <= 253
        && name.split_once("-env-").is_some_and(|(container, key)| {
            validate_container_name(container).is_ok()
                && crate::plan::envvars::validate_key(key).is_ok()
        });
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "podman secret name {} is invalid",
            describe_input(name)
        )))
    }
}

/// Creates a secret from stdin: `podman secret create -- NAME -`; the value
/// travels only as the command's stdin.
pub fn secret_create(name: &str, value: Vec<u8>) -> Result<RemoteCmd, Invalid> {
    validate_secret_name(name)?;
    Ok(RemoteCmd::new("podman")
        .args(["secret", "create", "--"])
        .arg(name)
        .arg("-")
        .stdin(value)
        .timeout(RM_TIMEOUT))
}

/// Lists secret names, one per line: `podman secret ls --format {{.Name}}`.
pub fn secret_names() -> RemoteCmd {
    RemoteCmd::new("podman")
        .args(["secret", "ls", "--format", "{{.Name}}"])
        .timeout(RM_TIMEOUT)
}

/// Removes secrets: `podman secret rm -- NAME...` (all must exist).
pub fn secret_rm(names: &[String]) -> Result<RemoteCmd, Invalid> {
    if names.is_empty() {
        return Err(Invalid("no secret to remove".into()));
    }
    for n in names {
        validate_secret_name(n)?;
    }
    Ok(RemoteCmd::new("podman")
        .args(["secret", "rm", "--"])
        .args(names.iter().cloned())
        .timeout(RM_TIMEOUT))
}

/// The last `tail` lines of a container's log (1..=`LOGS_MAX_TAIL`):
/// `podman logs --tail N -- NAME`. The app's stdout arrives on stdout, its
/// stderr on stderr.
pub fn logs(container: &str, tail: u32) -> Result<RemoteCmd, Invalid> {
    validate_container_name(container)?;
    if tail == 0 || tail > LOGS_MAX_TAIL {
        return Err(Invalid(format!(
            "log tail of {tail} lines is invalid: ask for 1 to {LOGS_MAX_TAIL} lines"
        )));
    }
    Ok(RemoteCmd::new("podman")
        .args(["logs", "--tail"])
        .arg(tail.to_string())
        .arg("--")
        .arg(container)
        .timeout(LOGS_TIMEOUT))
}

/// Checks an HTTP path for probes: starts with '/', printable ASCII
/// without spaces, at most 512 bytes.
pub fn validate_http_path(path: &str) -> Result<(), Invalid> {
    if path.starts_with('/') && path.len() <= 512 && path.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "health path {} is invalid: it must start with '/' and hold only printable ASCII without spaces (at most 512 bytes)",
            describe_input(path)
        )))
    }
}

/// Probes a slot directly on the app server, bypassing Caddy: curl against
/// `http://127.0.0.1:PORT{path}`, printing only the status code (`000` when
/// nothing answered; curl then also exits non-zero). Read the result with
/// `parse_http_status`. Proxies are bypassed (`--noproxy *`).
pub fn probe_http(port: u16, path: &str, max_time_secs: u32) -> Result<RemoteCmd, Invalid> {
    if port == 0 {
        return Err(Invalid("probe port must be from 1 to 65535".into()));
    }
    validate_http_path(path)?;
    if max_time_secs == 0 || max_time_secs > PROBE_MAX_TIME_SECS {
        return Err(Invalid(format!(
            "probe time limit of {max_time_secs} s is invalid: use 1 to {PROBE_MAX_TIME_SECS} s"
        )));
    }
    Ok(RemoteCmd::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--noproxy",
            "*",
            "--max-time",
        ])
        .arg(max_time_secs.to_string())
        .arg("--")
        .arg(format!("http://{PUBLISH_ADDRESS}:{port}{path}"))
        .timeout(Duration::from_secs(max_time_secs.into()) + PROBE_MARGIN))
}

/// The HTTP status a `probe_http` printed; `None` when nothing answered
/// (`000`) or the output is not a status code.
pub fn parse_http_status(stdout: &str) -> Option<u16> {
    let t = stdout.trim();
    if t.len() != 3 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok().filter(|&s| s >= 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_ps() {
        assert_eq!(
            ps(Some("shop")).unwrap().argv(),
            vec![
                "podman",
                "ps",
                "-a",
                "--format",
                "json",
                "--filter",
                "label=codeb.project=shop"
            ]
        );
        assert_eq!(
            ps(None).unwrap().argv(),
            vec![
                "podman",
                "ps",
                "-a",
                "--format",
                "json",
                "--filter",
                "label=codeb.project"
            ]
        );
    }

    #[test]
    fn ps_refuses_bad_project() {
        for bad in ["-rm", "a,b", "shop\n", ""] {
            assert!(ps(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_podman_json() {
        let out = r#"[{"Id":"abc","Names":["shop-production-blue"],"Image":"10.77.0.12:5000/demo:v1",
            "State":"running","Status":"Up 2 minutes","Labels":{"codeb.project":"shop","codeb.slot":"blue"},
            "Ports":[{"host_ip":"127.0.0.1","container_port":3000,"host_port":4100,"range":1,"protocol":"tcp"}]}]"#;
        let c = parse_ps(out).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "shop-production-blue");
        assert_eq!(c[0].host_ports, vec![4100]);
        assert_eq!(c[0].host_ips, vec!["127.0.0.1"]);
        assert_eq!(
            c[0].labels.get(LABEL_SLOT).map(String::as_str),
            Some("blue")
        );
        assert_eq!(parse_ps("[]\n").unwrap(), vec![]);
        assert_eq!(parse_ps("").unwrap(), vec![]);
        assert!(parse_ps("not json").is_err());
    }

    fn spec() -> RunSpec {
        RunSpec {
            name: "shop-production-blue".into(),
            image: "10.77.0.12:5000/shop:v1".into(),
            labels: BTreeMap::from([
                (LABEL_PROJECT.to_string(), "shop".to_string()),
                (LABEL_ENVIRONMENT.to_string(), "production".to_string()),
                (LABEL_SLOT.to_string(), "blue".to_string()),
                (LABEL_DEPLOYMENT.to_string(), "42".to_string()),
            ]),
            network: NETWORK.into(),
            host_port: 4100,
            container_port: 3000,
            memory: "512m".into(),
            cpus: "1".into(),
            env_file: Some("/opt/codeb/env/shop/.env.production".into()),
            env_secrets: vec![("shop-production-blue-env-TLS_KEY".into(), "TLS_KEY".into())],
        }
    }

    #[test]
    fn golden_pull() {
        let c = pull("10.77.0.12:5000/demo:v1").unwrap();
        assert_eq!(
            c.argv(),
            vec!["podman", "pull", "-q", "--", "10.77.0.12:5000/demo:v1"]
        );
        assert_eq!(c.timeout, Some(PULL_TIMEOUT));
        assert!(pull("--all-tags").is_err());
        assert!(pull("demo:v1").is_err());
    }

    #[test]
    fn golden_network() {
        assert_eq!(
            network_exists(NETWORK).argv(),
            vec!["podman", "network", "exists", "--", "codeb-main"]
        );
        assert_eq!(
            network_create(NETWORK).argv(),
            vec!["podman", "network", "create", "--", "codeb-main"]
        );
        assert_eq!(network_create(NETWORK).timeout, Some(NETWORK_TIMEOUT));
    }

    #[test]
    fn golden_rm_force() {
        assert_eq!(
            rm_force("shop-production-blue").unwrap().argv(),
            vec![
                "podman",
                "rm",
                "-f",
                "--ignore",
                "--time",
                "0",
                "--",
                "shop-production-blue"
            ]
        );
        assert!(rm_force("-a").is_err());
        assert!(rm_force("").is_err());
    }

    #[test]
    fn golden_run() {
        let c = run(&spec()).unwrap();
        assert_eq!(
            c.argv(),
            vec![
                "podman",
                "run",
                "-d",
                "--name",
                "shop-production-blue",
                "--label",
                "codeb.deployment=42",
                "--label",
                "codeb.environment=production",
                "--label",
                "codeb.project=shop",
                "--label",
                "codeb.slot=blue",
                "--network",
                "codeb-main",
                "-p",
                "127.0.0.1:4100:3000",
                "--memory",
                "512m",
                "--cpus",
                "1",
                "--env-file",
                "/opt/codeb/env/shop/.env.production",
                "--secret",
                "shop-production-blue-env-TLS_KEY,type=env,target=TLS_KEY",
                "--restart",
                "always",
                "--pull",
                "never",
                "--log-opt",
                "max-size=10mb",
                "--",
                "10.77.0.12:5000/shop:v1"
            ]
        );
        assert_eq!(c.timeout, Some(RUN_TIMEOUT));
        let mut s = spec();
        s.env_file = None;
        s.labels.clear();
        s.cpus = "0.5".into();
        let argv = run(&s).unwrap().argv();
        assert!(!argv.contains(&"--env-file".to_string()));
        assert!(!argv.contains(&"--label".to_string()));
        assert!(argv.windows(2).any(|w| w == ["--cpus", "0.5"]));
    }

    /// One way to spoil a valid spec, named.
    type Spoil = (&'static str, fn(&mut RunSpec));

    #[test]
    fn run_refuses_bad_values() {
        let cases: Vec<Spoil> = vec![
            ("name", |s| s.name = "-x".into()),
            ("image", |s| s.image = "Shop:v1".into()),
            ("network", |s| s.network = "--net=host".into()),
            ("label key", |s| {
                s.labels.insert("-x".into(), "y".into());
            }),
            ("label value", |s| {
                s.labels.insert("codeb.note".into(), "a\nb".into());
            }),
            ("host port", |s| s.host_port = 0),
            ("container port", |s| s.container_port = 0),
            ("memory", |s| s.memory = "lots".into()),
            ("cpus", |s| s.cpus = "-1".into()),
            ("env file", |s| s.env_file = Some("env".into())),
            ("secret name", |s| {
                s.env_secrets = vec![("x,type=mount".into(), "A".into())]
            }),
            ("secret target", |s| {
                s.env_secrets = vec![("shop-production-blue-env-A".into(), "A,x".into())]
            }),
        ];
        for (what, f) in cases {
            let mut s = spec();
            f(&mut s);
            assert!(run(&s).is_err(), "{what}");
        }
    }

    #[test]
    fn golden_secrets() {
        let c = secret_create("shop-production-blue-env-PEM", b"a\nb".to_vec()).unwrap();
        assert_eq!(
            c.argv(),
            vec![
                "podman",
                "secret",
                "create",
                "--",
                "shop-production-blue-env-PEM",
                "-"
            ]
        );
        assert_eq!(c.stdin.as_deref(), Some(&b"a\nb"[..]));
        assert!(!format!("{c:?}").contains("a\\nb"));
        assert_eq!(
            secret_rm(&["shop-production-blue-env-PEM".into()])
                .unwrap()
                .argv(),
            vec![
                "podman",
                "secret",
                "rm",
                "--",
                "shop-production-blue-env-PEM"
            ]
        );
        assert_eq!(
            secret_names().argv(),
            vec!["podman", "secret", "ls", "--format", "{{.Name}}"]
        );
        for bad in [
            "",
            "-x",
            "shop",
            "shop-production-blue-env-",
            "shop-production-blue-env-1A",
            "x,type=mount",
        ] {
            assert!(secret_create(bad, vec![]).is_err(), "{bad}");
        }
        assert!(secret_rm(&[]).is_err());
    }

    #[test]
    fn golden_logs() {
        assert_eq!(
            logs("shop-production-blue", 100).unwrap().argv(),
            vec![
                "podman",
                "logs",
                "--tail",
                "100",
                "--",
                "shop-production-blue"
            ]
        );
        assert!(logs("shop-production-blue", 0).is_err());
        assert!(logs("shop-production-blue", LOGS_MAX_TAIL + 1).is_err());
        assert!(logs("--follow", 10).is_err());
    }

    #[test]
    fn golden_probe_http() {
        let c = probe_http(4100, "/health", 5).unwrap();
        assert_eq!(
            c.argv(),
            vec![
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--noproxy",
                "*",
                "--max-time",
                "5",
                "--",
                "http://127.0.0.1:4100/health"
            ]
        );
        assert_eq!(c.timeout, Some(Duration::from_secs(7)));
        assert!(probe_http(4100, "/a?b=c&d=%20", 5).is_ok());
        for bad in ["health", "/a b", "/\n", "", "/ü"] {
            assert!(probe_http(4100, bad, 5).is_err(), "{bad:?}");
        }
        assert!(probe_http(0, "/health", 5).is_err());
        assert!(probe_http(4100, "/health", 0).is_err());
        assert!(probe_http(4100, "/health", PROBE_MAX_TIME_SECS + 1).is_err());
    }

    #[test]
    fn reads_http_status() {
        assert_eq!(parse_http_status("200"), Some(200));
        assert_eq!(parse_http_status("503\n"), Some(503));
        assert_eq!(parse_http_status("000"), None);
        assert_eq!(parse_http_status(""), None);
        assert_eq!(parse_http_status("2000"), None);
    }

    #[test]
    fn image_refs() {
        for ok in [
            "10.77.0.12:5000/demo:v1",
            "10.77.0.12:5000/demo",
            "registry.example.com/team/app-web:2024.01.02_rc-1",
            "localhost/demo:v1",
            "localhost:5000/a/b/c",
            "ghcr.io/org/my__app.x:latest",
            "10.77.0.12:5000/demo@sha256:d21c66eebc64089c2ab1a06e9072299b00c4ec94de45bb8c8ead75e324f65098",
            "10.77.0.12:5000/demo:v1@sha256:d21c66eebc64089c2ab1a06e9072299b00c4ec94de45bb8c8ead75e324f65098",
        ] {
            assert_eq!(validate_image_ref(ok), Ok(()), "{ok}");
        }
        let long = format!("10.77.0.12:5000/{}", "a".repeat(250));
        for bad in [
            "",
            "demo:v1",
            "docker/demo",
            "-x/demo",
            "10.77.0.12:5000/Demo:v1",
            "10.77.0.12:5000/demo:v 1",
            "10.77.0.12:5000/demo:v1\n",
            "10.77.0.12:5000/demo:",
            "10.77.0.12:5000/demo:-x",
            "10.77.0.12:5000/",
            "10.77.0.12:5000//demo",
            "10.77.0.12:5000/demo-",
            "10.77.0.12:5000/de..mo",
            "10.77.0.12:99999/demo",
            "10.77.0.12:/demo",
            "-registry.example.com/demo",
            "10.77.0.12:5000/demo@sha256:abc",
            "10.77.0.12:5000/demo@md5:d21c66eebc64089c2ab1a06e9072299b",
            "10.77.0.12:5000/dëmo",
            long.as_str(),
        ] {
            assert!(validate_image_ref(bad).is_err(), "{bad:?}");
        }
        let e = validate_image_ref("demo:v1").unwrap_err().to_string();
        assert!(e.contains("names no registry"), "{e}");
        assert!(e.contains("REGISTRY[:PORT]/NAME[:TAG]"), "{e}");
    }

    #[test]
    fn digests_of_references() {
        const D: &str = "sha256:d21c66eebc64089c2ab1a06e9072299b00c4ec94de45bb8c8ead75e324f65098";
        const E: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
        let tagged = "10.77.0.12:5000/demo:v1";
        let both = format!("10.77.0.12:5000/demo:v1@{D}");
        assert_eq!(image_repository(tagged), "10.77.0.12:5000/demo");
        assert_eq!(image_repository(&both), "10.77.0.12:5000/demo");
        assert_eq!(image_repository("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(image_ref_digest(tagged), None);
        assert_eq!(image_ref_digest(&both), Some(D));
        assert_eq!(
            pinned_image(tagged, D).unwrap(),
            format!("10.77.0.12:5000/demo@{D}")
        );
        assert!(pinned_image(tagged, "sha256:abc").is_err());
        assert!(pinned_image(tagged, &D.to_uppercase()).is_err());

        let id = "eddea17db3d271717d3d9cde5434703e0130e95efa98bc2ed846831e73357e1b";
        assert_eq!(
            image_digests(id).unwrap().to_string(),
            r#"podman image inspect --format "{{.Digest}}{{range .RepoDigests}} {{.}}{{end}}" -- "#
                .to_string()
                + id
        );
        assert!(image_digests("-x").is_err());
        assert!(image_digests(&id[..12]).is_err());
        assert_eq!(parse_pulled_id(&format!("{id}\n")).unwrap(), id);
        assert_eq!(
            parse_pulled_id(&format!("Writing manifest\n{id}\n")).unwrap(),
            id
        );
        assert!(parse_pulled_id("").is_err());
        assert!(parse_pulled_id("Error: x").is_err());

        // The recorded digest, known in the repository: taken.
        let out = format!("{D} 10.77.0.12:5000/demo@{D} other:5000/x@{E}\n");
        assert_eq!(parse_image_digest(&out, tagged).unwrap(), D);
        // Recorded from another repository's pull: the one digest of ours.
        let out = format!("{E} 10.77.0.12:5000/demo@{D} other:5000/x@{E}");
        assert_eq!(parse_image_digest(&out, tagged).unwrap(), D);
        // A reference by digest gets exactly that digest, or an error.
        assert_eq!(parse_image_digest(&out, &both).unwrap(), D);
        let e = parse_image_digest(&format!("{E} 10.77.0.12:5000/demo@{E}"), &both).unwrap_err();
        assert!(e.contains("not known by digest"), "{e}");
        // Nothing usable.
        let e = parse_image_digest("<none>", tagged).unwrap_err();
        assert!(e.contains("no digest"), "{e}");
    }

    #[test]
    fn names_and_limits() {
        assert!(validate_container_name("shop-production-blue").is_ok());
        assert!(validate_container_name("wtp_a.1").is_ok());
        for bad in ["", "-a", ".a", "a b", "a/b", "ä"] {
            assert!(validate_container_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_container_name(&"a".repeat(CONTAINER_NAME_MAX_LEN + 1)).is_err());
        for ok in ["512m", "1g", "6m", "6144k"] {
            assert_eq!(validate_memory(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "m", "512", "512M", "0m", "05m", "5m", "1t", "-1m", "1.5g",
        ] {
            assert!(validate_memory(bad).is_err(), "{bad:?}");
        }
        for ok in ["1", "0.5", "2.25", "0.001", "1024"] {
            assert_eq!(validate_cpus(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "0", "0.0", "-1", "1.", ".5", "1e3", "0.0001", "1025", "nan",
        ] {
            assert!(validate_cpus(bad).is_err(), "{bad:?}");
        }
        assert!(validate_label_key("codeb.project").is_ok());
        for bad in ["", "Codeb", "codeb.", "-x", "a=b"] {
            assert!(validate_label_key(bad).is_err(), "{bad:?}");
        }
    }
}

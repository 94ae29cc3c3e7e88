//! The Kubernetes manifests in `conf/kubernetes/`: schema-valid (kubernetes-validate, when on
//! PATH; required when `CI` is set), the ConfigMap's router.yaml passes `modelgate -t`, and the
//! Deployment agrees with that config (ports, probes, drain timings, writable runtime dir).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

/// Kubernetes version the manifests target (the preStop `sleep` action needs ≥ 1.30).
const KUBERNETES_VERSION: &str = "1.30.0";
const CHECKER: &str = "kubernetes-validate";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    files
}

fn load(name: &str) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

/// The checker's command: its script when on PATH, else the Python module (pip may have put
/// the script where PATH does not look).
fn checker() -> Option<Command> {
    let works = |mut c: Command| {
        c.arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(Command::new(CHECKER)) {
        return Some(Command::new(CHECKER));
    }
    let module = || {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate"]);
        c
    };
    works(module()).then(module)
}

/// Run the schema checker on `files`; `None` when it is not installed outside CI.
fn check(files: &[PathBuf]) -> Option<std::process::Output> {
    let Some(mut cmd) = checker() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{CHECKER} is not installed but CI is set: pip install kubernetes-validate (.ci/run does)"
        );
        eprintln!("skipping: {CHECKER} not installed (pip install kubernetes-validate)");
        return None;
    };
    Some(
        cmd.args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .args(files)
            .output()
            .unwrap(),
    )
}

#[test]
fn every_manifest_passes_the_schema_checker() {
    let files = manifests();
    let Some(out) = check(&files) else { return };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    // Every built-in kind was checked against a schema (only the CRD has none).
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        if name != "servicemonitor.yaml" {
            assert!(text.contains(&format!("{name} passed")), "{name}: {text}");
        }
    }

    // The checker catches a misspelt field (so a pass above means something).
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    let deployment = std::fs::read_to_string(dir().join("deployment.yaml")).unwrap();
    std::fs::write(&bad, deployment.replace("replicas: 2", "replicaz: 2")).unwrap();
    let out = check(&[bad]).unwrap();
    assert!(!out.status.success());
}

/// The ConfigMap's router.yaml, written to `dir` with its admin token file there too.
fn configmap_router_yaml(dir: &Path) -> PathBuf {
    let cm = load("configmap.yaml");
    let yaml = cm["data"]["router.yaml"].as_str().unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    assert!(yaml.contains("token_file: /etc/modelgate-secret/token"));
    let path = dir.join("router.yaml");
    std::fs::write(
        &path,
        yaml.replace("/etc/modelgate-secret/token", token.to_str().unwrap()),
    )
    .unwrap();
    path
}

fn config_check(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(["-t", "-c"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_configmap_router_yaml_passes_the_config_check() {
    let tmp = tempfile::tempdir().unwrap();
    let path = configmap_router_yaml(tmp.path());
    let (ok, text) = config_check(&path);
    assert!(ok, "{text}");
    assert!(
        text.contains("discover vllm-mistral dns vllm-mistral.llm.svc.cluster.local."),
        "{text}"
    );

    // admin.token_file: required to exist, and exclusive with admin.token.
    std::fs::remove_file(tmp.path().join("token")).unwrap();
    let (ok, text) = config_check(&path);
    assert!(
        !ok && text.contains("admin.token_file: cannot read"),
        "{text}"
    );
    std::fs::write(tmp.path().join("token"), "short\n").unwrap();
    let (ok, text) = config_check(&path);
    assert!(
        !ok && text.contains("admin.token: must be at least 16"),
        "{text}"
    );
    let both = std::fs::read_to_string(&path).unwrap().replace(
        "allow_remote: true",
        "allow_remote: true\n  token: 0123456789abcdef0123",
    );
    std::fs::write(&path, both).unwrap();
    let (ok, text) = config_check(&path);
    assert!(
        !ok && text.contains("token and token_file are mutually exclusive"),
        "{text}"
    );
}

fn int(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an integer: {v:?}"))
}

#[test]
fn the_deployment_agrees_with_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = modelgate::config::load(&configmap_router_yaml(tmp.path())).unwrap();
    let d = load("deployment.yaml");
    let spec = &d["spec"];
    assert!(int(&spec["replicas"]) >= 2);
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];

    // Ports: the admin listener binds 0.0.0.0 on the container's `admin` port.
    let port = |name: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| int(&p["containerPort"]))
            .unwrap()
    };
    assert_eq!(u64::from(config.admin_listen.port()), port("admin"));
    assert!(config.admin_listen.ip().is_unspecified());
    assert_eq!(u64::from(config.listen.port()), port("http"));
    assert!(config.admin_token.is_some());

    // Probes: readiness on /ready, liveness on /health, both on the admin port.
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");

    // Termination: preStop + drain delay + drain timeout fit in the grace period.
    let pre_stop = int(&c["lifecycle"]["preStop"]["sleep"]["seconds"]);
    let grace = int(&pod["terminationGracePeriodSeconds"]);
    let needed = pre_stop + (config.drain.delay + config.drain.timeout).as_secs();
    assert!(grace > needed, "grace {grace} s <= {needed} s");

    // Hardened: non-root, read-only root fs, the runtime dir on a writable emptyDir.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let env = c["env"].as_sequence().unwrap();
    let runtime = env
        .iter()
        .find(|e| e["name"] == "RUNTIME_DIRECTORY")
        .and_then(|e| e["value"].as_str())
        .unwrap();
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| runtime.starts_with(m["mountPath"].as_str().unwrap()) && m["name"] == "run")
        .expect("RUNTIME_DIRECTORY is on the `run` volume");
    assert!(mount["readOnly"].as_bool() != Some(true));
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert!(volumes
        .iter()
        .any(|v| v["name"] == "run" && v["emptyDir"].is_mapping()));
    // The config is mounted as a directory (no subPath), so ConfigMap updates reach the watcher.
    let config_mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert!(config_mount.get("subPath").is_none());
    assert_eq!(config_mount["mountPath"], "/etc/modelgate");

    // The PodDisruptionBudget and the Services select the Deployment's pods.
    let labels = &spec["selector"]["matchLabels"];
    assert_eq!(&load("pdb.yaml")["spec"]["selector"]["matchLabels"], labels);
    let svc = load("service.yaml");
    assert_eq!(&svc["spec"]["selector"], labels);
    assert!(svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "metrics" && p["targetPort"] == "admin"));
    // The headless Service is what the discover entry resolves.
    let headless = load("vllm-headless-service.yaml");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let entry = &config.models[0].discover[0].target;
    let ns = headless["metadata"]["namespace"].as_str().unwrap();
    let name = headless["metadata"]["name"].as_str().unwrap();
    assert_eq!(entry.dns, format!("{name}.{ns}.svc.cluster.local."));
    assert_eq!(
        entry.port.map(u64::from),
        Some(int(&headless["spec"]["ports"][0]["port"]))
    );
}

//! The command line: `--test` (valid, invalid), `--test --check-backends`, `--version`.

mod support;

use std::process::Command;

use support::*;

fn modelgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn test_flag_validates_the_shipped_config_and_prints_a_summary() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/router.yaml");
    let (code, out, _) = modelgate(&["-t", "-c", conf]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is valid"), "{out}");
    assert!(
        out.contains("model mistral-7b: policy round_robin"),
        "{out}"
    );
    assert!(
        out.contains("backend mistral-7b-gpu0 http://localhost:8001"),
        "{out}"
    );
}

#[test]
fn test_flag_rejects_a_bad_config_with_its_path_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    let seed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/router.yaml")).unwrap();
    std::fs::write(&p, seed.replace("\"round_robin\"", "\"rr\"")).unwrap();
    let (code, _, err) = modelgate(&["--test", "--config", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("models.mistral-7b.load_balancer.policy: unknown policy \"rr\"; expected one of round_robin, random"),
        "{err}"
    );
    let (code, _, err) = modelgate(&["--test", "--config", "/nonexistent/router.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn version_prints_the_crate_version() {
    let (code, out, _) = modelgate(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_backends_reports_good_wrong_and_dead_backends() {
    let good = mock("good", "m").await;
    let wrong = mock("wrong", "llama").await;
    let dead = free_port();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.yaml");
    let yaml = format!(
        "models:\n  m:\n    backends:\n      - {{name: good, url: \"{}\"}}\n      - {{name: wrong, url: \"{}\"}}\n  n:\n    backends:\n      - {{name: dead, url: \"http://127.0.0.1:{dead}\"}}\n",
        good.url(),
        wrong.url()
    );
    std::fs::write(&p, &yaml).unwrap();
    let path = p.to_str().unwrap().to_string();
    let (code, out, _) =
        tokio::task::spawn_blocking(move || modelgate(&["-t", "--check-backends", "-c", &path]))
            .await
            .unwrap();
    assert_eq!(code, 1, "model n has no good backend:\n{out}");
    assert!(
        out.contains("backend good") && out.contains("ok: reachable, serves m"),
        "{out}"
    );
    assert!(out.contains("serves [\"llama\"], not m"), "{out}");
    assert!(out.contains("model n: NO good backend"), "{out}");

    std::fs::write(&p, yaml.split("  n:").next().unwrap()).unwrap();
    let path = p.to_str().unwrap().to_string();
    let (code, out, _) =
        tokio::task::spawn_blocking(move || modelgate(&["-t", "--check-backends", "-c", &path]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn test_flag_shows_both_sides_of_the_shipped_disaggregated_config() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/disaggregated.yaml");
    let (code, out, err) = modelgate(&["-t", "-c", conf]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("  prefill: policy cache_aware\n    backend prefill-0 http://10.0.3.11:8100"),
        "{out}"
    );
    assert!(
        out.contains("    discover prefill-pods dns vllm-prefill.inference.svc.cluster.local"),
        "{out}"
    );
    assert!(
        out.contains("  decode: policy load_aware\n    backend decode-0 http://10.0.3.21:8200"),
        "{out}"
    );
}

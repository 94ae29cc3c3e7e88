//! The `modelgate-mock --sim` command line as the routing benchmark uses it: readiness lines,
//! one engine per port with its own slowdown, cached tokens in `usage`, `/reset_prefix_cache`
//! and the vLLM metrics.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// The mock process, killed on drop.
struct Mock(Child);

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the simulated fleet and returns it with the base URL of each server, read from the
/// readiness lines.
fn start_fleet(args: &[&str], servers: usize) -> (Mock, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelgate-mock"))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modelgate-mock");
    let stderr = child.stderr.take().expect("stderr");
    let mock = Mock(child);
    let mut urls = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("stderr line");
        // "modelgate-mock NAME serving MODELS on ADDR"
        if let Some((_, addr)) = line.split_once(" serving m on ") {
            urls.push(format!("http://{addr}"));
            if urls.len() == servers {
                break;
            }
        }
    }
    assert_eq!(urls.len(), servers, "one readiness line per server");
    (mock, urls)
}

/// Sum of a metric's samples in a Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `usage` of a non-stream completion.
async fn complete(client: &reqwest::Client, url: &str, request: &Value) -> Value {
    let response = client.post(format!("{url}/v1/completions")).json(request);
    let body: Value = response.send().await.unwrap().json().await.unwrap();
    body["usage"].clone()
}

#[tokio::test]
async fn sim_fleet_serves_one_engine_per_port_with_its_own_slowdown() {
    let args = [
        "--sim",
        "--port",
        "0",
        "--ports",
        "2",
        "--model",
        "m",
        "--time-scale",
        "0.5",
        "--sim-slowdown",
        "1,2",
    ];
    let (_mock, urls) = start_fleet(&args, 2);
    let client = reqwest::Client::new();
    let request = json!({"prompt": "y".repeat(400), "max_tokens": 4});
    let mut busy = Vec::new();
    for url in &urls {
        let first = complete(&client, url, &request).await;
        assert_eq!(first["prompt_tokens"], 100);
        assert_eq!(first["prompt_tokens_details"]["cached_tokens"], 0);
        let again = complete(&client, url, &request).await;
        assert_eq!(again["prompt_tokens_details"]["cached_tokens"], 96);

        let reset = client.post(format!("{url}/reset_prefix_cache")).send();
        assert_eq!(reset.await.unwrap().status(), 200);
        let text = client.get(format!("{url}/metrics")).send().await.unwrap();
        let text = text.text().await.unwrap();
        assert!(text.contains("num_gpu_blocks=\"29205\""), "{text}");
        assert_eq!(metric(&text, "vllm:prefix_cache_hits_total"), 96.0);
        busy.push(metric(&text, "modelgate_mock_sim_busy_seconds_total"));
    }
    // The same two requests ran the same steps on both servers; the second's take twice as long.
    assert!(
        (busy[1] - 2.0 * busy[0]).abs() < 1e-9,
        "busy seconds {busy:?}"
    );
}

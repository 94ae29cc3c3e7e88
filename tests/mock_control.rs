//! `modelgate-mock --fail-file`: switching a running mock backend's failure mode, as the soak
//! (`loadtest/soak.sh`) does to make one backend answer 503 or hang for a while without
//! restarting it (which would cut its streams).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{chat_body, eventually};

/// The mock process, killed on drop.
struct Mock(Child);

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines the mock wrote to stderr so far.
type Stderr = Arc<Mutex<Vec<String>>>;

/// Starts `modelgate-mock --fail-file <file>` and returns it with its base URL (from the
/// readiness line) and its stderr lines as they come.
fn start(file: &std::path::Path) -> (Mock, String, Stderr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelgate-mock"))
        .args(["--port", "0", "--model", "m", "--fail-file"])
        .arg(file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modelgate-mock");
    let stderr = child.stderr.take().expect("stderr");
    let mock = Mock(child);
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("a readiness line")
            .expect("stderr line");
        // "modelgate-mock NAME serving MODELS on ADDR"
        if let Some((_, addr)) = line.split_once(" serving m on ") {
            break format!("http://{addr}");
        }
    };
    let seen: Stderr = Arc::default();
    let sink = Arc::clone(&seen);
    // Keep draining stderr so the mock never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (mock, url, seen)
}

/// Status of one short chat completion, or 0 if none came within `within`.
async fn status(client: &reqwest::Client, url: &str, within: Duration) -> u16 {
    let sent = client
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body("m", false))
        .timeout(within)
        .send()
        .await;
    sent.map_or(0, |r| r.status().as_u16())
}

/// Wait until requests get `want`.
async fn until_status(client: &reqwest::Client, url: &str, want: u16) {
    eventually(Duration::from_secs(10), &format!("status {want}"), || {
        let (c, u) = (client.clone(), url.to_owned());
        async move { status(&c, &u, Duration::from_secs(2)).await == want }
    })
    .await;
}

#[tokio::test]
async fn fail_file_switches_the_failure_mode_of_a_running_mock() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fail");
    std::fs::write(&file, "503\n").unwrap();
    let (_mock, url, stderr) = start(&file);
    let client = reqwest::Client::new();
    // Present at start: applies from the first request on.
    assert_eq!(status(&client, &url, Duration::from_secs(5)).await, 503);

    // Emptied: back to --fail (none).
    std::fs::write(&file, "").unwrap();
    until_status(&client, &url, 200).await;

    // An invalid value keeps the current mode.
    std::fs::write(&file, "429").unwrap();
    until_status(&client, &url, 429).await;
    std::fs::write(&file, "sometimes").unwrap();
    eventually(Duration::from_secs(10), "the bad value refused", || {
        let refused = stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("keeping the current mode"));
        async move { refused }
    })
    .await;
    assert_eq!(status(&client, &url, Duration::from_secs(5)).await, 429);

    // hang: nothing comes back; removing the file ends it for new requests.
    std::fs::write(&file, "hang").unwrap();
    eventually(Duration::from_secs(10), "requests hang", || {
        let (c, u) = (client.clone(), url.clone());
        async move { status(&c, &u, Duration::from_millis(300)).await == 0 }
    })
    .await;
    std::fs::remove_file(&file).unwrap();
    until_status(&client, &url, 200).await;
}

//! `modelgate-demo`: the README's one-command demo. Starts two mock vLLM backends on
//! 127.0.0.1:8001 and :8002 serving `mistral-7b`, then runs the gateway with
//! `conf/router.yaml` (the seed config) on :8000, and prints a curl line to paste.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use modelgate::mock::{MockConfig, MockServer};
use modelgate::{app, cli::Cli};

const CURL: &str = r#"curl http://localhost:8000/v1/chat/completions \
  -H "Content-Type: application/json" \
  -d '{
    "model": "mistral-7b",
    "messages": [
      {"role": "user", "content": "Describe vLLM in one paragraph."}
    ],
    "max_tokens": 128,
    "temperature": 0.3,
    "stream": false
  }'"#;

fn main() -> ExitCode {
    let early_hup = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGHUP,
        std::sync::Arc::clone(&early_hup),
    );
    let cli = Cli::parse_from(["modelgate", "--config", "conf/router.yaml"]);
    let config = match app::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("modelgate-demo: conf/router.yaml: {e}\n(run it from the repository root)");
            return ExitCode::from(1);
        }
    };
    // A person watches the demo in a terminal: readable lines rather than JSON.
    modelgate::logging::init(&config.log.level, modelgate::logging::LogFormat::Text);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let mut servers = Vec::new();
            for (name, port) in [("mistral-7b-gpu0", 8001u16), ("mistral-7b-gpu1", 8002)] {
                let cfg = MockConfig {
                    name: name.to_string(),
                    models: vec!["mistral-7b".to_string()],
                    ttft: Duration::from_millis(40),
                    itl: Duration::from_millis(15),
                    tokens: 32,
                    ..MockConfig::default()
                };
                match MockServer::start_on(cfg, SocketAddr::from(([127, 0, 0, 1], port))).await {
                    Ok(s) => servers.push(s),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("mock backend on port {port}: {e}")));
                        return;
                    }
                }
            }
            let _ = ready_tx.send(Ok(()));
            std::future::pending::<()>().await;
            drop(servers);
        });
    });
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("modelgate-demo: cannot start mock backends: {e}");
            return ExitCode::from(1);
        }
        Err(_) => return ExitCode::from(1),
    }
    eprintln!(
        "\nmodelgate demo: mock vLLM backends on :8001 and :8002, gateway on :8000 (admin on 127.0.0.1:9000).\nTry:\n\n{CURL}\n\nor streaming: curl -N http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{{\"model\":\"mistral-7b\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}],\"stream\":true}}'\nCtrl-C drains like SIGTERM in production (/ready turns 503, 5 s later the listener closes); press it twice to stop at once.\n"
    );
    app::run(&cli, config, early_hup)
}

//! Prefill/decode disaggregation over real sockets: a model with `prefill:` and `decode:`
//! backends (mocks in the prefill and decode roles, which check what they receive as vLLM's KV
//! connectors expect it). Both legs' bodies byte by byte, streaming and not, the receipt, the
//! access log, retries and failures on each leg (a prefill timeout among them), a client that
//! leaves during the prefill, `/status` and a reload that drains one side's backend.

mod support;

use std::time::Duration;

use modelgate::mock::MockRole;
use serde_json::{json, Value};
use support::*;

const CHAT: &str = "/v1/chat/completions";

async fn role(name: &str, role: MockRole) -> MockServer {
    mock_with(name, "m", |c| c.role = role).await
}

/// A mock in `role` that fails every generation request with `fail`.
async fn failing(name: &str, role: MockRole, fail: FailMode) -> MockServer {
    mock_with(name, "m", |c| {
        c.role = role;
        c.fail = fail;
    })
    .await
}

/// `m` served by these prefill and decode backends (YAML entries from [`backend`]).
/// Fast health checks, so a test's backends are usable at once.
const HEALTH: &str = "    health_check: {interval_ms: 100, timeout_ms: 500, healthy_threshold: 1, unhealthy_threshold: 1}\n";

fn pd_model(prefill: &[String], decode: &[String], extra: &str) -> String {
    format!(
        "  m:\n    prefill:\n{}    decode:\n{}{HEALTH}{extra}",
        prefill.concat(),
        decode.concat()
    )
}

fn body(stream: bool) -> String {
    format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"Describe vLLM."}}],"max_tokens":5,"stream":{stream},"temperature":0.5}}"#
    )
}

/// POST `body` to the gateway's chat endpoint.
async fn chat(gw: &Gateway, body: impl Into<reqwest::Body>) -> reqwest::Response {
    client().post(gw.url(CHAT)).body(body).send().await.unwrap()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_prefilled_then_decoded_with_the_prefill_parameters() {
    let p = role("p0", MockRole::Prefill).await;
    let d = role("d0", MockRole::Decode).await;
    let gw = Gateway::start_ready(
        &pd_model(&[backend("p0", &p)], &[backend("d0", &d)], ""),
        "",
    )
    .await;
    for stream in [false, true] {
        let r = chat(&gw, body(stream)).await;
        assert_eq!(r.status(), 200, "stream {stream}");
        assert_eq!(r.headers()["x-modelgate-backend"], "prefill=p0;decode=d0");
        let text = read_body(r).await.unwrap();
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert_eq!(
                json_of(text.as_bytes())["choices"][0]["finish_reason"],
                "length"
            );
        }
        // The prefill leg: one unstreamed token, remote decode asked for, the rest as sent.
        let sent = json_of(p.stats().last_body().unwrap().as_ref());
        let mut want = json_of(body(stream).as_bytes());
        let o = want.as_object_mut().unwrap();
        o.remove("stream");
        o.remove("max_tokens");
        o.insert("kv_transfer_params".into(), json!({"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}));
        o.insert("stream".into(), json!(false));
        o.insert("max_tokens".into(), json!(1));
        assert_eq!(sent, want);
        // The decode leg: the client's bytes plus the prefill server's parameters.
        let got = d.stats().last_body().unwrap();
        let prefix = body(stream);
        let prefix = &prefix[..prefix.len() - 1];
        assert!(got.starts_with(prefix.as_bytes()), "{got:?}");
        let params = &json_of(&got)["kv_transfer_params"];
        assert_eq!(params["remote_engine_id"], "p0");
        assert_eq!(params["do_remote_prefill"], true);
        assert_eq!(
            d.stats().last_header("x-request-id"),
            p.stats().last_header("x-request-id")
        );
    }
    eventually(Duration::from_secs(5), "access log lines", || async {
        gw.access_log().len() >= 2
    })
    .await;
    let line = &gw.access_log()[0];
    assert_eq!(line["backend"], "d0", "{line}");
    assert_eq!(line["prefill_backend"], "p0", "{line}");
    assert!(line["prefill_ms"].as_f64().unwrap() >= 0.0, "{line}");
    assert_eq!(line["prefill_attempts"], 1, "{line}");
    let status = gw.status().await;
    let m = &status["models"]["m"];
    assert_eq!(m["policy"], "load_aware", "{status}");
    assert_eq!(m["prefill"]["policy"], "cache_aware", "{status}");
    assert_eq!(m["prefill"]["backends"][0]["side"], "prefill", "{status}");
    assert_eq!(m["backends"][0]["side"], "decode", "{status}");
    // Per-leg metrics: each side's backend counts its leg.
    for b in ["p0", "d0"] {
        let labels = [("model", "m"), ("backend", b), ("status", "2xx")];
        assert_eq!(
            gw.metric("modelgate_requests_total", &labels).await,
            2.0,
            "{b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prefill_is_retried_on_another_prefill_server() {
    let bad = failing("p0", MockRole::Prefill, FailMode::Status(503)).await;
    let good = role("p1", MockRole::Prefill).await;
    let d = role("d0", MockRole::Decode).await;
    let gw = Gateway::start_ready(
        &pd_model(
            &[backend("p0", &bad), backend("p1", &good)],
            &[backend("d0", &d)],
            "    retries: {max_attempts: 2, retry_on: [connection_failure, timeout, http_5xx]}\n",
        ),
        "",
    )
    .await;
    for _ in 0..6 {
        let r = chat(&gw, body(false)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "prefill=p1;decode=d0");
    }
    assert_eq!(d.stats().requests(), 6, "every request decoded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_that_times_out_is_retried_then_answered_504_when_none_is_left() {
    let slow = failing("p0", MockRole::Prefill, FailMode::Hang).await;
    let good = role("p1", MockRole::Prefill).await;
    let d = role("d0", MockRole::Decode).await;
    let timeouts = "    timeouts: {first_byte_timeout_ms: 300}\n";
    let retries = "    retries: {max_attempts: 2, retry_on: [timeout]}\n";
    let gw = Gateway::start_ready(
        &format!(
            "{}  alone:\n    served_model_name: m\n    prefill:\n{}    decode:\n{}{HEALTH}{timeouts}",
            pd_model(
                &[backend("p0", &slow), backend("p1", &good)],
                &[backend("d0", &d)],
                &format!("    load_balancer: {{policy: round_robin}}\n{timeouts}{retries}"),
            ),
            backend("p0-alone", &slow),
            backend("d0-alone", &d),
        ),
        "",
    )
    .await;
    for _ in 0..4 {
        let r = chat(&gw, body(true)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "prefill=p1;decode=d0");
        assert!(read_body(r)
            .await
            .unwrap()
            .trim_end()
            .ends_with("data: [DONE]"));
    }
    assert_eq!(
        slow.stats().requests(),
        2,
        "round robin sent every other first leg to p0"
    );

    let r = chat(
        &gw,
        body(true).replace(r#""model":"m""#, r#""model":"alone""#),
    )
    .await;
    assert_eq!(r.status(), 504);
    let err = json_of(&r.bytes().await.unwrap());
    assert_eq!(err["error"]["code"], "upstream_timeout", "{err}");
    assert_eq!(d.stats().requests(), 4, "no decode without a prefill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_answer_without_parameters_is_a_502() {
    let p = mock_with("p0", "m", |c| {
        c.role = MockRole::Prefill;
        c.omit_kv_params = true;
    })
    .await;
    let d = role("d0", MockRole::Decode).await;
    let gw = Gateway::start_ready(
        &pd_model(&[backend("p0", &p)], &[backend("d0", &d)], ""),
        "",
    )
    .await;
    let r = chat(&gw, body(true)).await;
    let v = expect_error(r, 502, Some("bad_prefill_response")).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kv_transfer_params"),
        "{v}"
    );
    assert_eq!(d.stats().requests(), 0, "never decoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_failure_before_the_first_byte_retries_the_decode_only() {
    let p = role("p0", MockRole::Prefill).await;
    let bad = failing("d0", MockRole::Decode, FailMode::Status(503)).await;
    let good = role("d1", MockRole::Decode).await;
    let gw = Gateway::start_ready(
        &pd_model(
            &[backend("p0", &p)],
            &[backend("d0", &bad), backend("d1", &good)],
            // Round robin, so the failing decode server gets every other first attempt (the
            // decode side's default, load_aware, may never pick it in six requests).
            "    load_balancer: {policy: round_robin}\n    retries: {max_attempts: 2, retry_on: [connection_failure, timeout, http_5xx]}\n",
        ),
        "",
    )
    .await;
    for _ in 0..6 {
        let r = chat(&gw, body(true)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "prefill=p0;decode=d1");
        assert!(read_body(r).await.unwrap().contains("[DONE]"));
    }
    assert_eq!(
        p.stats().requests(),
        6,
        "one prefill per request, none repeated"
    );
    // The decode that failed got the same parameters the retry used.
    let params = json_of(&bad.stats().last_body().unwrap())["kv_transfer_params"].clone();
    assert_eq!(params["remote_engine_id"], "p0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_errors_of_the_request_itself_reach_the_client_as_they_are() {
    let p = role("p0", MockRole::Prefill).await;
    let d = role("d0", MockRole::Decode).await;
    let gw = Gateway::start_ready(
        &pd_model(&[backend("p0", &p)], &[backend("d0", &d)], ""),
        "",
    )
    .await;
    // vLLM refuses a chat request without messages: the prefill server's 400 is the answer.
    let r = chat(&gw, r#"{"model":"m","stream":true}"#).await;
    assert_eq!(r.headers()["x-modelgate-backend"], "prefill=p0");
    let v = expect_error(r, 400, None).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    assert_eq!(d.stats().requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_the_prefill_cancels_it() {
    let p = failing("p0", MockRole::Prefill, FailMode::Hang).await;
    let d = role("d0", MockRole::Decode).await;
    let gw = Gateway::start_ready(
        &pd_model(&[backend("p0", &p)], &[backend("d0", &d)], ""),
        "",
    )
    .await;
    let c = client();
    let url = gw.url(CHAT);
    let sent = tokio::spawn(async move { c.post(url).body(body(true)).send().await });
    let stats = p.stats();
    eventually(Duration::from_secs(5), "prefill reached", || {
        let s = stats.clone();
        async move { s.in_flight() == 1 }
    })
    .await;
    sent.abort();
    eventually(Duration::from_secs(5), "prefill aborted", || {
        let s = stats.clone();
        async move { s.aborted() == 1 }
    })
    .await;
    assert_eq!(d.stats().requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_drains_and_reloads_on_its_own() {
    let p0 = role("p0", MockRole::Prefill).await;
    let p1 = role("p1", MockRole::Prefill).await;
    let d0 = role("d0", MockRole::Decode).await;
    let d1 = role("d1", MockRole::Decode).await;
    let yaml = |drain: bool| {
        let flag = if drain { "        drain: true\n" } else { "" };
        pd_model(
            &[format!("{}{flag}", backend("p0", &p0)), backend("p1", &p1)],
            &[backend("d0", &d0), format!("{}{flag}", backend("d1", &d1))],
            "",
        )
    };
    let gw = Gateway::start_ready(&yaml(false), "").await;
    let generation = gw.generation().await;
    // Saving the file reloads it (the gateway watches it).
    gw.write_config(&yaml(true), "");
    gw.wait_generation(generation + 1).await;
    gw.wait_log("drain m/p0").await;
    for _ in 0..10 {
        let r = chat(&gw, body(false)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "prefill=p1;decode=d0");
    }
    let status = gw.status().await;
    assert_eq!(
        status["models"]["m"]["prefill"]["backends"][0]["draining"],
        true
    );
    assert_eq!(status["models"]["m"]["backends"][1]["draining"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefill_side_is_found_by_dns_discovery() {
    let p = role("p0", MockRole::Prefill).await;
    let d = role("d0", MockRole::Decode).await;
    let dns = support::dns::DnsServer::start(30).await;
    dns.set_addrs(
        "prefill.test.",
        &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
    );
    let prefill = format!(
        "      - name: pods\n        discover: {{dns: \"prefill.test.\", port: {}, refresh_ms: 200, nameserver: \"{}\"}}\n",
        p.addr().port(),
        dns.addr
    );
    let gw = Gateway::start_ready(&pd_model(&[prefill], &[backend("d0", &d)], ""), "").await;
    let name = format!("pods-{}", p.addr());
    let status = gw.status().await;
    assert_eq!(
        status["models"]["m"]["prefill"]["backends"][0]["name"],
        name.as_str(),
        "{status}"
    );
    let r = chat(&gw, body(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-modelgate-backend"],
        format!("prefill={name};decode=d0").as_str()
    );
}

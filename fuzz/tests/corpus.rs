//! The checked-in seed corpus: every seed passes its target, and the seeds mean what their file
//! names say (so the corpus keeps covering the cases it was written for).

use std::path::Path;

use modelgate::scan::multipart::MultipartModelScanner;
use modelgate::scan::{find_model, ScanError};
use modelgate_fuzz::chunks::Input;
use modelgate_fuzz::config::{config_verdict, Verdict};
use modelgate_fuzz::multipart::BOUNDARY;
use modelgate_fuzz::TARGETS;

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_seed_passes_its_target() {
    for target in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target.name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus dir") {
            let data = std::fs::read(entry.expect("entry").path()).expect("seed");
            (target.run)(&data);
            n += 1;
        }
        assert!(n >= 10, "{}: only {n} seeds", target.name);
    }
}

#[test]
fn json_seeds_cover_their_cases() {
    let model = |name: &str| find_model(Input::parse(&seed("scan_json", name)).body);
    assert_eq!(
        model("chat_model_first").as_deref(),
        Ok("meta-llama/Llama-3.1-8B-Instruct")
    );
    assert_eq!(model("chat_model_last_decoys").as_deref(), Ok("mistral-7b"));
    assert_eq!(
        model("escapes_bytewise").as_deref(),
        Ok("m\u{e9}t\u{e0}/x\u{1F600}")
    );
    assert_eq!(model("completions_prompt_array").as_deref(), Ok("gpt2"));
    assert_eq!(model("duplicate_model"), Err(ScanError::DuplicateModel));
    assert_eq!(model("model_not_string"), Err(ScanError::ModelNotString));
    assert_eq!(model("missing_model_deep"), Err(ScanError::MissingModel));
    assert_eq!(model("whitespace_numbers").as_deref(), Ok("qwen2.5-72b"));
    assert_eq!(model("garbage_after_found").as_deref(), Ok("m"));
    assert_eq!(model("long_user_and_prompt").as_deref(), Ok("m"));
    assert_eq!(model("not_an_object"), Err(ScanError::NotAnObject));
    assert!(matches!(
        model("truncated_in_model"),
        Err(ScanError::InvalidJson { .. })
    ));
    assert_eq!(model("lone_surrogate_model"), Err(ScanError::ModelNotUtf8));
}

#[test]
fn multipart_seeds_cover_their_cases() {
    let model = |name: &str| {
        let data = seed("scan_multipart", name);
        let mut s = MultipartModelScanner::new(BOUNDARY);
        let _ = s.feed(Input::parse(&data).body);
        s.finish().map(str::to_owned)
    };
    assert_eq!(
        model("transcription_model_last").as_deref(),
        Ok("whisper-large-v3")
    );
    assert_eq!(
        model("transcription_model_first").as_deref(),
        Ok("whisper-large-v3")
    );
    assert_eq!(
        model("quoted_pair_and_lowercase").as_deref(),
        Ok("openai/whisper-large-v3")
    );
    assert_eq!(
        model("preamble_padding_epilogue").as_deref(),
        Ok("whisper-large-v3")
    );
    assert_eq!(model("duplicate_model"), Err(ScanError::DuplicateModel));
    assert_eq!(model("missing_model"), Err(ScanError::MissingModel));
    assert!(matches!(
        model("truncated"),
        Err(ScanError::InvalidMultipart { .. })
    ));
    assert!(matches!(
        model("bare_lf_header"),
        Err(ScanError::InvalidMultipart { .. })
    ));
    assert_eq!(
        model("filename_trailing_backslash").as_deref(),
        Ok("utf8-\u{e9}-model")
    );
    assert_eq!(
        model("content_type_line").as_deref(),
        Ok("whisper-large-v3")
    );
    assert_eq!(model("empty_model_value").as_deref(), Ok(""));
}

#[test]
fn config_seeds_reach_validation() {
    let verdict = |name: &str| config_verdict(&seed("config", name));
    for accepted in [
        "basic.yaml",
        "policies.yaml",
        "production.yaml",
        "auth_tenants.yaml",
        "flow_style.yaml",
        "anchors_defaults.yaml",
        "server_log_tracing.yaml",
        "canary_shadow.yaml",
        "limits.yaml",
    ] {
        assert_eq!(verdict(accepted), Verdict::Accepted, "{accepted}");
    }
    assert_eq!(verdict("invalid_many_issues.yaml"), Verdict::Invalid);
    assert_eq!(verdict("empty.yaml"), Verdict::Invalid);
    assert_eq!(verdict("unknown_key.yaml"), Verdict::Syntax);
}

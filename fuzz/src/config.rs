//! The `config` target: [`modelgate::config::parse`] on arbitrary bytes never panics.
//!
//! Test-harness code. `parse` is the whole of `load` after the file read (serde_yaml, then
//! validation), with two side effects a fuzzer must not trigger: it reads `auth.keys_file` from
//! disk and resolves backend host names. Inputs that would do either are only put through the
//! YAML stage (which is where `parse` would fail first anyway if it failed there); everything
//! else goes through `parse` whole. Errors are rendered, since operators read them.

use modelgate::config::spec::FileSpec;
use modelgate::config::{parse, ConfigError};

/// What happened to one input (counted by `run_stable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not YAML of the file's shape.
    Syntax,
    /// Parsed and validated.
    Accepted,
    /// Parsed, refused by validation.
    Invalid,
    /// Would read a file or resolve a name: only the YAML stage ran.
    SkippedIo,
}

/// Runs the `config` target on one fuzz input (the whole input is the file).
pub fn config(data: &[u8]) {
    let _ = config_verdict(data);
}

/// [`config`], saying how far the input got.
pub fn config_verdict(data: &[u8]) -> Verdict {
    match serde_yaml::from_slice::<FileSpec>(data) {
        Err(e) => {
            // `parse` fails at the same stage, before any I/O.
            let _ = e.to_string();
            assert!(
                matches!(parse(data), Err(ConfigError::Syntax(_))),
                "serde_yaml refused the input but parse did not report a syntax error"
            );
            Verdict::Syntax
        }
        Ok(spec) if needs_io(&spec) => Verdict::SkippedIo,
        Ok(_) => match parse(data) {
            Ok(config) => {
                assert_eq!(config.sha256.len(), 64, "sha256 of the file bytes, in hex");
                Verdict::Accepted
            }
            Err(ConfigError::Invalid(issues)) => {
                assert!(!issues.is_empty(), "Invalid with no issue");
                for issue in &issues {
                    assert!(!issue.path.is_empty() || !issue.message.is_empty());
                    let _ = issue.to_string();
                }
                Verdict::Invalid
            }
            Err(ConfigError::Syntax(m)) => panic!("serde_yaml accepted the input, parse said: {m}"),
            Err(ConfigError::Io { .. }) => panic!("parse did I/O on an input without keys_file"),
        },
    }
}

/// Whether validating `spec` would read a file or ask a resolver.
fn needs_io(spec: &FileSpec) -> bool {
    if spec.auth.as_ref().is_some_and(|a| a.keys_file.is_some()) {
        return true;
    }
    spec.models
        .iter()
        .flatten()
        .flat_map(|(_, m)| m.backends.iter().flatten())
        .filter_map(|b| b.url.as_deref())
        .any(needs_resolver)
}

/// An `http` URL whose host is neither an IP literal nor `localhost` (which `/etc/hosts`
/// answers) would be looked up in DNS.
fn needs_resolver(raw: &str) -> bool {
    match url::Url::parse(raw)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(d)) => d != "localhost",
        _ => false,
    }
}

//! Spec → typed [`Config`]: applies `defaults:`, checks every value and collects every issue with
//! its dotted path, in file order (control plane only).
//!
//! Backend host names are resolved here, once, so the request path only ever sees socket
//! addresses (Pingora panics on a name that stops resolving inside `HttpPeer::new`).

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::discover::DiscoverEntry;
use super::spec::{
    AdminSpec, AuthSpec, BackendSpec, CanarySpec, DefaultsSpec, DrainSpec, FileSpec,
    HealthCheckSpec, KeySpec, KeysFileSpec, LimitsSpec, LoadBalancerSpec, LogSpec, ModelSpec,
    RetriesSpec, ServerSpec, ShadowSpec, SideSpec, TimeoutsSpec, TracingSpec,
};
use super::*;
use indexmap::IndexMap;

/// Collects issues while walking the spec.
#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub(super) fn validate(
    spec: FileSpec,
    dir: Option<&std::path::Path>,
) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Issues::default();
    let listen = socket_addr(
        spec.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        "listen",
        &mut issues,
    );
    let (admin_listen, admin_token) = admin(spec.admin.as_ref(), listen, dir, &mut issues);
    let server_header = match spec.server_header {
        None => Some("modelgate".to_string()),
        Some(h) if h.is_empty() => None,
        Some(h) => {
            if http::HeaderValue::from_str(&h).is_err() {
                issues.push(
                    "server_header",
                    "must be a valid header value (visible ASCII)",
                );
            }
            Some(h)
        }
    };
    let auth = spec.auth.map(|a| auth_config(a, dir, &mut issues));
    let limits = limits(spec.limits.unwrap_or_default(), &mut issues);
    let max_body_bytes = spec.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        issues.push("max_body_bytes", "must be at least 1");
    }
    let defaults = spec.defaults.unwrap_or_default();
    check_defaults(&defaults, &mut issues);

    let models = models(spec.models, &defaults, &mut issues);

    cross_check(&models, &mut issues);
    let aliases = aliases(spec.aliases.unwrap_or_default(), &models, &mut issues);
    let default_model = spec.default_model.filter(|d| {
        let ok = models.iter().any(|m| &m.name == d);
        if !ok && !models.is_empty() {
            issues.push("default_model", format!("{d:?} is not a configured model"));
        }
        ok
    });
    let server = server_settings(spec.server.unwrap_or_default(), &mut issues);
    let drain = drain_settings(spec.drain.unwrap_or_default());
    let log = log_settings(spec.log.unwrap_or_default(), &mut issues);
    let tracing = tracing_settings(spec.tracing.unwrap_or_default(), &mut issues);

    match (listen, admin_listen) {
        (Some(listen), Some(admin_listen)) if issues.0.is_empty() => Ok(Config {
            listen,
            admin_listen,
            admin_token,
            server_header,
            auth,
            limits,
            max_body_bytes,
            models,
            server,
            drain,
            log,
            tracing,
            aliases,
            default_model,
            sha256: String::new(),
        }),
        _ => Err(issues.0),
    }
}

/// `admin:`: the listener (never the public port; off loopback only with `allow_remote` and a
/// token) and the token.
fn admin(
    spec: Option<&AdminSpec>,
    listen: Option<SocketAddr>,
    dir: Option<&std::path::Path>,
    issues: &mut Issues,
) -> (Option<SocketAddr>, Option<String>) {
    let admin_listen = socket_addr(
        spec.and_then(|a| a.listen.as_deref())
            .unwrap_or(DEFAULT_ADMIN_LISTEN),
        "admin.listen",
        issues,
    );
    if let (Some(public), Some(admin)) = (listen, admin_listen) {
        if public.port() == admin.port() && public.port() != 0 {
            issues.push(
                "admin.listen",
                format!("must differ from listen ({public}); the admin API must never be served on the public port"),
            );
        }
    }
    let allow_remote = spec.and_then(|a| a.allow_remote).unwrap_or(false);
    let admin_token = spec.and_then(|a| admin_token(a, dir, issues));
    if let Some(t) = &admin_token {
        if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            issues.push(
                "admin.token",
                "must be at least 16 visible ASCII characters",
            );
        }
        let lower = t.to_ascii_lowercase();
        if lower.contains("replace-with") || lower.contains("change-me") {
            issues.push(
                "admin.token",
                "is still the example placeholder; generate one: openssl rand -hex 32",
            );
        }
    }
    if let Some(admin) = admin_listen {
        if !admin.ip().is_loopback() {
            if !allow_remote {
                issues.push(
                    "admin.listen",
                    format!("{admin} is not a loopback address; set admin.allow_remote: true (and admin.token) to expose /metrics, /status and /config off this host"),
                );
            } else if admin_token.is_none() {
                issues.push(
                    "admin.token",
                    "required with admin.allow_remote: true (clients send Authorization: Bearer <token> for /metrics, /status, /config)",
                );
            }
        }
    }
    (admin_listen, admin_token)
}

/// `limits:`, each within its bounds.
fn limits(l: LimitsSpec, issues: &mut Issues) -> Limits {
    Limits {
        max_header_bytes: bounded(
            l.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
            (1024, PINGORA_MAX_HEADER_BYTES),
            "limits.max_header_bytes",
            issues,
        ),
        max_headers: bounded(
            l.max_headers,
            DEFAULT_MAX_HEADERS,
            (8, PINGORA_MAX_HEADERS),
            "limits.max_headers",
            issues,
        ),
        header_timeout: millis(
            l.header_timeout_ms,
            None,
            DEFAULT_HEADER_TIMEOUT_MS,
            "limits.header_timeout_ms".into(),
            issues,
        ),
        idle_timeout: millis(
            l.idle_timeout_ms,
            None,
            DEFAULT_CLIENT_IDLE_TIMEOUT_MS,
            "limits.idle_timeout_ms".into(),
            issues,
        ),
        body_timeout: millis(
            l.body_timeout_ms,
            None,
            DEFAULT_BODY_TIMEOUT_MS,
            "limits.body_timeout_ms".into(),
            issues,
        ),
        client_write_timeout: millis(
            l.client_write_timeout_ms,
            None,
            DEFAULT_CLIENT_WRITE_TIMEOUT_MS,
            "limits.client_write_timeout_ms".into(),
            issues,
        ),
        max_connections_per_ip: match l.max_connections_per_ip {
            None => None,
            Some(n) if (1..=u64::from(u32::MAX)).contains(&n) => Some(n as u32),
            Some(_) => {
                issues.push(
                    "limits.max_connections_per_ip",
                    "must be at least 1 (omit it for no cap)",
                );
                None
            }
        },
    }
}

/// `models:`, in file order (at least one).
fn models(
    spec: Option<IndexMap<String, ModelSpec>>,
    defaults: &DefaultsSpec,
    issues: &mut Issues,
) -> Vec<ModelConfig> {
    let mut models = Vec::new();
    match spec {
        None => issues.push(
            "models",
            "no models configured; add at least one model with backends",
        ),
        Some(map) if map.is_empty() => issues.push(
            "models",
            "no models configured; add at least one model with backends",
        ),
        Some(map) => {
            for (name, model) in map {
                if let Some(m) = model_config(name, model, defaults, issues) {
                    models.push(m);
                }
            }
        }
    }

    models
}

/// Canary and shadow targets must be other configured models.
fn cross_check(models: &[ModelConfig], issues: &mut Issues) {
    let known = |n: &str| models.iter().any(|m| m.name == n);
    for m in models {
        for (what, target) in [
            ("canary", m.canary.as_ref().map(|c| c.model.as_str())),
            ("shadow", m.shadow.as_ref().map(|s| s.model.as_str())),
        ] {
            let Some(t) = target else { continue };
            if t == m.name {
                issues.push(
                    format!("models.{}.{what}.model", m.name),
                    "must be another model",
                );
            } else if !known(t) {
                issues.push(
                    format!("models.{}.{what}.model", m.name),
                    format!("{t:?} is not a configured model"),
                );
            }
        }
    }
}

fn aliases(
    map: IndexMap<String, String>,
    models: &[ModelConfig],
    issues: &mut Issues,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (alias, target) in map {
        let path = format!("aliases.{alias}");
        if models.iter().any(|m| m.name == alias) {
            issues.push(&path, "an alias cannot have the name of a configured model");
        } else if alias.is_empty() || alias.len() > crate::scan::MAX_MODEL_BYTES {
            issues.push(&path, "alias must be 1 to 1024 bytes");
        } else if !models.iter().any(|m| m.name == target) {
            if !models.is_empty() {
                issues.push(&path, format!("{target:?} is not a configured model"));
            }
        } else {
            out.push((alias, target));
        }
    }
    out
}

/// `admin.token`, or the content of `admin.token_file` (one line; surrounding whitespace,
/// such as the newline `kubectl create secret --from-file` keeps, is dropped).
fn admin_token(
    a: &super::spec::AdminSpec,
    dir: Option<&std::path::Path>,
    issues: &mut Issues,
) -> Option<String> {
    let Some(file) = &a.token_file else {
        return a.token.clone();
    };
    if a.token.is_some() {
        issues.push(
            "admin.token_file",
            "token and token_file are mutually exclusive; keep one",
        );
        return None;
    }
    let path = dir.map_or_else(|| std::path::PathBuf::from(file), |d| d.join(file));
    match std::fs::read_to_string(&path) {
        Ok(t) => Some(t.trim().to_string()),
        Err(e) => {
            issues.push(
                "admin.token_file",
                format!("cannot read {}: {e}", path.display()),
            );
            None
        }
    }
}

fn auth_config(a: AuthSpec, dir: Option<&std::path::Path>, issues: &mut Issues) -> AuthConfig {
    let pass_authorization = match a.forward_authorization.as_deref() {
        None | Some("strip") => false,
        Some("pass") => true,
        Some(other) => {
            issues.push(
                "auth.forward_authorization",
                format!("{other:?}: expected strip or pass"),
            );
            false
        }
    };
    let mut keys = Vec::new();
    for (i, k) in a.keys.unwrap_or_default().into_iter().enumerate() {
        if let Some(key) = api_key(k, &format!("auth.keys[{i}]"), issues) {
            keys.push(key);
        }
    }
    if let Some(file) = a.keys_file {
        let path = match dir {
            Some(d) => d.join(&file),
            None => std::path::PathBuf::from(&file),
        };
        let parsed = std::fs::read(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|b| serde_yaml::from_slice::<KeysFileSpec>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(f) => {
                for (i, k) in f.keys.unwrap_or_default().into_iter().enumerate() {
                    if let Some(key) =
                        api_key(k, &format!("auth.keys_file({file}).keys[{i}]"), issues)
                    {
                        keys.push(key);
                    }
                }
            }
            Err(e) => issues.push("auth.keys_file", e),
        }
    }
    if keys.is_empty() {
        issues.push(
            "auth.keys",
            "no keys: every request would get 401; list keys (or remove `auth:` to turn authentication off)",
        );
    }
    AuthConfig {
        keys,
        pass_authorization,
    }
}

fn api_key(k: KeySpec, path: &str, issues: &mut Issues) -> Option<ApiKey> {
    let before = issues.0.len();
    let tenant = k.tenant.unwrap_or_default();
    if tenant.is_empty() || tenant.len() > 128 || !tenant.bytes().all(|b| b.is_ascii_graphic()) {
        issues.push(
            format!("{path}.tenant"),
            "must be 1 to 128 visible ASCII characters (it labels logs and metrics)",
        );
    }
    let hex = k.sha256.unwrap_or_default();
    let mut sha256 = [0u8; 32];
    let valid_hex = hex.len() == 64
        && hex
            .as_bytes()
            .chunks(2)
            .zip(sha256.iter_mut())
            .all(|(pair, out)| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .map(|v| *out = v)
                    .is_some()
            });
    if !valid_hex {
        issues.push(
            format!("{path}.sha256"),
            "must be the 64-hex-digit SHA-256 of the key (e.g. printf %s \"$KEY\" | sha256sum)",
        );
    }
    for (name, v) in [
        ("requests_per_minute", k.requests_per_minute),
        ("tokens_per_minute", k.tokens_per_minute),
        ("max_in_flight", k.max_in_flight),
    ] {
        if v == Some(0) {
            issues.push(
                format!("{path}.{name}"),
                "must be at least 1 (omit it for no limit)",
            );
        }
    }
    (issues.0.len() == before).then_some(ApiKey {
        tenant,
        sha256,
        models: k.models.unwrap_or_default(),
        requests_per_minute: k.requests_per_minute,
        tokens_per_minute: k.tokens_per_minute,
        max_in_flight: k.max_in_flight,
    })
}

fn server_settings(s: ServerSpec, issues: &mut Issues) -> ServerSettings {
    let threads = match s.threads {
        None | Some(0) => None,
        Some(n) if n > 1024 => {
            issues.push(
                "server.threads",
                format!("{n} is out of range (1 to 1024; omit it for one per CPU)"),
            );
            None
        }
        Some(n) => usize::try_from(n).ok(),
    };
    let grace = s.grace_period_s.unwrap_or(DEFAULT_GRACE_PERIOD_S);
    if grace == 0 {
        issues.push(
            "server.grace_period_s",
            "must be at least 1 (seconds an old process may finish its streams)",
        );
    }
    let mut path = |value: Option<String>, key: &str, socket: bool| {
        let v = value?;
        if v.is_empty() || v.contains('\0') {
            issues.push(format!("server.{key}"), "must be a non-empty file path");
            return None;
        }
        if socket && v.len() > MAX_SOCKET_PATH {
            issues.push(
                format!("server.{key}"),
                format!(
                    "{} bytes is too long for a unix socket path (max {MAX_SOCKET_PATH})",
                    v.len()
                ),
            );
            return None;
        }
        Some(std::path::PathBuf::from(v))
    };
    let pid_file = path(s.pid_file, "pid_file", false);
    let upgrade_sock = path(s.upgrade_sock, "upgrade_sock", true);
    ServerSettings {
        threads,
        grace_period: Duration::from_secs(grace.max(1)),
        pid_file,
        upgrade_sock,
    }
}

fn log_settings(l: LogSpec, issues: &mut Issues) -> LogSettings {
    let level = l.level.unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() || level.trim().is_empty() {
        issues.push(
            "log.level",
            format!("invalid level {level:?}; use error, warn, info, debug, trace or a filter such as \"modelgate=debug,info\""),
        );
    }
    let format = match l.format.as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            issues.push(
                "log.format",
                format!("unknown format {other:?}; expected json or text"),
            );
            LogFormat::Json
        }
    };
    LogSettings {
        level,
        format,
        access_log: l.access_log.unwrap_or(true),
    }
}

fn tracing_settings(t: TracingSpec, issues: &mut Issues) -> TracingSettings {
    let service_name = t.service_name.unwrap_or_else(|| "modelgate".to_string());
    if service_name.trim().is_empty() {
        issues.push("tracing.service_name", "must not be empty");
    }
    if let Some(endpoint) = &t.otlp_endpoint {
        let ok = url::Url::parse(endpoint)
            .is_ok_and(|u| u.scheme() == "http" && u.host_str().is_some_and(|h| !h.is_empty()));
        if !ok {
            issues.push(
                "tracing.otlp_endpoint",
                format!("{endpoint:?} must be an http:// URL of an OTLP/HTTP collector, e.g. \"http://127.0.0.1:4318\""),
            );
        }
    }
    TracingSettings {
        otlp_endpoint: t.otlp_endpoint,
        service_name,
    }
}

fn drain_settings(d: DrainSpec) -> DrainSettings {
    DrainSettings {
        delay: Duration::from_millis(d.delay_ms.unwrap_or(DEFAULT_DRAIN_DELAY_MS)),
        timeout: Duration::from_millis(d.timeout_ms.unwrap_or(DEFAULT_DRAIN_TIMEOUT_MS)),
    }
}

/// Check `defaults:` on its own so a bad default is reported once, at its own path.
fn check_defaults(d: &DefaultsSpec, issues: &mut Issues) {
    if let Some(lb) = &d.load_balancer {
        policy(lb, &LoadBalancerSpec::default(), "defaults", issues);
    }
    if let Some(r) = &d.retries {
        retries(r, &RetriesSpec::default(), "defaults", issues);
    }
    if let Some(t) = &d.timeouts {
        timeouts(t, &TimeoutsSpec::default(), "defaults", issues);
    }
    if let Some(h) = &d.health_check {
        health(h, &HealthCheckSpec::default(), "defaults", issues);
    }
}

fn model_config(
    name: String,
    mut spec: ModelSpec,
    defaults: &DefaultsSpec,
    issues: &mut Issues,
) -> Option<ModelConfig> {
    let base = format!("models.{name}");
    let before = issues.0.len();
    check_model_name(&name, &base, issues);

    let disaggregated = spec.prefill.is_some() || spec.decode.is_some();
    let (backends, discover, decode_lb, prefill) = model_backends(&mut spec, &base, issues);
    let model_lb = spec.load_balancer.clone();
    // The decode side's own `load_balancer` wins over the model's.
    spec.load_balancer = decode_lb
        .or(spec.load_balancer.take())
        .or_else(|| disaggregated.then(|| side_default(Policy::LoadAware)));

    let empty_lb = LoadBalancerSpec::default();
    let policy = policy(
        spec.load_balancer.as_ref().unwrap_or(&empty_lb),
        defaults.load_balancer.as_ref().unwrap_or(&empty_lb),
        &base,
        issues,
    );
    let empty_t = TimeoutsSpec::default();
    let timeouts = timeouts(
        spec.timeouts.as_ref().unwrap_or(&empty_t),
        defaults.timeouts.as_ref().unwrap_or(&empty_t),
        &base,
        issues,
    );
    let empty_r = RetriesSpec::default();
    let retries = retries(
        spec.retries.as_ref().unwrap_or(&empty_r),
        defaults.retries.as_ref().unwrap_or(&empty_r),
        &base,
        issues,
    );
    let empty_h = HealthCheckSpec::default();
    let health = health(
        spec.health_check.as_ref().unwrap_or(&empty_h),
        defaults.health_check.as_ref().unwrap_or(&empty_h),
        &base,
        issues,
    );
    let lb = lb_options(
        spec.load_balancer.as_ref().unwrap_or(&empty_lb),
        defaults.load_balancer.as_ref().unwrap_or(&empty_lb),
        policy,
        &base,
        issues,
    );
    let served_model_name = served_model_name(spec.served_model_name, &base, issues);
    let (max_queue, queue_timeout) = queue(spec.max_queue, spec.queue_timeout_ms, &base, issues);
    let canary = spec.canary.map(|c| canary(c, &base, issues));
    let shadow = spec.shadow.map(|sh| shadow(sh, &base, issues));
    let prefill = prefill.and_then(|(backends, discover, lb)| {
        prefill_side(backends, discover, lb.or(model_lb), defaults, &base, issues)
    });
    if issues.0.len() != before {
        return None;
    }
    Some(ModelConfig {
        name,
        backends,
        discover,
        prefill,
        lb: lb?,
        served_model_name,
        max_queue,
        queue_timeout,
        canary,
        shadow,
        policy: policy?,
        timeouts: timeouts?,
        retries: retries?,
        health: health?,
    })
}

/// A configured model's name: what clients send as `model`.
fn check_model_name(name: &str, base: &str, issues: &mut Issues) {
    if name.is_empty() || name.len() > crate::scan::MAX_MODEL_BYTES {
        issues.push(
            base,
            format!(
                "model name must be 1 to {} bytes",
                crate::scan::MAX_MODEL_BYTES
            ),
        );
    }
    if name.chars().any(char::is_control) {
        issues.push(base, "model name must not contain control characters");
    }
}

/// `served_model_name`: the id the backends serve, spliced into `model`.
fn served_model_name(name: Option<String>, base: &str, issues: &mut Issues) -> Option<String> {
    match name {
        Some(n)
            if n.is_empty()
                || n.len() > crate::scan::MAX_MODEL_BYTES
                || n.chars().any(char::is_control) =>
        {
            issues.push(
                format!("{base}.served_model_name"),
                "must be 1 to 1024 bytes without control characters",
            );
            None
        }
        other => other,
    }
}

/// `max_queue` and `queue_timeout_ms`: the model's backpressure queue.
fn queue(
    max_queue: Option<u64>,
    timeout_ms: Option<u64>,
    base: &str,
    issues: &mut Issues,
) -> (usize, Duration) {
    let max_queue = usize::try_from(max_queue.unwrap_or(0)).unwrap_or(usize::MAX);
    if max_queue > 1_000_000 {
        issues.push(format!("{base}.max_queue"), "at most 1000000");
    }
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_QUEUE_TIMEOUT_MS));
    (max_queue, timeout)
}

/// The backends of the model at `base`, taken out of `spec`: `backends`, or for a
/// disaggregated model the decode side's (with its own `load_balancer`) and the prefill side's.
/// Backend names are unique across both sides.
fn model_backends(spec: &mut ModelSpec, base: &str, issues: &mut Issues) -> ModelBackends {
    let mut names = HashSet::new();
    let disaggregated = spec.prefill.is_some() || spec.decode.is_some();
    let (backends, discover, decode_lb) = if disaggregated {
        if spec.backends.is_some() {
            issues.push(
                format!("{base}.backends"),
                "a model has either backends, or prefill and decode (disaggregated serving), not both",
            );
        }
        let (list, lb) = spec
            .decode
            .take()
            .map(SideSpec::into_parts)
            .unwrap_or_default();
        let (b, d) = backend_list(list, &format!("{base}.decode"), &mut names, issues);
        (b, d, lb)
    } else {
        let (b, d) = backend_list(
            spec.backends.take(),
            &format!("{base}.backends"),
            &mut names,
            issues,
        );
        (b, d, None)
    };
    let prefill = spec.prefill.take().map(|side| {
        let (list, lb) = side.into_parts();
        let (b, d) = backend_list(list, &format!("{base}.prefill"), &mut names, issues);
        (b, d, lb)
    });
    if disaggregated && prefill.is_none() {
        issues.push(
            format!("{base}.prefill"),
            "missing; a disaggregated model lists prefill backends and decode backends",
        );
    }
    if disaggregated && (spec.canary.is_some() || spec.shadow.is_some()) {
        issues.push(
            base,
            "canary and shadow are not supported on a disaggregated (prefill/decode) model",
        );
    }
    (backends, discover, decode_lb, prefill)
}

/// A model's backends: fixed, discovered, the decode side's own `load_balancer`, and the
/// prefill side's backends, discovered backends and `load_balancer`.
type ModelBackends = (
    Vec<BackendConfig>,
    Vec<DiscoverEntry>,
    Option<LoadBalancerSpec>,
    Option<SideBackends>,
);

/// One side's backends, discovered backends and `load_balancer`.
type SideBackends = (
    Vec<BackendConfig>,
    Vec<DiscoverEntry>,
    Option<LoadBalancerSpec>,
);

/// `canary:` of the model at `base`.
fn canary(c: CanarySpec, base: &str, issues: &mut Issues) -> Canary {
    let p = format!("{base}.canary");
    let sticky_on = c.sticky_on.as_deref().and_then(|k| {
        let parsed = KeySource::parse(k);
        if parsed.is_none() {
            issues.push(
                format!("{p}.sticky_on"),
                format!("{k:?}: expected header:<name>, body:user or prompt_prefix"),
            );
        }
        parsed
    });
    Canary {
        model: required_model(c.model, &format!("{p}.model"), issues),
        percent: percent(c.percent, &format!("{p}.percent"), issues),
        sticky_on,
    }
}

/// `shadow:` of the model at `base`.
fn shadow(sh: ShadowSpec, base: &str, issues: &mut Issues) -> Shadow {
    let p = format!("{base}.shadow");
    Shadow {
        model: required_model(sh.model, &format!("{p}.model"), issues),
        percent: percent(sh.percent, &format!("{p}.percent"), issues),
        max_concurrency: sh
            .max_concurrency
            .map_or(DEFAULT_SHADOW_CONCURRENCY, |n| n as usize),
    }
}

/// The prefill side of the disaggregated model at `base`: its own backends and load balancer
/// (`lb`: the side's own, else the model's, else `cache_aware`).
fn prefill_side(
    backends: Vec<BackendConfig>,
    discover: Vec<DiscoverEntry>,
    lb: Option<LoadBalancerSpec>,
    defaults: &DefaultsSpec,
    base: &str,
    issues: &mut Issues,
) -> Option<Side> {
    let lb = lb.unwrap_or_else(|| side_default(Policy::CacheAware));
    let path = format!("{base}.prefill");
    let policy = self::policy(&lb, defaults_lb(defaults), &path, issues);
    let options = lb_options(&lb, defaults_lb(defaults), policy, &path, issues);
    Some(Side {
        backends,
        discover,
        policy: policy?,
        lb: options?,
    })
}

/// `load_balancer: {policy: <policy>}`: a disaggregated side's default.
fn side_default(policy: Policy) -> LoadBalancerSpec {
    LoadBalancerSpec {
        policy: Some(policy.as_str().to_string()),
        ..LoadBalancerSpec::default()
    }
}

fn defaults_lb(defaults: &DefaultsSpec) -> &LoadBalancerSpec {
    static EMPTY: std::sync::LazyLock<LoadBalancerSpec> =
        std::sync::LazyLock::new(LoadBalancerSpec::default);
    defaults.load_balancer.as_ref().unwrap_or(&EMPTY)
}

/// The backend entries at `path`: fixed backends and `discover:` entries. Names are unique
/// across `names` (a disaggregated model's two sides share one namespace: metrics and logs
/// name backends within a model).
fn backend_list(
    list: Option<Vec<BackendSpec>>,
    path: &str,
    names: &mut HashSet<String>,
    issues: &mut Issues,
) -> (Vec<BackendConfig>, Vec<DiscoverEntry>) {
    let (mut backends, mut discover) = (Vec::new(), Vec::new());
    let list = match list {
        None => {
            issues.push(path, "missing; list at least one backend (name + url)");
            return (backends, discover);
        }
        Some(list) if list.is_empty() => {
            issues.push(path, "empty pool; list at least one backend (name + url)");
            return (backends, discover);
        }
        Some(list) => list,
    };
    let mut addrs = HashSet::new();
    for (i, mut b) in list.into_iter().enumerate() {
        let path = format!("{path}[{i}]");
        if let Some(d) = b.discover.take() {
            let entry = discover_entry(b, d, &path, issues);
            if let Some(e) = entry.filter(|e| unique_name(names, &e.name, &path, issues)) {
                discover.push(e);
            }
            continue;
        }
        let Some(backend) = backend_config(b, &path, issues) else {
            continue;
        };
        if !unique_name(names, &backend.name, &path, issues) {
            continue;
        }
        if addrs.insert(backend.addr) {
            backends.push(backend);
        } else {
            issues.push(
                format!("{path}.url"),
                format!(
                    "{} resolves to {}, already used by another backend of this model",
                    backend.url, backend.addr
                ),
            );
        }
    }
    (backends, discover)
}

/// A `discover:` entry; its name, weight and limits are checked as for any backend.
fn discover_entry(
    mut b: BackendSpec,
    d: super::spec::DiscoverSpec,
    path: &str,
    issues: &mut Issues,
) -> Option<DiscoverEntry> {
    let name = backend_common(&mut b, path, issues);
    super::discover::discover_entry(name, b, d, path, &mut issues.0)
}

fn backend_config(mut b: BackendSpec, path: &str, issues: &mut Issues) -> Option<BackendConfig> {
    let name = backend_common(&mut b, path, issues);
    let weight = b.weight.unwrap_or(1);
    let max_in_flight = b.max_in_flight;
    let Some(raw_url) = b.url else {
        issues.push(
            format!("{path}.url"),
            "missing; e.g. url: \"http://10.0.0.11:8001\" (or discover: {dns: NAME, port: PORT})",
        );
        return None;
    };
    let parsed = backend_url(&raw_url, &format!("{path}.url"), issues);
    let (addr, authority, path_prefix) = parsed?;
    Some(BackendConfig {
        name: name?,
        url: raw_url,
        addr,
        authority,
        path_prefix,
        weight: weight.max(1),
        drain: b.drain.unwrap_or(false),
        max_in_flight,
        api_key: b.api_key,
    })
}

/// Checks shared by fixed and discovered backends (name, weight, max_in_flight); takes the name.
fn backend_common(b: &mut BackendSpec, path: &str, issues: &mut Issues) -> Option<String> {
    let name = match b.name.take() {
        Some(n) if !n.trim().is_empty() && !n.chars().any(char::is_control) => Some(n),
        Some(_) => {
            issues.push(
                format!("{path}.name"),
                "must be a non-empty name without control characters",
            );
            None
        }
        None => {
            issues.push(
                format!("{path}.name"),
                "missing; every backend needs a name (used in logs and the x-modelgate-backend header)",
            );
            None
        }
    };
    let weight = b.weight.unwrap_or(1);
    if weight == 0 {
        issues.push(
            format!("{path}.weight"),
            "must be at least 1 (remove the backend to take it out)",
        );
    }
    if b.max_in_flight == Some(0) {
        issues.push(
            format!("{path}.max_in_flight"),
            "must be at least 1 (use drain: true to stop sending)",
        );
    }
    name
}

/// Record a backend name; false (with an issue) when the model already has it.
fn unique_name(names: &mut HashSet<String>, name: &str, path: &str, issues: &mut Issues) -> bool {
    let fresh = names.insert(name.to_string());
    if !fresh {
        issues.push(
            format!("{path}.name"),
            format!(
                "duplicate backend name {name:?}; names identify backends in logs and headers and must be unique within a model"
            ),
        );
    }
    fresh
}

/// Parse `http://host[:port][/prefix]` and resolve the host once.
fn backend_url(raw: &str, path: &str, issues: &mut Issues) -> Option<(SocketAddr, String, String)> {
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            issues.push(
                path,
                format!("invalid URL {raw:?}: {e}; expected e.g. \"http://10.0.0.11:8001\""),
            );
            return None;
        }
    };
    if url.scheme() != "http" {
        issues.push(
            path,
            format!(
                "unsupported scheme {:?} in {raw:?}; backends are reached over plain http://",
                url.scheme()
            ),
        );
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        issues.push(path, "credentials in backend URLs are not supported");
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        issues.push(path, format!("{raw:?} must not have a query or fragment"));
        return None;
    }
    let Some(host) = url.host_str() else {
        issues.push(path, format!("{raw:?} has no host"));
        return None;
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match (host_for_lookup, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            issues.push(path, format!("cannot resolve {host:?}: {e}"));
            return None;
        }
    };
    // Prefer IPv4: `localhost` often lists ::1 first while servers (vLLM's default --host
    // included) commonly bind 0.0.0.0 only.
    let Some(addr) = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
    else {
        issues.push(path, format!("{host:?} resolves to no address"));
        return None;
    };
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let prefix = url.path().trim_end_matches('/').to_string();
    Some((addr, authority, prefix))
}

fn socket_addr(raw: &str, path: &str, issues: &mut Issues) -> Option<SocketAddr> {
    match raw.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Some(a),
        _ => {
            issues.push(
                path,
                format!("invalid address {raw:?}; expected host:port, e.g. \"0.0.0.0:8000\""),
            );
            None
        }
    }
}

fn required_model(model: Option<String>, path: &str, issues: &mut Issues) -> String {
    match model {
        Some(m) if !m.is_empty() => m,
        _ => {
            issues.push(path, "missing; name a configured model");
            String::new()
        }
    }
}

fn percent(p: Option<f64>, path: &str, issues: &mut Issues) -> f64 {
    match p {
        Some(p) if (0.0..=100.0).contains(&p) => p,
        Some(p) => {
            issues.push(path, format!("{p} is out of range (0 to 100)"));
            0.0
        }
        None => {
            issues.push(path, "missing; a percentage from 0 to 100");
            0.0
        }
    }
}

fn lb_options(
    spec: &LoadBalancerSpec,
    default: &LoadBalancerSpec,
    policy: Option<Policy>,
    base: &str,
    issues: &mut Issues,
) -> Option<LbOptions> {
    let before = issues.0.len();
    let p = |k: &str| format!("{base}.load_balancer.{k}");
    let hash_on = spec
        .hash_on
        .as_deref()
        .or(default.hash_on.as_deref())
        .and_then(|k| {
            let parsed = KeySource::parse(k);
            if parsed.is_none() {
                issues.push(
                    p("hash_on"),
                    format!("{k:?}: expected header:<name>, body:user or prompt_prefix"),
                );
            }
            parsed
        });
    if policy == Some(Policy::ConsistentHash) && hash_on.is_none() && issues.0.len() == before {
        issues.push(
            p("hash_on"),
            "consistent_hash needs a key: header:<name>, body:user or prompt_prefix",
        );
    }
    let load_poll = millis(
        spec.load_poll_ms,
        default.load_poll_ms,
        DEFAULT_LOAD_POLL_MS,
        p("load_poll_ms"),
        issues,
    );
    let bounded_load = spec
        .bounded_load
        .or(default.bounded_load)
        .unwrap_or(DEFAULT_BOUNDED_LOAD);
    if !(1.0..=100.0).contains(&bounded_load) {
        issues.push(p("bounded_load"), format!("{bounded_load} is out of range (1.0 to 100; 1.25 = a backend takes at most 1.25 × the average)"));
    }
    let prefix = spec
        .prompt_prefix_bytes
        .or(default.prompt_prefix_bytes)
        .unwrap_or(DEFAULT_PROMPT_PREFIX_BYTES as u64);
    if !(1..=65536).contains(&prefix) {
        issues.push(
            p("prompt_prefix_bytes"),
            format!("{prefix} is out of range (1 to 65536)"),
        );
    }
    let cache = cache_options(spec, default, &p, issues);
    (issues.0.len() == before).then_some(LbOptions {
        hash_on,
        load_poll,
        bounded_load,
        prompt_prefix_bytes: prefix as usize,
        cache,
    })
}

/// `cache_aware`'s keys of a `load_balancer:` block (checked whatever the policy).
fn cache_options(
    spec: &LoadBalancerSpec,
    default: &LoadBalancerSpec,
    p: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> CacheAwareOptions {
    let block_bytes = bounded(
        spec.prefix_block_bytes.or(default.prefix_block_bytes),
        DEFAULT_PREFIX_BLOCK_BYTES as u64,
        (16, 4096),
        &p("prefix_block_bytes"),
        issues,
    );
    let max_bytes = bounded(
        spec.prefix_max_bytes.or(default.prefix_max_bytes),
        DEFAULT_PREFIX_MAX_BYTES as u64,
        (block_bytes as u64, 1 << 20),
        &p("prefix_max_bytes"),
        issues,
    );
    let miss_cost = spec
        .cache_miss_cost
        .or(default.cache_miss_cost)
        .unwrap_or(DEFAULT_CACHE_MISS_COST);
    if !(0.0..=100.0).contains(&miss_cost) {
        issues.push(
            p("cache_miss_cost"),
            format!("{miss_cost} is out of range (0 to 100; 8 = a prefill token counts eight times a queued one)"),
        );
    }
    let kv_cache_tokens = spec.kv_cache_tokens.or(default.kv_cache_tokens);
    if kv_cache_tokens == Some(0) {
        issues.push(
            p("kv_cache_tokens"),
            "must be at least 1 (omit it to read vLLM's cache_config_info)",
        );
    }
    CacheAwareOptions {
        block_bytes,
        max_bytes,
        miss_cost,
        kv_cache_tokens,
        learn_kv_cache: spec
            .learn_kv_cache
            .or(default.learn_kv_cache)
            .unwrap_or(true),
    }
}

fn policy(
    spec: &LoadBalancerSpec,
    default: &LoadBalancerSpec,
    base: &str,
    issues: &mut Issues,
) -> Option<Policy> {
    let Some(name) = spec.policy.as_deref().or(default.policy.as_deref()) else {
        return Some(Policy::RoundRobin);
    };
    let parsed = Policy::parse(name);
    if parsed.is_none() {
        issues.push(
            format!("{base}.load_balancer.policy"),
            format!(
                "unknown policy {name:?}; expected one of {}",
                Policy::NAMES.join(", ")
            ),
        );
    }
    parsed
}

/// `value` (or `default`) checked to lie in `range` (inclusive), as a `usize`.
fn bounded(
    value: Option<u64>,
    default: u64,
    range: (u64, u64),
    path: &str,
    issues: &mut Issues,
) -> usize {
    let v = value.unwrap_or(default);
    if v < range.0 || v > range.1 {
        issues.push(path, format!("must be between {} and {}", range.0, range.1));
    }
    usize::try_from(v.clamp(range.0, range.1)).unwrap_or(usize::MAX)
}

fn millis(
    value: Option<u64>,
    default: Option<u64>,
    builtin: u64,
    path: String,
    issues: &mut Issues,
) -> Duration {
    let ms = value.or(default).unwrap_or(builtin);
    if ms == 0 {
        issues.push(path, "must be at least 1 ms");
    }
    Duration::from_millis(ms)
}

fn timeouts(
    t: &TimeoutsSpec,
    d: &TimeoutsSpec,
    base: &str,
    issues: &mut Issues,
) -> Option<Timeouts> {
    let before = issues.0.len();
    let p = |k: &str| format!("{base}.timeouts.{k}");
    let out = Timeouts {
        connect: millis(
            t.connect_timeout_ms,
            d.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
            p("connect_timeout_ms"),
            issues,
        ),
        first_byte: millis(
            t.first_byte_timeout_ms,
            d.first_byte_timeout_ms,
            DEFAULT_FIRST_BYTE_TIMEOUT_MS,
            p("first_byte_timeout_ms"),
            issues,
        ),
        idle: millis(
            t.idle_timeout_ms,
            d.idle_timeout_ms,
            DEFAULT_IDLE_TIMEOUT_MS,
            p("idle_timeout_ms"),
            issues,
        ),
        request: millis(
            t.request_timeout_ms,
            d.request_timeout_ms,
            DEFAULT_REQUEST_TIMEOUT_MS,
            p("request_timeout_ms"),
            issues,
        ),
    };
    (issues.0.len() == before).then_some(out)
}

fn retries(r: &RetriesSpec, d: &RetriesSpec, base: &str, issues: &mut Issues) -> Option<Retries> {
    let before = issues.0.len();
    let max_attempts = r
        .max_attempts
        .or(d.max_attempts)
        .unwrap_or(DEFAULT_MAX_ATTEMPTS.into());
    if !(1..=10).contains(&max_attempts) {
        issues.push(
            format!("{base}.retries.max_attempts"),
            format!("{max_attempts} is out of range; it counts every attempt including the first and must be 1 to 10"),
        );
    }
    let mut out = Retries {
        max_attempts: u32::try_from(max_attempts.clamp(1, 10)).unwrap_or(1),
        on_connection_failure: false,
        on_timeout: false,
        on_http_5xx: false,
        on_http_429: false,
    };
    match r.retry_on.as_ref().or(d.retry_on.as_ref()) {
        None => out.on_connection_failure = true,
        Some(list) => {
            for (i, cond) in list.iter().enumerate() {
                match cond.as_str() {
                    "connection_failure" => out.on_connection_failure = true,
                    "timeout" => out.on_timeout = true,
                    "http_5xx" => out.on_http_5xx = true,
                    "http_429" => out.on_http_429 = true,
                    other => issues.push(
                        format!("{base}.retries.retry_on[{i}]"),
                        format!(
                            "unknown retry condition {other:?}; expected one of {}",
                            Retries::CONDITIONS.join(", ")
                        ),
                    ),
                }
            }
        }
    }
    (issues.0.len() == before).then_some(out)
}

fn health(
    h: &HealthCheckSpec,
    d: &HealthCheckSpec,
    base: &str,
    issues: &mut Issues,
) -> Option<HealthCheck> {
    let before = issues.0.len();
    let p = |k: &str| format!("{base}.health_check.{k}");
    let path = h
        .path
        .clone()
        .or_else(|| d.path.clone())
        .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
    if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
        issues.push(
            p("path"),
            format!("{path:?} must be an absolute path such as \"/v1/models\""),
        );
    }
    let interval = millis(
        h.interval_ms,
        d.interval_ms,
        DEFAULT_HEALTH_INTERVAL_MS,
        p("interval_ms"),
        issues,
    );
    let timeout = millis(
        h.timeout_ms,
        d.timeout_ms,
        DEFAULT_HEALTH_TIMEOUT_MS,
        p("timeout_ms"),
        issues,
    );
    let healthy_threshold = h
        .healthy_threshold
        .or(d.healthy_threshold)
        .unwrap_or(DEFAULT_HEALTHY_THRESHOLD);
    let unhealthy_threshold = h
        .unhealthy_threshold
        .or(d.unhealthy_threshold)
        .unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD);
    if healthy_threshold == 0 {
        issues.push(p("healthy_threshold"), "must be at least 1");
    }
    if unhealthy_threshold == 0 {
        issues.push(p("unhealthy_threshold"), "must be at least 1");
    }
    (issues.0.len() == before).then_some(HealthCheck {
        path,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
    })
}

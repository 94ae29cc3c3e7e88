//! Seeded workload generation for routebench: prompt texts, request bodies and arrival times.
//!
//! Runs before a point starts (and, for multi-turn, once per turn to add the history); never on
//! a timed path. Everything is a pure function of the [`Spec`] (seed included): the same spec
//! gives byte-identical bodies and the same arrival times on every arm, every run and every
//! machine. It must not read the clock, the environment or any other randomness.
//!
//! Arrival times are those of a unit-rate Poisson process (mean gap 1 request); a point at rate
//! `r` requests/s divides them by `r`, so every rate replays the same requests in the same order.
//! Texts are lower-case pseudo-words and spaces, exactly `4 × tokens` bytes, since the simulated
//! servers count 4 bytes of prompt text as one token.

use std::fmt::Write as _;

/// The workload families of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Groups of requests sharing one system prompt; the group of each request uniform at random
    /// (after a first shuffled pass over every group, for the warm-up).
    SharedPrefix,
    /// As shared-prefix, but group popularity ∝ 1 / rank^alpha.
    Zipf,
    /// Chat sessions of several turns; each turn resends the whole history.
    MultiTurn,
    /// Unique prompts, no reuse at all (the control).
    NoReuse,
}

/// Everything that determines a workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Spec {
    /// Workload family.
    pub kind: Kind,
    /// The API the single-turn bodies use (multi-turn sessions are always chat).
    pub api: Api,
    /// Seed of every random choice.
    pub seed: u64,
    /// `model` of every request.
    pub model: String,
    /// Shared-prefix and Zipf: prefix groups. Multi-turn: distinct system prompts the sessions
    /// share (session `s` uses prompt `s mod groups`). Unused by no-reuse.
    pub groups: u32,
    /// System prompt length, tokens (shared-prefix, Zipf, multi-turn).
    pub sys_tokens: u32,
    /// Shared-prefix and Zipf: the question after the system prompt; multi-turn: each user turn;
    /// no-reuse: the whole (unique) prompt. Tokens, fresh text for every request.
    pub question_tokens: u32,
    /// `max_tokens` of every request (the simulator generates exactly that many).
    pub output_tokens: u32,
    /// Zipf exponent.
    pub zipf_alpha: f64,
    /// Multi-turn: turns per session.
    pub turns: u32,
    /// Multi-turn: think time between a turn's answer and the next turn, uniform in
    /// `[think_min, think_max]` simulated seconds.
    pub think_min: f64,
    /// See `think_min`.
    pub think_max: f64,
}

/// SplitMix64: tiny, fast, and fully specified here, so a sequence never changes under a
/// dependency upgrade (`rand`'s `StdRng` documents that its stream may change between versions).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`, decorrelated from the one for `seed + 1` by the output mix.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator for one purpose (`stream`) of one seed.
    fn derive(seed: u64, stream: u64) -> Self {
        let mut g = SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        g.next_u64();
        g
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `-ln` is finite.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is below 2^-40 for the sizes used here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Exponential with mean 1.
    pub fn exp1(&mut self) -> f64 {
        -self.unit().ln()
    }
}

// Purposes of the derived generators: each text or sequence has its own stream, so changing
// one parameter (say the question length) leaves the others' bytes unchanged.
const STREAM_GROUP_TEXT: u64 = 1;
const STREAM_ARRIVALS: u64 = 2;
const STREAM_GROUP_CHOICE: u64 = 3;
const STREAM_QUESTION: u64 = 4;
const STREAM_THINK: u64 = 5;

/// `tokens × 4` bytes of pseudo-words (2–8 lower-case letters) separated by single spaces.
pub fn text(rng: &mut SplitMix64, tokens: u32) -> String {
    let len = tokens as usize * 4;
    let mut s = String::with_capacity(len + 9);
    while s.len() < len {
        if !s.is_empty() {
            s.push(' ');
        }
        let word = 2 + rng.below(7);
        for _ in 0..word {
            s.push(char::from(b'a' + rng.below(26) as u8));
        }
    }
    s.truncate(len);
    s
}

/// One request of a single-turn workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Position in the sequence, from 0.
    pub index: u32,
    /// Arrival time in unit-rate seconds (divide by the rate for simulated seconds).
    pub at: f64,
    /// The oracle's routing key: the group (shared-prefix, Zipf) or the request (no-reuse).
    pub key: u64,
    /// The exact JSON body.
    pub body: Vec<u8>,
}

/// One session of the multi-turn workload; its bodies depend on the answers, so they are built
/// turn by turn with [`Session::body`].
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub index: u32,
    /// Arrival of the first turn, unit-rate seconds.
    pub at: f64,
    /// System prompt shared with the other sessions of the same group.
    pub system: std::sync::Arc<str>,
    /// The user message of each turn.
    pub users: Vec<String>,
    /// Think time before each turn after the first, simulated seconds (rate-independent).
    pub think: Vec<f64>,
    /// `x-session-id` header value.
    pub id: String,
}

/// What a point sends.
#[derive(Clone, Debug)]
pub enum Plan {
    Single(Vec<Request>),
    Sessions(Vec<Session>),
}

/// Zipf weights 1 / rank^alpha for ranks 1..=n (group 0 is the most popular).
pub fn zipf_weights(n: u32, alpha: f64) -> Vec<f64> {
    (1..=n).map(|r| 1.0 / f64::from(r).powf(alpha)).collect()
}

/// Inverse-CDF sampler over fixed weights.
struct Discrete {
    cumulative: Vec<f64>,
}

impl Discrete {
    fn new(weights: &[f64]) -> Self {
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        Discrete { cumulative }
    }

    fn sample(&self, rng: &mut SplitMix64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.unit() * total;
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.cumulative.len() - 1)
    }
}

/// `0..n` in a random order (Fisher-Yates).
fn shuffled(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// Append `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    // A String always serialises; the fallback is never taken.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// Which OpenAI API a single-turn request uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `/v1/chat/completions`: the system prompt and the question as two messages.
    Chat,
    /// `/v1/completions`: the system prompt, a blank line and the question as one `prompt`.
    Completions,
}

impl Api {
    /// The endpoint of this API.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
        }
    }
}

/// The completions body for `prompt`, streaming with usage, exactly `max_tokens`.
pub fn completion_body(model: &str, prompt: &str, max_tokens: u32) -> Vec<u8> {
    let mut s = String::with_capacity(prompt.len() + 200);
    s.push_str("{\"model\":");
    push_json_str(&mut s, model);
    s.push_str(",\"prompt\":");
    push_json_str(&mut s, prompt);
    let _ = write!(
        s,
        ",\"max_tokens\":{max_tokens},\"ignore_eos\":true,\"stream\":true,\
         \"stream_options\":{{\"include_usage\":true}}}}"
    );
    s.into_bytes()
}

/// A single-turn body: the system prompt (if any) and the question, in `api`'s form.
fn single_body(spec: &Spec, system: Option<&str>, question: &str) -> Vec<u8> {
    match (spec.api, system) {
        (Api::Chat, Some(sys)) => chat_body(
            &spec.model,
            &[("system", sys), ("user", question)],
            spec.output_tokens,
        ),
        (Api::Chat, None) => chat_body(&spec.model, &[("user", question)], spec.output_tokens),
        (Api::Completions, Some(sys)) => completion_body(
            &spec.model,
            &format!("{sys}\n\n{question}"),
            spec.output_tokens,
        ),
        (Api::Completions, None) => completion_body(&spec.model, question, spec.output_tokens),
    }
}

/// The chat body for `messages` (role, content), streaming with usage, exactly `max_tokens`.
pub fn chat_body(model: &str, messages: &[(&str, &str)], max_tokens: u32) -> Vec<u8> {
    let size: usize = messages.iter().map(|(_, c)| c.len() + 40).sum();
    let mut s = String::with_capacity(size + 200);
    s.push_str("{\"model\":");
    push_json_str(&mut s, model);
    s.push_str(",\"messages\":[");
    for (i, (role, content)) in messages.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"role\":");
        push_json_str(&mut s, role);
        s.push_str(",\"content\":");
        push_json_str(&mut s, content);
        s.push('}');
    }
    let _ = write!(
        s,
        "],\"max_tokens\":{max_tokens},\"ignore_eos\":true,\"stream\":true,\
         \"stream_options\":{{\"include_usage\":true}}}}"
    );
    s.into_bytes()
}

impl Spec {
    /// The oracle's weight of each key group, for a balanced assignment: group popularity for
    /// shared-prefix and Zipf; `None` when keys are interchangeable (sessions, unique prompts).
    pub fn group_weights(&self) -> Option<Vec<f64>> {
        match self.kind {
            Kind::SharedPrefix => Some(vec![1.0; self.groups as usize]),
            Kind::Zipf => Some(zipf_weights(self.groups, self.zipf_alpha)),
            Kind::MultiTurn | Kind::NoReuse => None,
        }
    }

    /// The first `count` requests (single-turn kinds) or `ceil(count / turns)` sessions.
    pub fn plan(&self, count: u32) -> Plan {
        match self.kind {
            Kind::MultiTurn => Plan::Sessions(self.sessions(self.sessions_for(count))),
            _ => Plan::Single(self.requests(count)),
        }
    }

    /// Sessions needed for `requests` requests.
    pub fn sessions_for(&self, requests: u32) -> u32 {
        requests.div_ceil(self.turns.max(1))
    }

    fn group_texts(&self) -> Vec<std::sync::Arc<str>> {
        (0..self.groups)
            .map(|g| {
                let mut rng = SplitMix64::derive(self.seed, STREAM_GROUP_TEXT << 32 | u64::from(g));
                std::sync::Arc::from(text(&mut rng, self.sys_tokens))
            })
            .collect()
    }

    fn requests(&self, count: u32) -> Vec<Request> {
        let mut arrivals = SplitMix64::derive(self.seed, STREAM_ARRIVALS);
        let mut choice = SplitMix64::derive(self.seed, STREAM_GROUP_CHOICE);
        let groups = match self.kind {
            Kind::NoReuse => Vec::new(),
            _ => self.group_texts(),
        };
        let sampler = self.group_weights().map(|w| Discrete::new(&w));
        // The first `groups` requests are one shuffled pass over every group, so the warm-up
        // offers the whole working set once on every arm before the measured window.
        let first_pass = match &sampler {
            Some(_) => shuffled(self.groups as usize, &mut choice),
            None => Vec::new(),
        };
        let mut at = 0.0;
        (0..count)
            .map(|index| {
                at += arrivals.exp1();
                let mut q = SplitMix64::derive(self.seed, STREAM_QUESTION << 32 | u64::from(index));
                let question = text(&mut q, self.question_tokens);
                let (key, body) = match &sampler {
                    Some(sampler) => {
                        let g = match first_pass.get(index as usize) {
                            Some(&g) => g,
                            None => sampler.sample(&mut choice),
                        };
                        (g as u64, single_body(self, Some(&groups[g]), &question))
                    }
                    None => (u64::from(index), single_body(self, None, &question)),
                };
                Request {
                    index,
                    at,
                    key,
                    body,
                }
            })
            .collect()
    }

    fn sessions(&self, count: u32) -> Vec<Session> {
        let mut arrivals = SplitMix64::derive(self.seed, STREAM_ARRIVALS);
        let systems = self.group_texts();
        let turns = self.turns.max(1);
        let mut at = 0.0;
        (0..count)
            .map(|index| {
                // Sessions arrive `turns` times less often than requests, so the nominal
                // request rate is the point's rate.
                at += arrivals.exp1() * f64::from(turns);
                let mut q = SplitMix64::derive(self.seed, STREAM_QUESTION << 32 | u64::from(index));
                let users = (0..turns)
                    .map(|_| text(&mut q, self.question_tokens))
                    .collect();
                let mut t = SplitMix64::derive(self.seed, STREAM_THINK << 32 | u64::from(index));
                let span = (self.think_max - self.think_min).max(0.0);
                let think = (1..turns)
                    .map(|_| self.think_min + span * t.unit())
                    .collect();
                let system = systems
                    .get(index as usize % systems.len().max(1))
                    .cloned()
                    .unwrap_or_else(|| std::sync::Arc::from(""));
                Session {
                    index,
                    at,
                    system,
                    users,
                    think,
                    id: format!("session-{}-{index}", self.seed),
                }
            })
            .collect()
    }
}

impl Session {
    /// The body of turn `turn` (from 0), given the assistant's answers to the earlier turns.
    pub fn body(&self, spec: &Spec, turn: usize, answers: &[String]) -> Vec<u8> {
        let mut messages: Vec<(&str, &str)> = vec![("system", &self.system)];
        for (i, user) in self.users.iter().enumerate().take(turn + 1) {
            messages.push(("user", user));
            if i < turn {
                messages.push(("assistant", answers.get(i).map_or("", String::as_str)));
            }
        }
        chat_body(&spec.model, &messages, spec.output_tokens)
    }
}

/// Balanced assignment of weighted groups to `servers` (longest processing time first: the
/// heaviest remaining group goes to the least-loaded server, ties to the lower index). Equal
/// weights give group g → server g mod servers.
pub fn balanced_assignment(weights: &[f64], servers: usize) -> Vec<usize> {
    let servers = servers.max(1);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Stable sort: equal weights keep group order.
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
    let mut load = vec![0.0_f64; servers];
    let mut assignment = vec![0; weights.len()];
    for g in order {
        let mut best = 0;
        for s in 1..servers {
            if load[s] < load[best] {
                best = s;
            }
        }
        load[best] += weights[g];
        assignment[g] = best;
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind) -> Spec {
        Spec {
            kind,
            api: Api::Chat,
            seed: 7,
            model: "m".to_owned(),
            groups: 16,
            sys_tokens: 64,
            question_tokens: 8,
            output_tokens: 4,
            zipf_alpha: 1.1,
            turns: 3,
            think_min: 1.0,
            think_max: 3.0,
        }
    }

    fn single(plan: Plan) -> Vec<Request> {
        match plan {
            Plan::Single(r) => r,
            Plan::Sessions(_) => panic!("expected single-turn requests"),
        }
    }

    #[test]
    fn same_seed_gives_byte_identical_requests_and_arrivals() {
        for kind in [Kind::SharedPrefix, Kind::Zipf, Kind::NoReuse] {
            let a = single(spec(kind).plan(200));
            let b = single(spec(kind).plan(200));
            assert_eq!(a, b, "{kind:?}");
            // A longer plan starts with the same requests.
            let c = single(spec(kind).plan(300));
            assert_eq!(a[..], c[..200], "{kind:?}");
        }
    }

    #[test]
    fn another_seed_gives_other_requests() {
        let a = single(spec(Kind::SharedPrefix).plan(50));
        let mut other = spec(Kind::SharedPrefix);
        other.seed = 8;
        let b = single(other.plan(50));
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x.body != y.body && x.at != y.at));
    }

    #[test]
    fn sessions_are_deterministic_and_resend_the_history() {
        let spec = spec(Kind::MultiTurn);
        let (Plan::Sessions(a), Plan::Sessions(b)) = (spec.plan(30), spec.plan(30)) else {
            panic!("expected sessions");
        };
        assert_eq!(a, b);
        assert_eq!(a.len(), 10);
        let s = &a[0];
        assert_eq!(s.think.len(), 2);
        assert!(s.think.iter().all(|t| (1.0..=3.0).contains(t)));
        let answers = vec!["first answer".to_owned(), "second answer".to_owned()];
        let body = s.body(&spec, 2, &answers);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        let messages = v["messages"].as_array().expect("messages");
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "user", "assistant", "user"]
        );
        assert_eq!(messages[2]["content"], "first answer");
        assert_eq!(messages[5]["content"].as_str().unwrap(), s.users[2]);
        // Turn 1's body is a prefix of turn 2's up to the end of its last user message.
        let turn1 = s.body(&spec, 1, &answers);
        let cut = turn1.len() - turn1.iter().rev().position(|&b| b == b']').unwrap() - 2;
        assert_eq!(turn1[..cut], body[..cut]);
    }

    #[test]
    fn bodies_are_valid_chat_requests_of_exact_length() {
        let spec = spec(Kind::SharedPrefix);
        for r in single(spec.plan(20)) {
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("valid JSON");
            assert_eq!(v["max_tokens"], 4);
            assert_eq!(v["stream"], true);
            assert_eq!(v["stream_options"]["include_usage"], true);
            assert_eq!(v["messages"][0]["content"].as_str().unwrap().len(), 64 * 4);
            assert_eq!(v["messages"][1]["content"].as_str().unwrap().len(), 8 * 4);
            assert!(r.key < 16);
        }
    }

    #[test]
    fn completions_bodies_carry_the_same_text_as_one_prompt() {
        let chat = single(spec(Kind::SharedPrefix).plan(20));
        let mut completions = spec(Kind::SharedPrefix);
        completions.api = Api::Completions;
        for (c, r) in chat.iter().zip(single(completions.plan(20))) {
            assert_eq!((c.at, c.key), (r.at, r.key), "same arrivals and groups");
            let chat: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("valid JSON");
            let prompt = format!(
                "{}\n\n{}",
                chat["messages"][0]["content"].as_str().unwrap(),
                chat["messages"][1]["content"].as_str().unwrap()
            );
            assert_eq!(v["prompt"].as_str().unwrap(), prompt);
            assert_eq!(v["max_tokens"], 4);
            assert_eq!(v["stream_options"]["include_usage"], true);
            assert!(v.get("messages").is_none());
        }
    }

    #[test]
    fn groups_share_their_system_prompt_and_only_it() {
        let reqs = single(spec(Kind::SharedPrefix).plan(400));
        let system = |r: &Request| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["messages"][0]["content"].as_str().unwrap().to_owned()
        };
        let mut by_group = std::collections::HashMap::new();
        for r in &reqs {
            let s = system(r);
            assert_eq!(by_group.entry(r.key).or_insert_with(|| s.clone()), &s);
        }
        assert_eq!(by_group.len(), 16, "400 uniform draws hit every group");
        let distinct: std::collections::HashSet<_> = by_group.values().collect();
        assert_eq!(distinct.len(), 16);
    }

    #[test]
    fn the_first_requests_visit_every_group_once() {
        for kind in [Kind::SharedPrefix, Kind::Zipf] {
            let reqs = single(spec(kind).plan(40));
            let mut first: Vec<u64> = reqs[..16].iter().map(|r| r.key).collect();
            assert_ne!(first, (0..16).collect::<Vec<_>>(), "shuffled");
            first.sort_unstable();
            assert_eq!(first, (0..16).collect::<Vec<_>>(), "{kind:?}");
        }
    }

    #[test]
    fn zipf_popularity_falls_with_rank() {
        let reqs = single(spec(Kind::Zipf).plan(4000));
        let mut counts = [0u32; 16];
        for r in &reqs {
            counts[r.key as usize] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[3] && counts[3] > counts[15]);
        // Expected share of rank 1 for alpha 1.1 over 16 groups: 1 / sum(1/r^1.1) ≈ 0.30.
        let share = f64::from(counts[0]) / 4000.0;
        assert!((0.26..0.34).contains(&share), "{share}");
    }

    #[test]
    fn arrivals_have_unit_rate() {
        let reqs = single(spec(Kind::NoReuse).plan(5000));
        let last = reqs.last().unwrap().at;
        assert!((4700.0..5300.0).contains(&last), "{last}");
        assert!(reqs.windows(2).all(|w| w[0].at < w[1].at));
    }

    #[test]
    fn text_has_exact_length_and_plain_characters() {
        let mut rng = SplitMix64::new(1);
        for tokens in [0, 1, 7, 512] {
            let t = text(&mut rng, tokens);
            assert_eq!(t.len(), tokens as usize * 4);
            assert!(t.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
        }
    }

    #[test]
    fn balanced_assignment_spreads_weight() {
        assert_eq!(balanced_assignment(&[1.0; 6], 4), [0, 1, 2, 3, 0, 1]);
        let w = zipf_weights(64, 1.1);
        let a = balanced_assignment(&w, 4);
        let mut load = [0.0; 4];
        for (g, s) in a.iter().enumerate() {
            load[*s] += w[g];
        }
        let (max, min) = (
            load.iter().cloned().fold(0.0, f64::max),
            load.iter().cloned().fold(f64::MAX, f64::min),
        );
        assert!(max / min < 1.3, "{load:?}");
    }
}

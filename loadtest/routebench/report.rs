//! The Markdown report of a routebench run, from its JSON lines: per scenario a table of every
//! arm at every load, a goodput table, then the targets table with each ratio marked met or
//! missed.
//!
//! Runs once after the benchmark; pure formatting over the recorded points. Missing data
//! (an arm not run or not available) shows as `n/a`, never as a pass.

use std::fmt::Write as _;

use super::summary::PointRecord;

/// Arms in report order; arms not listed follow in the order they first appear.
pub const ARM_ORDER: [&str; 16] = [
    "round_robin",
    "random",
    "least_connections",
    "power_of_two",
    "load_aware",
    "consistent_hash_prefix",
    "consistent_hash_session",
    "cache_aware",
    "cache_aware_2gw",
    "sglang_cache_aware",
    "sglang_cache_aware_t8",
    "sglang_round_robin",
    "vllm_cache_aware",
    "vllm_round_robin",
    "oracle",
    "oracle_gateway",
];

/// A point whose simulator ran late for more than this share of its busy time, or whose
/// generator sent requests later than `LAG_LIMIT` (p99, simulated seconds), is flagged: the
/// host did not keep up, so its latencies are inflated.
const LATE_LIMIT: f64 = 0.05;
const LAG_LIMIT: f64 = 0.02;

fn host_fell_behind(p: &PointRecord) -> bool {
    p.sim_late_fraction.is_some_and(|l| l > LATE_LIMIT)
        || p.send_lag_p99.is_some_and(|l| l > LAG_LIMIT)
}

/// The load at which TTFT and hit-rate targets are compared, × RR's knee.
const COMPARE_AT: f64 = 0.8;

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "∞".to_owned(),
        Some(v) if v < 10.0 => format!("{v:.3}"),
        Some(v) => format!("{v:.1}"),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"))
}

/// All points of one run.
pub struct Report<'a> {
    points: &'a [PointRecord],
}

impl<'a> Report<'a> {
    pub fn new(points: &'a [PointRecord]) -> Self {
        Report { points }
    }

    fn scenarios(&self) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for p in self.points {
            if !out.contains(&p.labels.scenario.as_str()) {
                out.push(&p.labels.scenario);
            }
        }
        out
    }

    fn arms(&self, scenario: &str) -> Vec<&'a str> {
        let mut seen: Vec<&str> = Vec::new();
        for p in self.points.iter().filter(|p| p.labels.scenario == scenario) {
            if !seen.contains(&p.labels.arm.as_str()) && p.labels.phase != "knee" {
                seen.push(&p.labels.arm);
            }
        }
        let rank = |a: &str| ARM_ORDER.iter().position(|x| *x == a).unwrap_or(usize::MAX);
        // Stable: unknown arms keep their order of appearance.
        seen.sort_by_key(|a| rank(a));
        seen
    }

    /// Ladder points of one arm, by load.
    fn ladder(&self, scenario: &str, arm: &str) -> Vec<&'a PointRecord> {
        let mut v: Vec<&PointRecord> = self
            .points
            .iter()
            .filter(|p| {
                p.labels.scenario == scenario && p.labels.arm == arm && p.labels.phase == "ladder"
            })
            .collect();
        v.sort_by(|a, b| a.labels.rate.total_cmp(&b.labels.rate));
        v
    }

    /// The (last) ladder point of an arm at a multiple of the knee.
    fn at(&self, scenario: &str, arm: &str, multiple: f64) -> Option<&'a PointRecord> {
        self.ladder(scenario, arm)
            .into_iter()
            .rev()
            .find(|p| p.labels.multiple.is_some_and(|m| same(m, multiple)))
    }

    fn unavailable(&self, scenario: &str, arm: &str) -> Option<&'a PointRecord> {
        self.points.iter().find(|p| {
            p.labels.scenario == scenario && p.labels.arm == arm && p.labels.phase == "unavailable"
        })
    }

    fn knee(&self, scenario: &str) -> Option<f64> {
        self.points
            .iter()
            .filter(|p| p.labels.scenario == scenario && p.labels.phase == "ladder")
            .find_map(|p| p.labels.multiple.map(|m| p.labels.rate / m))
    }

    /// Highest offered load that met the SLO, and whether the ladder stopped on a pass (so the
    /// true goodput may be higher).
    pub fn goodput(&self, scenario: &str, arm: &str) -> Option<(f64, bool)> {
        let ladder = self.ladder(scenario, arm);
        let best = ladder
            .iter()
            .filter(|p| p.slo_ok)
            .map(|p| p.labels.rate)
            .fold(None, |acc: Option<f64>, r| {
                Some(acc.map_or(r, |a| a.max(r)))
            });
        let open_ended = ladder.last().is_some_and(|p| p.slo_ok);
        match (best, ladder.is_empty()) {
            (_, true) => None,
            (Some(b), _) => Some((b, open_ended)),
            (None, _) => Some((0.0, false)),
        }
    }

    /// The whole Markdown report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for scenario in self.scenarios() {
            self.render_scenario(&mut out, scenario);
        }
        self.render_targets(&mut out);
        out
    }

    fn render_scenario(&self, out: &mut String, scenario: &str) {
        let first = self.points.iter().find(|p| p.labels.scenario == scenario);
        let _ = writeln!(out, "### Scenario `{scenario}`\n");
        if let Some(p) = first {
            let _ = writeln!(
                out,
                "Workload: {}. Seed {}, time scale {}, {} warm-up + {} measured requests per \
                 point, SLO TTFT p99 ≤ {} s.",
                p.labels.workload,
                p.labels.seed,
                p.labels.time_scale,
                p.labels.warmup,
                p.labels.measured,
                p.labels.slo_ttft_p99
            );
        }
        let knee_points: Vec<&PointRecord> = self
            .points
            .iter()
            .filter(|p| p.labels.scenario == scenario && p.labels.phase == "knee")
            .collect();
        match self.knee(scenario) {
            Some(k) => {
                let _ = write!(out, "RR's knee: **{k:.2} req/s**");
                if !knee_points.is_empty() {
                    let tried: Vec<String> = knee_points
                        .iter()
                        .map(|p| {
                            format!(
                                "{:.2} → {}",
                                p.labels.rate,
                                if p.slo_ok { "pass" } else { "fail" }
                            )
                        })
                        .collect();
                    let _ = write!(out, " (calibration: {})", tried.join(", "));
                }
                let _ = writeln!(out, ".\n");
            }
            None => {
                let _ = writeln!(out, "No ladder points.\n");
            }
        }
        let _ = writeln!(
            out,
            "| arm | load × knee | req/s | TTFT p50 | TTFT p90 | TTFT p99 | E2E p99 | out tok/s \
             | hit (servers) | hit (usage) | servers/key | skew max/min | preempt | errors | \
             SLO |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for arm in self.arms(scenario) {
            if let Some(u) = self.unavailable(scenario, arm) {
                let why = u.notes.first().map_or("", String::as_str);
                let _ = writeln!(out, "| {arm} | not available: {why} |||||||||||||||");
                continue;
            }
            for p in self.ladder(scenario, arm) {
                let errors = if p.errors.is_empty() {
                    "0".to_owned()
                } else {
                    p.errors
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    out,
                    "| {arm} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
                    num(p.labels.multiple, 2),
                    p.labels.rate,
                    secs(p.ttft.p50),
                    secs(p.ttft.p90),
                    secs(p.ttft.p99),
                    secs(p.e2e.p99),
                    num(p.out_tok_s, 0),
                    pct(p.hit_rate),
                    pct(p.hit_rate_usage),
                    num(p.servers_per_key, 2),
                    p.skew.map_or("∞".to_owned(), |s| format!("{s:.2}")),
                    p.preemptions,
                    errors,
                    if p.slo_ok { "ok" } else { "miss" },
                    if host_fell_behind(p) { " †" } else { "" },
                );
            }
        }
        if self
            .points
            .iter()
            .any(|p| p.labels.scenario == scenario && host_fell_behind(p))
        {
            let _ = writeln!(
                out,
                "\n† the host fell behind during this point (simulator late steps > {:.0} % of busy \
                 time, or send lag p99 > {} ms): its latencies are inflated; rerun with a larger \
                 `TIME_SCALE` on a quieter machine.",
                LATE_LIMIT * 100.0,
                LAG_LIMIT * 1000.0
            );
        }
        self.render_health(out, scenario);
        let _ = writeln!(
            out,
            "\nGoodput (highest offered load with TTFT p99 ≤ SLO; `≥` = the ladder ended on a \
             pass):\n\n| arm | goodput req/s | × knee | ÷ round_robin | hit at {COMPARE_AT}× | \
             TTFT p99 at {COMPARE_AT}× | ÷ round_robin's |\n|---|---|---|---|---|---|---|"
        );
        let knee = self.knee(scenario);
        let rr_goodput = self.goodput(scenario, "round_robin").map(|g| g.0);
        let rr_p99 = self
            .at(scenario, "round_robin", COMPARE_AT)
            .and_then(|p| p.ttft.p99);
        for arm in self.arms(scenario) {
            let Some((g, open)) = self.goodput(scenario, arm) else {
                continue;
            };
            let ge = if open { "≥ " } else { "" };
            let at = self.at(scenario, arm, COMPARE_AT);
            let p99 = at.and_then(|p| p.ttft.p99);
            let _ = writeln!(
                out,
                "| {arm} | {ge}{g:.2} | {ge}{} | {ge}{} | {} | {} | {} |",
                num(knee.map(|k| g / k), 2),
                num(rr_goodput.and_then(|r| super::stats::ratio(g, r)), 2),
                pct(at.and_then(|p| p.hit_rate)),
                secs(p99),
                num(p99.zip(rr_p99).map(|(a, b)| a / b), 2),
            );
        }
        let _ = writeln!(out);
    }

    /// Whether the machine kept up: the simulator's late share, the load generator's CPU and
    /// the whole machine's, worst point of the scenario.
    fn render_health(&self, out: &mut String, scenario: &str) {
        let points: Vec<&PointRecord> = self
            .points
            .iter()
            .filter(|p| p.labels.scenario == scenario && p.labels.phase != "unavailable")
            .collect();
        let max = |f: &dyn Fn(&PointRecord) -> Option<f64>| {
            points.iter().filter_map(|p| f(p)).reduce(f64::max)
        };
        let lag = max(&|p| p.send_lag_p99);
        let _ = writeln!(
            out,
            "\nHost check, worst point: simulator late steps {} of busy time; load generator \
             {} CPU cores, send lag p99 {} s; whole machine {} cores busy.",
            pct(max(&|p| p.sim_late_fraction)),
            num(max(&|p| Some(p.client_cpu)), 2),
            num(lag, 3),
            num(max(&|p| p.machine_cpus), 2),
        );
    }

    fn render_targets(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### Targets\n\nTTFT and hit-rate comparisons at {COMPARE_AT}× the scenario's RR \
             knee; goodput from the ladders. `n/a`: an arm or point is missing.\n\n| scenario | \
             target | value | met |\n|---|---|---|---|"
        );
        for t in self.targets() {
            let (value, met) = match t.value {
                Some(v) => (
                    format!("{v:.2}"),
                    if t.met(v) { "met" } else { "**missed**" },
                ),
                None => ("n/a".to_owned(), "n/a"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {value} | {met} |",
                t.scenario, t.description
            );
        }
    }

    fn hit(&self, scenario: &str, arm: &str) -> Option<f64> {
        self.at(scenario, arm, COMPARE_AT).and_then(|p| p.hit_rate)
    }

    fn ttft_p99(&self, scenario: &str, arm: &str) -> Option<f64> {
        self.at(scenario, arm, COMPARE_AT).and_then(|p| p.ttft.p99)
    }

    fn metric(&self, scenario: &str, arm: &str, m: Metric) -> Option<f64> {
        match m {
            Metric::Goodput => self.goodput(scenario, arm).map(|g| g.0),
            Metric::Hit => self.hit(scenario, arm),
            Metric::TtftP50 => self.at(scenario, arm, COMPARE_AT).and_then(|p| p.ttft.p50),
            Metric::TtftP99 => self.ttft_p99(scenario, arm),
            Metric::E2eP99 => self.at(scenario, arm, COMPARE_AT).and_then(|p| p.e2e.p99),
        }
    }

    /// Every target of the issue with its measured ratio.
    pub fn targets(&self) -> Vec<Target> {
        let sp = "shared_prefix";
        let ratio =
            |a: Option<f64>, b: Option<f64>| a.zip(b).and_then(|(a, b)| super::stats::ratio(a, b));
        let mut t = vec![
            Target::at_least(
                sp,
                "cache_aware goodput ÷ round_robin's ≥ 1.8",
                ratio(
                    self.metric(sp, "cache_aware", Metric::Goodput),
                    self.metric(sp, "round_robin", Metric::Goodput),
                ),
                1.8,
            ),
            Target::at_least(
                sp,
                "cache_aware hit rate ÷ round_robin's ≥ 2.5",
                ratio(self.hit(sp, "cache_aware"), self.hit(sp, "round_robin")),
                2.5,
            ),
            Target::at_least(
                sp,
                "cache_aware hit rate ÷ oracle's ≥ 0.9",
                ratio(self.hit(sp, "cache_aware"), self.hit(sp, "oracle")),
                0.9,
            ),
            Target::at_most(
                sp,
                "cache_aware TTFT p99 ÷ round_robin's ≤ 0.33",
                ratio(
                    self.ttft_p99(sp, "cache_aware"),
                    self.ttft_p99(sp, "round_robin"),
                ),
                1.0 / 3.0,
            ),
        ];
        for m in Metric::ALL {
            let peers: Vec<f64> = ["sglang_cache_aware", "vllm_cache_aware"]
                .iter()
                .filter_map(|a| self.metric(sp, a, m))
                .collect();
            let best = if m.higher_is_better() {
                peers.iter().copied().reduce(f64::max)
            } else {
                peers.iter().copied().reduce(f64::min)
            };
            let own = self.metric(sp, "cache_aware", m);
            let description = format!(
                "cache_aware {} vs the better of sglang/vllm cache_aware ({})",
                m.name(),
                if m.higher_is_better() {
                    "÷ ≥ 1"
                } else {
                    "÷ ≤ 1"
                }
            );
            t.push(if m.higher_is_better() {
                Target::at_least(sp, &description, ratio(own, best), 1.0)
            } else {
                Target::at_most(sp, &description, ratio(own, best), 1.0)
            });
        }
        t.push(Target::at_least(
            sp,
            "cache_aware_2gw (two gateways) hit rate ÷ one gateway's ≥ 0.8",
            ratio(self.hit(sp, "cache_aware_2gw"), self.hit(sp, "cache_aware")),
            0.8,
        ));
        t.push(Target::at_most(
            "zipf",
            "cache_aware TTFT p99 ÷ consistent_hash_prefix's ≤ 0.8",
            ratio(
                self.ttft_p99("zipf", "cache_aware"),
                self.ttft_p99("zipf", "consistent_hash_prefix"),
            ),
            0.8,
        ));
        t.push(Target::at_most(
            "no_reuse",
            "cache_aware TTFT p99 ÷ least_connections' ≤ 1.05",
            ratio(
                self.ttft_p99("no_reuse", "cache_aware"),
                self.ttft_p99("no_reuse", "least_connections"),
            ),
            1.05,
        ));
        // On the heterogeneous fleet RR's TTFT suffers only near its own knee (below it the slow
        // server is slower but not yet queueing), so the target is read at 1.0x as well.
        for multiple in [COMPARE_AT, 1.0] {
            let p99 = |arm| {
                self.at("hetero", arm, multiple)
                    .and_then(|p: &PointRecord| p.ttft.p99)
            };
            for arm in ["load_aware", "cache_aware"] {
                t.push(Target::at_most(
                    "hetero",
                    &format!("{arm} TTFT p99 ÷ round_robin's ≤ 0.7 (at {multiple}× knee)"),
                    ratio(p99(arm), p99("round_robin")),
                    0.7,
                ));
            }
        }
        t
    }
}

#[derive(Clone, Copy)]
enum Metric {
    Goodput,
    Hit,
    TtftP50,
    TtftP99,
    E2eP99,
}

impl Metric {
    const ALL: [Metric; 5] = [
        Metric::Goodput,
        Metric::Hit,
        Metric::TtftP50,
        Metric::TtftP99,
        Metric::E2eP99,
    ];

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::Goodput | Metric::Hit)
    }

    fn name(self) -> &'static str {
        match self {
            Metric::Goodput => "goodput",
            Metric::Hit => "hit rate",
            Metric::TtftP50 => "TTFT p50",
            Metric::TtftP99 => "TTFT p99",
            Metric::E2eP99 => "E2E p99",
        }
    }
}

/// One target: a ratio and its bound.
pub struct Target {
    pub scenario: String,
    pub description: String,
    pub value: Option<f64>,
    bound: f64,
    at_least: bool,
}

impl Target {
    fn at_least(scenario: &str, description: &str, value: Option<f64>, bound: f64) -> Self {
        Target {
            scenario: scenario.to_owned(),
            description: description.to_owned(),
            value,
            bound,
            at_least: true,
        }
    }

    fn at_most(scenario: &str, description: &str, value: Option<f64>, bound: f64) -> Self {
        Target {
            at_least: false,
            ..Target::at_least(scenario, description, value, bound)
        }
    }

    pub fn met(&self, v: f64) -> bool {
        // A hair of tolerance so a printed 0.33 against 1/3 reads as it looks.
        if self.at_least {
            v >= self.bound - 1e-9
        } else {
            v <= self.bound + 1e-9
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::Quantiles;
    use super::super::summary::{Labels, PointRecord};
    use super::*;

    fn point(arm: &str, multiple: f64, p99: f64, hit: f64) -> PointRecord {
        PointRecord {
            labels: Labels {
                scenario: "shared_prefix".to_owned(),
                arm: arm.to_owned(),
                phase: "ladder".to_owned(),
                multiple: Some(multiple),
                rate: 10.0 * multiple,
                slo_ttft_p99: 2.0,
                ..Labels::default()
            },
            ttft: Quantiles {
                p50: Some(p99 / 4.0),
                p90: Some(p99 / 2.0),
                p99: Some(p99),
            },
            hit_rate: Some(hit),
            slo_ok: p99 <= 2.0,
            ..PointRecord::default()
        }
    }

    #[test]
    fn goodput_and_targets_from_ladders() {
        let points = vec![
            point("round_robin", 0.5, 0.5, 0.2),
            point("round_robin", 0.8, 1.2, 0.2),
            point("round_robin", 1.0, 1.9, 0.2),
            point("round_robin", 1.2, 9.0, 0.2),
            point("cache_aware", 0.8, 0.3, 0.7),
            point("cache_aware", 1.5, 0.9, 0.7),
            point("cache_aware", 1.8, 1.5, 0.7),
            point("cache_aware", 2.2, 3.0, 0.7),
            point("oracle", 0.8, 0.2, 0.75),
        ];
        let r = Report::new(&points);
        assert_eq!(
            r.goodput("shared_prefix", "round_robin"),
            Some((10.0, false))
        );
        assert_eq!(
            r.goodput("shared_prefix", "cache_aware"),
            Some((18.0, false))
        );
        assert_eq!(r.goodput("shared_prefix", "oracle"), Some((8.0, true)));
        let t = r.targets();
        let find = |s: &str| t.iter().find(|t| t.description.starts_with(s)).unwrap();
        let g = find("cache_aware goodput");
        assert!((g.value.unwrap() - 1.8).abs() < 1e-9 && g.met(g.value.unwrap()));
        let h = find("cache_aware hit rate ÷ round_robin's");
        assert!((h.value.unwrap() - 3.5).abs() < 1e-9);
        let o = find("cache_aware hit rate ÷ oracle's");
        assert!(o.met(o.value.unwrap()));
        let p = find("cache_aware TTFT p99");
        assert!((p.value.unwrap() - 0.25).abs() < 1e-9 && p.met(0.25));
        let z = t.iter().find(|t| t.scenario == "zipf").unwrap();
        assert!(z.value.is_none());
        let md = r.render();
        assert!(md.contains("RR's knee: **10.00 req/s**"));
        assert!(md.contains("| cache_aware | 1.80 | 18.00 |"));
    }
}

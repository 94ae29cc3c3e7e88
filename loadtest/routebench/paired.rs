//! Paired comparison of two arms over seeds, from any number of runs' JSON lines: each point of
//! arm A is matched with arm B's point of the same scenario, load multiple and seed (the same
//! requests at the same times), and per (scenario, load) the report gives every seed's metrics
//! side by side, then the mean of the paired differences with its standard error and on how
//! many seeds A did better. One run is one sample of where the prefix groups happen to land;
//! differences of a few percent need several seeds to tell from that noise.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::summary::PointRecord;

/// One compared metric.
struct Metric {
    name: &'static str,
    get: fn(&PointRecord) -> Option<f64>,
    higher_is_better: bool,
    /// Digits after the point; values of ratios are shown × 100.
    digits: usize,
    percent: bool,
}

const METRICS: [Metric; 5] = [
    Metric {
        name: "hit (servers)",
        get: |p| p.hit_rate,
        higher_is_better: true,
        digits: 2,
        percent: true,
    },
    Metric {
        name: "TTFT p50 (s)",
        get: |p| p.ttft.p50,
        higher_is_better: false,
        digits: 4,
        percent: false,
    },
    Metric {
        name: "TTFT p99 (s)",
        get: |p| p.ttft.p99,
        higher_is_better: false,
        digits: 4,
        percent: false,
    },
    Metric {
        name: "E2E p99 (s)",
        get: |p| p.e2e.p99,
        higher_is_better: false,
        digits: 3,
        percent: false,
    },
    Metric {
        name: "out tok/s",
        get: |p| p.out_tok_s,
        higher_is_better: true,
        digits: 0,
        percent: false,
    },
];

impl Metric {
    fn value(&self, p: &PointRecord) -> Option<f64> {
        (self.get)(p).map(|v| if self.percent { v * 100.0 } else { v })
    }

    fn show(&self, v: Option<f64>) -> String {
        let unit = if self.percent { " %" } else { "" };
        v.map_or("∞".to_owned(), |v| format!("{v:.*}{unit}", self.digits))
    }
}

/// (scenario, load multiple in thousandths) → seed → (A's point, B's point).
type Pairs<'a> = BTreeMap<(String, i64), BTreeMap<u64, (&'a PointRecord, &'a PointRecord)>>;

fn pairs<'a>(points: &'a [PointRecord], a: &'a str, b: &'a str) -> Pairs<'a> {
    let key = |p: &PointRecord| {
        p.labels.multiple.map(|m| {
            (
                p.labels.scenario.clone(),
                (m * 1000.0).round() as i64,
                p.labels.seed,
            )
        })
    };
    let ladder = |arm: &'a str| {
        points
            .iter()
            .filter(move |p| p.labels.arm == arm && p.labels.phase == "ladder")
    };
    // The last point of a key wins (a rerun replaces an earlier one).
    let of_b: BTreeMap<_, &PointRecord> = ladder(b).filter_map(|p| Some((key(p)?, p))).collect();
    let mut out = Pairs::new();
    for p in ladder(a) {
        let Some(k) = key(p) else { continue };
        if let Some(&q) = of_b.get(&k) {
            out.entry((k.0, k.1)).or_default().insert(k.2, (p, q));
        }
    }
    out
}

/// Mean and standard error of the mean (`None` for fewer than two values).
fn mean_se(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    if values.len() < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some((var / n).sqrt()))
}

/// The Markdown comparison of arm `a` against arm `b`.
pub fn render(points: &[PointRecord], a: &str, b: &str) -> String {
    let mut out = String::new();
    let all = pairs(points, a, b);
    if all.is_empty() {
        let _ = writeln!(out, "No seed has both `{a}` and `{b}` at the same load.");
    }
    for ((scenario, milli), seeds) in &all {
        let _ = writeln!(
            out,
            "#### `{scenario}` at {:.2}× the knee: `{a}` / `{b}`, {} seeds\n",
            *milli as f64 / 1000.0,
            seeds.len()
        );
        render_seeds(&mut out, seeds);
        render_differences(&mut out, seeds, a);
    }
    out
}

fn render_seeds(out: &mut String, seeds: &BTreeMap<u64, (&PointRecord, &PointRecord)>) {
    let names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
    let _ = writeln!(out, "| seed | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(METRICS.len()));
    for (seed, (pa, pb)) in seeds {
        let cells: Vec<String> = METRICS
            .iter()
            .map(|m| format!("{} / {}", m.show(m.value(pa)), m.show(m.value(pb))))
            .collect();
        let _ = writeln!(out, "| {seed} | {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn render_differences(
    out: &mut String,
    seeds: &BTreeMap<u64, (&PointRecord, &PointRecord)>,
    a: &str,
) {
    let _ = writeln!(
        out,
        "| metric | mean `{a}` − other (± standard error) | `{a}` better on |"
    );
    let _ = writeln!(out, "|---|---|---|");
    for m in &METRICS {
        let diffs: Vec<f64> = seeds
            .values()
            .filter_map(|(pa, pb)| Some(m.value(pa)? - m.value(pb)?))
            .collect();
        if diffs.is_empty() {
            let _ = writeln!(out, "| {} | n/a | n/a |", m.name);
            continue;
        }
        let better = diffs
            .iter()
            .filter(|&&d| if m.higher_is_better { d > 0.0 } else { d < 0.0 })
            .count();
        let (mean, se) = mean_se(&diffs);
        let se = se.map_or(String::new(), |s| format!(" ± {s:.*}", m.digits + 1));
        let _ = writeln!(
            out,
            "| {} | {mean:+.*}{se} | {better} of {} |",
            m.name,
            m.digits + 1,
            diffs.len()
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(arm: &str, seed: u64, multiple: f64, hit: f64, ttft_p99: Option<f64>) -> PointRecord {
        let mut p = PointRecord::default();
        p.labels.scenario = "shared_prefix".into();
        p.labels.arm = arm.into();
        p.labels.phase = "ladder".into();
        p.labels.multiple = Some(multiple);
        p.labels.seed = seed;
        p.hit_rate = Some(hit);
        p.ttft.p99 = ttft_p99;
        p
    }

    #[test]
    fn pairs_by_seed_and_load_and_reports_mean_differences() {
        let points = vec![
            point("cache_aware", 1, 0.8, 0.86, Some(0.05)),
            point("sglang_cache_aware", 1, 0.8, 0.85, Some(0.06)),
            point("cache_aware", 2, 0.8, 0.84, Some(0.05)),
            point("sglang_cache_aware", 2, 0.8, 0.85, Some(0.05)),
            // No partner at this load: left out.
            point("cache_aware", 3, 1.0, 0.80, Some(0.05)),
            // A knee point is not a ladder point.
            PointRecord::default(),
        ];
        let text = render(&points, "cache_aware", "sglang_cache_aware");
        assert!(text.contains("at 0.80× the knee: `cache_aware` / `sglang_cache_aware`, 2 seeds"));
        assert!(!text.contains("1.00×"), "{text}");
        assert!(text.contains("| 1 | 86.00 % / 85.00 % |"), "{text}");
        // Hit: +1 and −1 points: mean 0, standard error 1; better on one seed.
        assert!(
            text.contains("| hit (servers) | +0.000 ± 1.000 | 1 of 2 |"),
            "{text}"
        );
        // TTFT p99: −0.01 and 0: better (lower) on one.
        assert!(
            text.contains("| TTFT p99 (s) | -0.00500 ± 0.00500 | 1 of 2 |"),
            "{text}"
        );
    }

    #[test]
    fn an_infinite_percentile_is_shown_and_left_out_of_the_mean() {
        let points = vec![
            point("a", 1, 0.8, 0.5, None),
            point("b", 1, 0.8, 0.5, Some(0.1)),
        ];
        let text = render(&points, "a", "b");
        assert!(text.contains("∞ / 0.1000"), "{text}");
        assert!(text.contains("| TTFT p99 (s) | n/a | n/a |"), "{text}");
        assert_eq!(
            render(&points, "a", "c"),
            "No seed has both `a` and `c` at the same load.\n"
        );
    }
}

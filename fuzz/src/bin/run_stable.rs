//! Stable-toolchain fuzz runner: every target on its seed corpus, then on seeded random and
//! mutated inputs until a time box or an input count runs out.
//!
//! Test-harness code. No coverage feedback (that needs nightly and `cargo fuzz`), so this is the
//! time-boxed smoke run CI can afford; long runs use libFuzzer (see `fuzz/README.md`).
//!
//! ```text
//! run_stable [--seconds N] [--iterations N] [--seed N] [--target NAME]... [FILE...]
//! ```
//!
//! - `--seconds N`: time box per target (default 10).
//! - `--iterations N`: at most N generated inputs per target (default: no limit).
//! - `--seed N`: PRNG seed (default `$MODELGATE_FUZZ_SEED`, else 1); the same seed and corpus
//!   give the same inputs.
//! - `--target NAME`: only this target (repeatable).
//! - `FILE...`: with one `--target`, run it on these files only (to reproduce a finding).
//!
//! Prints one line per target with the number of inputs run and `ok`, or the failing input in
//! hex (also written to `fuzz/artifacts/<target>/`); exits 1 if any target failed.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use modelgate_fuzz::config::{config_verdict, Verdict};
use modelgate_fuzz::mutate::{parse_dict, Generator, Shape};
use modelgate_fuzz::{Target, TARGETS};

/// Generated inputs are at most this long (libFuzzer's `-max_len` is set the same way in the
/// README's commands).
const MAX_LEN: usize = 64 * 1024;

struct Options {
    seconds: f64,
    iterations: u64,
    seed: u64,
    targets: Vec<String>,
    files: Vec<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        seconds: 10.0,
        iterations: u64::MAX,
        seed: std::env::var("MODELGATE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
        targets: Vec::new(),
        files: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => {
                o.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--iterations" => {
                o.iterations = value("--iterations")?
                    .parse()
                    .map_err(|e| format!("--iterations: {e}"))?
            }
            "--seed" => {
                o.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--target" => o.targets.push(value("--target")?),
            "-h" | "--help" => return Err(String::new()),
            f if !f.starts_with('-') => o.files.push(PathBuf::from(f)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    for t in &o.targets {
        if !TARGETS.iter().any(|x| x.name == t) {
            return Err(format!("unknown target {t}"));
        }
    }
    if !o.files.is_empty() && o.targets.len() != 1 {
        return Err("FILE arguments need exactly one --target".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("run_stable: {e}");
            }
            eprintln!("usage: run_stable [--seconds N] [--iterations N] [--seed N] [--target NAME]... [FILE...]");
            return ExitCode::from(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failed = false;
    let started = Instant::now();
    for target in TARGETS {
        if !options.targets.is_empty() && !options.targets.iter().any(|t| t == target.name) {
            continue;
        }
        let ok = if options.files.is_empty() {
            fuzz(target, root, &options)
        } else {
            replay(target, root, &options.files)
        };
        failed |= !ok;
    }
    println!(
        "run_stable: {} in {:.1} s (seed {})",
        if failed { "FAILED" } else { "ok" },
        started.elapsed().as_secs_f64(),
        options.seed
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `target` on `data`; on a panic, prints and saves the input and returns false.
fn check(target: &Target, root: &Path, data: &[u8], what: &str) -> bool {
    check_with(target, root, data, what, || (target.run)(data)).is_some()
}

/// Runs `run` (the target on `data`); on a panic (the default hook has printed its message),
/// prints and saves the input and returns `None`.
fn check_with<R>(
    target: &Target,
    root: &Path,
    data: &[u8],
    what: &str,
    run: impl FnOnce() -> R,
) -> Option<R> {
    if let Ok(r) = panic::catch_unwind(AssertUnwindSafe(run)) {
        return Some(r);
    }
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let dir = root.join("artifacts").join(target.name);
    let file = dir.join(format!("crash-{:016x}", fnv1a(data)));
    let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, data));
    eprintln!("{}: FAILED on {what} ({} bytes)", target.name, data.len());
    eprintln!("{}: input hex: {hex}", target.name);
    match saved {
        Ok(()) => eprintln!("{}: saved to {}", target.name, file.display()),
        Err(e) => eprintln!("{}: could not save the input: {e}", target.name),
    }
    None
}

fn replay(target: &Target, root: &Path, files: &[PathBuf]) -> bool {
    let mut ok = true;
    for f in files {
        match std::fs::read(f) {
            Ok(data) => ok &= check(target, root, &data, &f.display().to_string()),
            Err(e) => {
                eprintln!("{}: cannot read {}: {e}", target.name, f.display());
                ok = false;
            }
        }
    }
    println!(
        "{}: {} file(s): {}",
        target.name,
        files.len(),
        if ok { "ok" } else { "FAILED" }
    );
    ok
}

fn fuzz(target: &Target, root: &Path, options: &Options) -> bool {
    let seeds = read_corpus(&root.join("corpus").join(target.name));
    for (path, data) in &seeds {
        if !check(target, root, data, &format!("seed {}", path.display())) {
            println!("{}: FAILED on the seed corpus", target.name);
            return false;
        }
    }
    let mut verdicts: BTreeMap<&str, u64> = BTreeMap::new();
    let shape = Shape {
        chunked: target.chunked,
        max_len: MAX_LEN,
    };
    let seed = options.seed ^ fnv1a(target.name.as_bytes());
    let corpus = seeds.into_iter().map(|(_, d)| d).collect::<Vec<_>>();
    let corpus_len = corpus.len();
    let mut generator = Generator::new(seed, corpus, parse_dict(target.dict), shape);
    let budget = Duration::from_secs_f64(options.seconds.max(0.0));
    let start = Instant::now();
    let mut runs: u64 = 0;
    let mut bytes: u64 = 0;
    let mut slowest = (Duration::ZERO, 0usize);
    while runs < options.iterations && start.elapsed() < budget {
        let data = generator.next_input();
        let t = Instant::now();
        let what = format!("generated input #{}", runs + 1);
        let verdict = if target.name == "config" {
            // The same checks as `config`, also saying how far the input got.
            check_with(target, root, &data, &what, || {
                Some(verdict_name(config_verdict(&data)))
            })
        } else {
            check_with(target, root, &data, &what, || {
                (target.run)(&data);
                None
            })
        };
        let Some(verdict) = verdict else {
            println!(
                "{}: FAILED after {} seeds + {runs} generated inputs (seed {})",
                target.name, corpus_len, options.seed
            );
            return false;
        };
        let took = t.elapsed();
        if took > slowest.0 {
            slowest = (took, data.len());
        }
        if let Some(v) = verdict {
            *verdicts.entry(v).or_default() += 1;
        }
        runs += 1;
        bytes += data.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let extra = if verdicts.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = verdicts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(" [{}]", parts.join(", "))
    };
    println!(
        "{}: {corpus_len} seeds + {runs} generated inputs ({:.1} MB, {:.0}/s, slowest {:.2} ms on {} bytes) in {secs:.1} s{extra}: ok",
        target.name,
        bytes as f64 / 1e6,
        runs as f64 / secs.max(1e-9),
        slowest.0.as_secs_f64() * 1e3,
        slowest.1,
    );
    true
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Syntax => "yaml_error",
        Verdict::Accepted => "accepted",
        Verdict::Invalid => "invalid",
        Verdict::SkippedIo => "io_skipped",
    }
}

fn read_corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|d| (p, d)))
        .collect()
}

/// FNV-1a: names artifacts and derives per-target seeds.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

//! The top-level module graph of `src/`, read from the sources (every `crate::<module>` path
//! outside comments): it runs one way (no cycles), the request path never imports `config`,
//! and `conn` never imports `proxy`. Test code inside a module (`tests.rs` files and a trailing
//! `#[cfg(test)] mod tests`) may build its fixtures from anything and is not read; neither is
//! the mock (`mock`, a cargo feature for tests and load tests, not part of the gateway).
//!
//! `cargo test --test module_graph -- --nocapture` prints the edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules on the request path: they read the published snapshot and never the config.
const REQUEST_PATH: &[&str] = &[
    "api",
    "auth",
    "conn",
    "error",
    "io_wrap",
    "logging",
    "metrics",
    "proxy",
    "routing",
    "scan",
    "telemetry",
];

/// Not part of the gateway's graph: the binary's entry points and the test-support mock.
const OUTSIDE: &[&str] = &["lib", "main", "bin", "mock"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, test files excluded.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            files(&path, out);
        } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("a file under src/");
    let first = rel
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or("");
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file: comments and a trailing `#[cfg(test)] mod` left out.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let is_mod = |next: &&str| {
            let next = next.trim_start();
            let next = next.strip_prefix("pub(crate) ").unwrap_or(next);
            next.strip_prefix("pub ")
                .unwrap_or(next)
                .starts_with("mod ")
        };
        if trimmed.starts_with("#[cfg(test)]") && lines.peek().is_some_and(is_mod) {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find(" // ") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The top-level modules `code` names through `crate::` paths (`crate::a::b`, `crate::{a, b}`).
fn named(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                out.insert(ident(part.trim()));
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// Top-level module → the top-level modules it imports.
fn graph() -> Graph {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut graph = Graph::new();
    for path in all {
        let from = module_of(&path);
        if OUTSIDE.contains(&from.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable source");
        let to = graph.entry(from.clone()).or_default();
        for m in named(&code(&text)) {
            if m != from && !OUTSIDE.contains(&m.as_str()) {
                to.insert(m);
            }
        }
    }
    graph
}

/// A cycle through `node`, if any (depth-first).
fn cycle_from(
    graph: &Graph,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|n| n == node) {
        let mut cycle = path[i..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(cycle) = cycle_from(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn top_level_modules_import_one_way_only() {
    let graph = graph();
    for (from, to) in &graph {
        println!(
            "{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(graph.len() > 10, "the sources were not found: {graph:?}");
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = cycle_from(&graph, node, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}

#[test]
fn the_request_path_never_imports_config_and_conn_never_imports_proxy() {
    let graph = graph();
    for module in REQUEST_PATH {
        let imports = graph.get(*module).cloned().unwrap_or_default();
        assert!(
            !imports.contains("config"),
            "{module} (request path) imports config: {imports:?}"
        );
        for control in ["app", "reload", "discovery", "health", "admin"] {
            assert!(
                !imports.contains(control),
                "{module} (request path) imports the control plane's {control}: {imports:?}"
            );
        }
    }
    let conn = graph.get("conn").cloned().unwrap_or_default();
    assert!(!conn.contains("proxy"), "conn imports proxy: {conn:?}");
}

#[test]
fn the_reader_sees_crate_paths_and_skips_comments_and_tests() {
    let text = "//! crate::config in a doc\nuse crate::state::Publisher;\nlet x = crate::{a::B, b};\n// crate::c\nfn f() {} // crate::d\n#[cfg(test)]\nmod tests {\n    use crate::e;\n}\n";
    let got: Vec<String> = named(&code(text)).into_iter().collect();
    assert_eq!(got, ["a", "b", "state"]);
}

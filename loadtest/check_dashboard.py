#!/usr/bin/env python3
"""Check that a Grafana dashboard only queries metrics and labels modelgate exports.

    python3 loadtest/check_dashboard.py conf/grafana-dashboard.json http://127.0.0.1:9000/metrics
    python3 loadtest/check_dashboard.py conf/grafana-dashboard.json scrape.txt   # or - for stdin
    python3 loadtest/check_dashboard.py DASH SCRAPE --prometheus http://127.0.0.1:9090

Every PromQL expression of the dashboard (panel targets, annotations, template variables) is
scanned for `modelgate_*` metric names, label names in `{}` matchers, `by`/`without`/`on`/
`ignoring`/`group_left`/`group_right` clauses, `label_values()` and `{{label}}` legends, and
compared with a Prometheus text-format scrape of the admin listener's GET /metrics.

Histogram series are named `<family>_bucket`/`_sum`/`_count`; the bare family name is an error
(it selects nothing). A family present in the scrape only as `# HELP`/`# TYPE` (no series yet)
is accepted with a warning, since its labels cannot be verified. Exit 0 if everything is known,
1 with the list of unknown metrics/labels otherwise, 2 on bad input. Python 3 stdlib only.

With --prometheus URL (a Prometheus scraping the gateway), every expression is also evaluated
there, dashboard variables set to "All" and $__rate_interval to 1m: a PromQL syntax error fails
the check, an empty result is a warning (no errors or retries yet is normal).
"""

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

PREFIX = "modelgate_"
HIST_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's built-in variables (usable in any expression without a templating entry).
GRAFANA_BUILTINS = {
    "__interval", "__interval_ms", "__rate_interval", "__rate_interval_ms", "__range",
    "__range_s", "__range_ms", "__from", "__to", "__dashboard", "__org", "__user", "__name",
    "timeFilter", "__timeFilter", "__all",
}
IDENT = r"[a-zA-Z_][a-zA-Z0-9_]*"
LABEL_PAIR = re.compile(r'(' + IDENT + r')\s*=\s*"((?:[^"\\]|\\.)*)"')


# ------------------------------------------------------------------------------ scrape

def read_scrape(source):
    if source == "-":
        return sys.stdin.read()
    if re.match(r"^https?://", source):
        with urllib.request.urlopen(source, timeout=10) as resp:
            return resp.read().decode("utf-8", "replace")
    with open(source, encoding="utf-8") as f:
        return f.read()


def parse_scrape(text):
    """Return (families, samples).

    families: name -> type (from `# TYPE`, or "untyped" when only `# HELP` or a sample names it)
    samples:  series name -> set of label names seen on it
    """
    families, samples = {}, {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                families[parts[2]] = parts[3].strip() if len(parts) > 3 else "untyped"
            elif len(parts) >= 3 and parts[1] == "HELP":
                families.setdefault(parts[2], "untyped")
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{)?", line)
        if not m:
            continue
        name, labels = m.group(1), set()
        if m.group(2):
            # Label set up to the matching brace (values may contain braces).
            i, in_str, esc = m.end(), False, False
            while i < len(line):
                c = line[i]
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = not in_str
                elif c == "}" and not in_str:
                    break
                i += 1
            labels = {k for k, _ in LABEL_PAIR.findall(line[m.end():i])}
        samples.setdefault(name, set()).update(labels)
        if name not in families and not any(
            name.endswith(s) and families.get(name[: -len(s)]) in ("histogram", "summary")
            for s in HIST_SUFFIXES
        ):
            families.setdefault(name, "untyped")
    return families, samples


# ------------------------------------------------------------------------------ dashboard

def collect_exprs(dash):
    """Yield (where, expr, legend) for every PromQL expression in the dashboard."""
    out = []

    def panel_name(p):
        return "panel %r (id %s)" % (p.get("title", ""), p.get("id"))

    def walk_panels(panels):
        for p in panels or []:
            for t in p.get("targets") or []:
                if isinstance(t, dict) and isinstance(t.get("expr"), str):
                    out.append(("%s ref %s" % (panel_name(p), t.get("refId", "?")),
                                t["expr"], t.get("legendFormat", "")))
            walk_panels(p.get("panels"))  # collapsed rows nest their panels

    walk_panels(dash.get("panels"))
    for a in (dash.get("annotations") or {}).get("list", []):
        if isinstance(a.get("expr"), str):
            out.append(("annotation %r" % a.get("name", ""), a["expr"], ""))
        t = a.get("target")
        if isinstance(t, dict) and isinstance(t.get("expr"), str):
            out.append(("annotation %r" % a.get("name", ""), t["expr"], ""))
    for v in (dash.get("templating") or {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and q:
            out.append(("variable %r" % v.get("name", ""), q, ""))
    return out


def strip_strings(expr):
    """Blank out string literals (matcher values, regexes) so only PromQL syntax remains."""
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def grafana_vars(expr):
    return set(re.findall(r"\$\{(" + IDENT + r")(?::[^}]*)?\}|\$(" + IDENT + r")", expr))


def analyse(expr):
    """Return (metrics, selector_labels, grouping_labels, label_values_pairs).

    metrics:          list of metric tokens
    selector_labels:  list of (metric or None, label) from {} matchers
    grouping_labels:  list of (clause, label) from by/without/on/ignoring/group_*
    label_values:     list of (metric or None, label) from label_values()
    """
    s = strip_strings(expr)
    s = re.sub(r"\$\{[^}]*\}|\$" + IDENT, "5m", s)  # variables left outside strings are ranges
    metrics = [m for m in re.findall(r"(?<![a-zA-Z0-9_:])" + PREFIX + r"[a-zA-Z0-9_:]*", s)]
    selector_labels = []
    for m in re.finditer(r"(?:(?<![a-zA-Z0-9_:])(" + PREFIX + r"[a-zA-Z0-9_:]*)\s*)?\{([^{}]*)\}", s):
        metric = m.group(1)
        for lbl in re.findall(r"(" + IDENT + r")\s*(?:=~|!~|!=|=)", m.group(2)):
            selector_labels.append((metric, lbl))
    grouping = []
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)", s):
        for lbl in m.group(2).split(","):
            lbl = lbl.strip()
            if lbl:
                grouping.append((m.group(1), lbl))
    label_values = []
    for m in re.finditer(r"\blabel_values\s*\(\s*(?:([^,()]*(?:\{[^}]*\})?)\s*,\s*)?(" + IDENT + r")\s*\)", s):
        sel = (m.group(1) or "").strip()
        mm = re.match(PREFIX + r"[a-zA-Z0-9_:]*", sel)
        label_values.append((mm.group(0) if mm else None, m.group(2)))
    return metrics, selector_labels, grouping, label_values


# ------------------------------------------------------------------------------ prometheus

def substitute(expr, dash):
    """Expand dashboard variables the way Grafana would with every variable at "All"."""
    values = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600",
              "__interval_ms": "15000", "__rate_interval_ms": "60000", "__range_ms": "3600000"}
    for v in (dash.get("templating") or {}).get("list", []):
        values.setdefault(v.get("name"), v.get("allValue") or ".*")
    return re.sub(r"\$\{(" + IDENT + r")(?::[^}]*)?\}|\$(" + IDENT + r")",
                  lambda m: values.get(m.group(1) or m.group(2), m.group(0)), expr)


def evaluate(base, exprs, dash, errors, warnings, quiet):
    empty = done = 0
    for where, expr, _ in exprs:
        if re.match(r"\s*label_values\s*\(", expr):
            continue  # Grafana's own function, not PromQL
        done += 1
        url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": substitute(expr, dash)})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                body = json.load(e)
            except ValueError:
                body = {"status": "error", "error": "HTTP %s" % e.code}
        except (OSError, ValueError) as e:
            errors.append("%s: cannot query %s: %s" % (where, base, e))
            continue
        if body.get("status") != "success":
            errors.append("%s: Prometheus rejects the query: %s" % (where, body.get("error")))
        elif not body["data"].get("result"):
            empty += 1
            warnings.append("%s: no data now for %s" % (where, expr))
    if not quiet:
        print("prometheus: %s (%d expressions evaluated, %d empty)" % (base, done, empty))


# ------------------------------------------------------------------------------ check

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboard", help="dashboard JSON file")
    ap.add_argument("scrape", help="/metrics scrape: file, http(s) URL, or - for stdin")
    ap.add_argument("--extra-labels", default="",
                    help="comma-separated labels the scraper adds (e.g. instance,job); default none")
    ap.add_argument("--prometheus", metavar="URL",
                    help="also evaluate every expression on this Prometheus (syntax + non-empty)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    args = ap.parse_args()

    try:
        with open(args.dashboard, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print("cannot read dashboard %s: %s" % (args.dashboard, e), file=sys.stderr)
        return 2
    try:
        families, samples = parse_scrape(read_scrape(args.scrape))
    except (OSError, ValueError) as e:
        print("cannot read scrape %s: %s" % (args.scrape, e), file=sys.stderr)
        return 2
    if not any(f.startswith(PREFIX) for f in families):
        print("scrape %s holds no %s* family" % (args.scrape, PREFIX), file=sys.stderr)
        return 2
    extra = {l.strip() for l in args.extra_labels.split(",") if l.strip()}

    errors, warnings = [], []
    used_families, used_labels = set(), set()

    def resolve(tok, where):
        """Family of a metric token and the label names its series carry (None: unverifiable)."""
        if tok in samples:
            fam = tok
            for s in HIST_SUFFIXES:
                if tok.endswith(s) and families.get(tok[: -len(s)]) in ("histogram", "summary"):
                    fam = tok[: -len(s)]
            return fam, samples[tok] | extra
        for s in HIST_SUFFIXES:
            base = tok[: -len(s)]
            if tok.endswith(s) and families.get(base) in ("histogram", "summary"):
                warnings.append("%s: %s has no series in the scrape yet; labels not verified" % (where, tok))
                return base, None
        if tok in families:
            if families[tok] in ("histogram", "summary"):
                errors.append("%s: %s is a %s; query %s_bucket/_sum/_count" % (where, tok, families[tok], tok))
                return tok, None
            warnings.append("%s: %s has no series in the scrape yet; labels not verified" % (where, tok))
            return tok, None
        errors.append("%s: unknown metric %s" % (where, tok))
        return None, None

    # Template variables that expressions may reference.
    defined_vars = {v.get("name") for v in (dash.get("templating") or {}).get("list", [])}

    # Structural sanity: unique panel ids.
    seen_ids = {}

    def walk(panels):
        for p in panels or []:
            pid = p.get("id")
            if pid is not None:
                if pid in seen_ids:
                    errors.append("duplicate panel id %s (%r and %r)" % (pid, seen_ids[pid], p.get("title")))
                seen_ids[pid] = p.get("title")
            walk(p.get("panels"))

    walk(dash.get("panels"))

    exprs = collect_exprs(dash)
    if not exprs:
        print("no PromQL expression in %s" % args.dashboard, file=sys.stderr)
        return 2
    for where, expr, legend in exprs:
        for a, b in grafana_vars(expr):
            name = a or b
            if name not in defined_vars and name not in GRAFANA_BUILTINS:
                errors.append("%s: undefined dashboard variable $%s" % (where, name))
        metrics, sel_labels, grouping, lv = analyse(expr)
        if not metrics:
            errors.append("%s: no %s* metric in %r" % (where, PREFIX, expr))
            continue
        labels_of = {}
        for tok in metrics:
            fam, labels = resolve(tok, where)
            if fam:
                used_families.add(fam)
            labels_of[tok] = labels
        known = [l for l in labels_of.values() if l is not None]
        union = set().union(*known) if known else None

        def check(label, allowed, what):
            used_labels.add(label)
            if label == "__name__" or allowed is None:
                return
            if label not in allowed:
                errors.append("%s: unknown label %r in %s" % (where, label, what))

        for metric, label in sel_labels:
            check(label, labels_of.get(metric) if metric else union, "matcher of %s" % (metric or "{}"))
        for clause, label in grouping:
            check(label, union, "%s()" % clause)
        for metric, label in lv:
            check(label, labels_of.get(metric) if metric else union, "label_values()")
        # Legend: {{label}} must survive the aggregation (be in a by() clause when there is one).
        by_labels = {l for c, l in grouping if c == "by"}
        without = {l for c, l in grouping if c == "without"}
        for label in re.findall(r"\{\{\s*(" + IDENT + r")\s*\}\}", legend or ""):
            if by_labels:
                if label not in by_labels:
                    errors.append("%s: legend {{%s}} is not in by(%s)" % (where, label, ", ".join(sorted(by_labels))))
            elif label in without:
                errors.append("%s: legend {{%s}} is dropped by without()" % (where, label))
            else:
                check(label, union, "legend")

    scraped = sorted(f for f in families if f.startswith(PREFIX))
    if not args.quiet:
        print("dashboard: %s (%d expressions, %d panels)" % (args.dashboard, len(exprs), len(seen_ids)))
        print("scrape:    %s (%d %s* families)" % (args.scrape, len(scraped), PREFIX))
        print("families used (%d): %s" % (len(used_families), ", ".join(sorted(used_families))))
        print("labels used (%d): %s" % (len(used_labels), ", ".join(sorted(used_labels))))
        unused = [f for f in scraped if f not in used_families]
        if unused:
            print("exported but not on the dashboard: %s" % ", ".join(unused))
    if args.prometheus:
        evaluate(args.prometheus.rstrip("/"), exprs, dash, errors, warnings, args.quiet)
    for w in sorted(set(warnings)):
        print("warning: " + w)
    if errors:
        for e in errors:
            print("ERROR: " + e)
        print("FAIL: %d problem(s)" % len(errors))
        return 1
    if not args.quiet:
        print("OK: every metric and label on the dashboard exists in the scrape")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Turn loadtest/compare.sh's raw result lines into Markdown tables with ratios.

Usage: compare_report.py RESULTS_FILE   (called by compare.sh; standard library only)

Input lines (one per measurement):
  chat|stream|big CONNS PEER req_s p50 p90 p99 p999 non2xx sockerr cpu_us_per_req requests [user_us sys_us]
  ttfb 1 PEER ttfb_us P50 P99 first_event_us P50 P99 total_us P50 P99 n N errors E
  idle N PEER rss_idle_kib A rss_held_kib B held OK FAILED
Latencies are microseconds. Targets are the performance issue's (#7).
"""

import sys
from collections import defaultdict


def fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "–"


def main() -> int:
    wrk = defaultdict(dict)  # (scenario, conns) -> peer -> dict
    ttfb = {}
    idle = {}
    order = []
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            p = line.split()
            if not p:
                continue
            if p[0] in ("chat", "stream", "big"):
                key = (p[0], int(p[1]))
                if key not in wrk:
                    order.append(key)
                wrk[key][p[2]] = dict(
                    rps=float(p[3]), p50=int(p[4]), p90=int(p[5]), p99=int(p[6]),
                    p999=int(p[7]), errors=int(p[8]) + int(p[9]), cpu=float(p[10]),
                    requests=int(p[11]),
                    split=(float(p[12]), float(p[13])) if len(p) > 13 else None,
                )
            elif p[0] == "ttfb":
                v = dict(zip(p[3::3], zip(p[4::3], p[5::3])))
                ttfb[p[2]] = {k: (float(a), float(b)) for k, (a, b) in v.items() if k.endswith("_us")}
                ttfb[p[2]]["n"] = int(p[p.index("n") + 1])
                ttfb[p[2]]["errors"] = int(p[p.index("errors") + 1])
            elif p[0] == "idle":
                idle[p[2]] = dict(idle=int(p[4]) / 1024, held=int(p[6]) / 1024, ok=int(p[8]), failed=int(p[9]))

    summary = []  # (what, value, target, met)
    for key in order:
        scenario, conns = key
        rows = wrk[key]
        d = rows.get("direct")
        title = {"chat": "Non-stream chat", "stream": "Streaming chat (50 chunks)",
                 "big": "4 MiB bodies, model last"}[scenario]
        print(f"#### {title}, {conns} connection{'s' if conns > 1 else ''}\n")
        print("| peer | req/s | p50 | p90 | p99 | p99.9 | errors | proxy CPU µs/req (user + sys) | req/s ÷ direct | added p50 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for peer, r in rows.items():
            added = fmt_us(r["p50"] - d["p50"]) if d and peer != "direct" else "–"
            cpu = f"{r['cpu']:.1f}"
            if r["split"]:
                cpu += f" ({r['split'][0]:.1f} + {r['split'][1]:.1f})"
            if peer == "direct":
                cpu = f"backend: {cpu}"
            print(f"| {peer} | {r['rps']:,.0f} | {fmt_us(r['p50'])} | {fmt_us(r['p90'])} | {fmt_us(r['p99'])} "
                  f"| {fmt_us(r['p999'])} | {r['errors']} | {cpu} | {ratio(r['rps'], d['rps']) if d else '–'} | {added} |")
        print()
        mg, ng, vr = rows.get("modelgate"), rows.get("nginx"), rows.get("vllm-router")
        pf = rows.get("pingora")
        label = f"{scenario} c={conns}"
        if mg and ng:
            target = 1.1 if scenario != "big" else None
            r = mg["rps"] / ng["rps"] if ng["rps"] else 0
            summary.append((f"{label}: req/s modelgate ÷ nginx", f"{r:.2f}", "≥ 1.10" if target else "(none)",
                            (r >= target) if target else None))
            if mg["cpu"] and ng["cpu"]:
                c = mg["cpu"] / ng["cpu"]
                summary.append((f"{label}: CPU/req modelgate ÷ nginx", f"{c:.2f} ({mg['cpu']:.1f} vs {ng['cpu']:.1f} µs)",
                                "≤ 0.90", c <= 0.9))
            if scenario == "chat" and conns == 1 and d:
                a_mg, a_ng = mg["p50"] - d["p50"], ng["p50"] - d["p50"]
                if a_ng > 0:
                    summary.append((f"{label}: added p50 modelgate ÷ nginx", f"{a_mg / a_ng:.2f} ({a_mg} vs {a_ng} µs)",
                                    "≤ 0.80", a_mg / a_ng <= 0.8))
        if mg and pf and pf["rps"] and pf["cpu"] and mg["cpu"]:
            # Not a target: how much of modelgate's cost is Pingora's own pipeline.
            summary.append((f"{label}: req/s modelgate ÷ bare pingora-proxy", f"{mg['rps'] / pf['rps']:.2f}",
                            "(floor)", None))
            summary.append((f"{label}: CPU/req modelgate ÷ bare pingora-proxy",
                            f"{mg['cpu'] / pf['cpu']:.2f} ({mg['cpu']:.1f} vs {pf['cpu']:.1f} µs)", "(floor)", None))
            if ng and ng["cpu"]:
                summary.append((f"{label}: CPU/req bare pingora-proxy ÷ nginx",
                                f"{pf['cpu'] / ng['cpu']:.2f} ({pf['cpu']:.1f} vs {ng['cpu']:.1f} µs)", "(floor)", None))
        if mg and vr and scenario != "big":
            r = mg["rps"] / vr["rps"] if vr["rps"] else 0
            summary.append((f"{label}: req/s modelgate ÷ vllm-router", f"{r:.2f}", "≥ 4.0", r >= 4.0))

    if ttfb:
        d = ttfb.get("direct")
        print("#### Streaming latency, 1 keep-alive connection (sse_client.py)\n")
        print("| peer | TTFB p50 | first event p50 | first event p99 | whole stream p50 | whole stream p99 | first-event overhead p50 | n | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        for peer, t in ttfb.items():
            over = fmt_us(t["first_event_us"][0] - d["first_event_us"][0]) if d and peer != "direct" else "–"
            print(f"| {peer} | {fmt_us(t['ttfb_us'][0])} | {fmt_us(t['first_event_us'][0])} | {fmt_us(t['first_event_us'][1])} "
                  f"| {fmt_us(t['total_us'][0])} | {fmt_us(t['total_us'][1])} | {over} | {t['n']} | {t['errors']} |")
        print()
        if d and "modelgate" in ttfb and "nginx" in ttfb:
            o_mg = ttfb["modelgate"]["first_event_us"][0] - d["first_event_us"][0]
            o_ng = ttfb["nginx"]["first_event_us"][0] - d["first_event_us"][0]
            if o_ng > 0:
                summary.append(("first SSE event overhead p50 modelgate ÷ nginx",
                                f"{o_mg / o_ng:.2f} ({o_mg:.0f} vs {o_ng:.0f} µs)", "≤ 0.80", o_mg / o_ng <= 0.8))
    if idle:
        print("#### Memory: RSS idle and holding idle keep-alive connections (idle_conns.py)\n")
        print("| peer | RSS idle | RSS with connections held | connections held | failed |")
        print("|---|---|---|---|---|")
        for peer, m in idle.items():
            print(f"| {peer} | {m['idle']:.1f} MiB | {m['held']:.1f} MiB | {m['ok']:,} | {m['failed']:,} |")
        print()
        if "modelgate" in idle:
            m = idle["modelgate"]
            summary.append(("modelgate RSS idle", f"{m['idle']:.1f} MiB", "≤ 32 MiB", m["idle"] <= 32))
            summary.append((f"modelgate RSS at {m['ok']:,} idle connections", f"{m['held']:.1f} MiB", "≤ 64 MiB",
                            m["held"] <= 64 and m["failed"] == 0))
    if summary:
        print("#### Targets (issue #7)\n")
        print("| what | measured | target | met |")
        print("|---|---|---|---|")
        for what, value, target, met in summary:
            print(f"| {what} | {value} | {target} | {'–' if met is None else ('yes' if met else '**no**')} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

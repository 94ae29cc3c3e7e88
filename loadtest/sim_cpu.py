#!/usr/bin/env python3
"""CPU cost of the simulated vLLM fleet (`modelgate-mock --sim`) under a routing-benchmark load.

Usage: sim_cpu.py MOCK_BINARY [--servers 4] [--rate 50] [--seconds 30] [--prompt-tokens 2300]
                  [--prefix-tokens 2048] [--groups 64] [--output-tokens 128] [--time-scale 1]
                  [--kv-blocks B]

Starts `MOCK_BINARY --sim --port 0 --ports SERVERS --time-scale X` (and `--kv-blocks B` if
given, to put the KV cache under pressure), waits for its readiness
lines, then sends an open-loop Poisson stream of RATE streamed completions a (simulated)
second, spread round-robin over the servers, for SECONDS (simulated). Each prompt is one of
GROUPS shared prefixes of PREFIX_TOKENS plus a unique question, PROMPT_TOKENS in all (4 bytes a
token, as the simulator counts). Prints the mock process's CPU (user + system time from
/proc/PID/stat over the load window) as a percentage of one core, the requests completed, the
client-side TTFT p50/p99 in simulated seconds, and the fleet's prefix hit rate, lateness and
busy time from /metrics. Standard library only; seeded, so runs are comparable.
"""

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import time

BYTES_PER_TOKEN = 4


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_mock(args) -> tuple[subprocess.Popen, list]:
    servers = args.servers
    command = [args.binary, "--sim", "--port", "0", "--ports", str(servers), "--model", "m",
               "--time-scale", str(args.time_scale)]
    if args.kv_blocks:
        command += ["--kv-blocks", str(args.kv_blocks)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    addrs = []
    deadline = time.monotonic() + 30
    while len(addrs) < servers:
        line = proc.stderr.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"mock did not get ready: {line!r}")
        match = re.search(r" serving \S+ on (\S+):(\d+)$", line.strip())
        if match:
            addrs.append((match.group(1), int(match.group(2))))
    return proc, addrs


async def http(host: str, port: int, method: str, path: str, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    writer.write(head.encode() + body)
    data = await reader.read()
    writer.close()
    return data


async def stream(addr, body: bytes, scale: float, ttfts: list, errors: list) -> None:
    """One streamed completion; records its TTFT in simulated seconds."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(*addr)
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: {addr[0]}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        seen = b""
        first = None
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            seen = seen[-64:] + chunk
            if first is None and b"data: {" in seen:
                first = time.monotonic()
            if b"data: [DONE]" in seen:
                break
        writer.close()
        if first is None or b"data: [DONE]" not in seen:
            errors.append("incomplete stream")
        else:
            ttfts.append((first - start) / scale)
    except OSError as e:
        errors.append(str(e))


def prompts(args, rng: random.Random):
    """Endless prompt bodies: a group's shared prefix plus a unique question."""
    letters = "abcdefghijklmnopqrstuvwxyz "
    prefix_bytes = args.prefix_tokens * BYTES_PER_TOKEN
    question_bytes = (args.prompt_tokens - args.prefix_tokens) * BYTES_PER_TOKEN
    prefixes = ["".join(rng.choice(letters) for _ in range(prefix_bytes))
                for _ in range(args.groups)]
    n = 0
    while True:
        n += 1
        question = f"q{n} " + "".join(rng.choice(letters) for _ in range(question_bytes))
        text = rng.choice(prefixes) + question[:question_bytes]
        yield ('{"model":"m","prompt":"%s","max_tokens":%d,"stream":true,'
               '"stream_options":{"include_usage":true}}' % (text, args.output_tokens)).encode()


def metric_sum(texts: list, name: str) -> float:
    total = 0.0
    for text in texts:
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def run(args) -> None:
    proc, addrs = start_mock(args)
    try:
        rng = random.Random(7)
        bodies = prompts(args, rng)
        ttfts, errors, tasks = [], [], []
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        wall = args.seconds * args.time_scale
        at = 0.0
        k = 0
        while True:
            at += rng.expovariate(args.rate) * args.time_scale
            if at >= wall:
                break
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(
                stream(addrs[k % len(addrs)], next(bodies), args.time_scale, ttfts, errors)))
            k += 1
        await asyncio.gather(*tasks)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        texts = [(await http(h, p, "GET", "/metrics")).decode() for h, p in addrs]
    finally:
        proc.terminate()
        proc.wait()
    ttfts.sort()
    pct = lambda q: ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else float("nan")
    queries = metric_sum(texts, "vllm:prefix_cache_queries_total")
    hits = metric_sum(texts, "vllm:prefix_cache_hits_total")
    print(f"requests {len(ttfts)} errors {len(errors)} over {t1 - t0:.1f} s wall "
          f"({len(ttfts) / ((t1 - t0) / args.time_scale):.1f} req/s simulated)")
    print(f"mock CPU {100 * (cpu1 - cpu0) / (t1 - t0):.1f} % of one core "
          f"({cpu1 - cpu0:.2f} s user+sys in {t1 - t0:.1f} s)")
    print(f"TTFT p50 {pct(0.5):.3f} s p99 {pct(0.99):.3f} s (simulated); "
          f"prefix hit rate {hits / max(queries, 1):.3f}; "
          f"late {metric_sum(texts, 'modelgate_mock_sim_late_seconds_total'):.3f} s in "
          f"{metric_sum(texts, 'modelgate_mock_sim_late_steps_total'):.0f} of "
          f"{metric_sum(texts, 'modelgate_mock_sim_steps_total'):.0f} steps, "
          f"busy {metric_sum(texts, 'modelgate_mock_sim_busy_seconds_total'):.1f} s "
          f"(simulated, all servers); preemptions "
          f"{metric_sum(texts, 'vllm:num_preemptions_total'):.0f}")
    if errors:
        print("first error:", errors[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--prompt-tokens", type=int, default=2300)
    parser.add_argument("--prefix-tokens", type=int, default=2048)
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--kv-blocks", type=int, default=0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Streaming latency on one keep-alive connection: time to first byte, to the first SSE event
and to the end of the stream, for N sequential streamed chat completions.

Usage: sse_client.py HOST PORT [--requests N] [--seconds S]
Prints one line: `ttfb_us p50 p99 first_event_us p50 p99 total_us p50 p99 n errors`.
Bounded: stops after N requests or S seconds, whichever comes first; every socket operation
has a 5 s timeout. Standard library only (blocking sockets: less client noise than asyncio).
"""

import argparse
import socket
import sys
import time

BODY = (
    b'{"model":"mistral-7b","messages":[{"role":"user","content":"Describe vLLM in one '
    b'paragraph."}],"max_tokens":50,"stream":true}'
)


def request(host: str) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )


def one(sock: socket.socket, req: bytes) -> tuple[float, float, float]:
    """Send one request; return (ttfb, first event, total) in seconds."""
    start = time.perf_counter()
    sock.sendall(req)
    buf = b""
    ttfb = first_event = None
    head_end = -1
    body_start = 0
    length = None
    chunked = False
    while True:
        data = sock.recv(65536)
        now = time.perf_counter()
        if not data:
            raise ConnectionError("closed by peer")
        if ttfb is None:
            ttfb = now - start
        buf += data
        if head_end < 0:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = buf[:head_end].lower()
            if not head.startswith(b"http/1.1 200"):
                raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
            body_start = head_end + 4
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value:
                    chunked = True
        if first_event is None and buf.find(b"data:", body_start) >= 0:
            first_event = now - start
        if length is not None and len(buf) - body_start >= length:
            break
        if chunked and buf.endswith(b"\r\n0\r\n\r\n"):
            break
        if length is None and not chunked:
            raise ConnectionError("response without framing")
    return ttfb, first_event if first_event is not None else now - start, now - start


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100.0))] * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args()
    req = request(args.host)
    results: list[tuple[float, float, float]] = []
    errors = 0
    deadline = time.monotonic() + args.seconds
    sock = None
    done = 0
    while done < args.requests + args.warmup and time.monotonic() < deadline:
        if sock is None:
            sock = socket.create_connection((args.host, args.port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            r = one(sock, req)
            if done >= args.warmup:
                results.append(r)
        except (OSError, ValueError) as e:
            errors += 1
            print(f"sse_client: {e}", file=sys.stderr)
            sock.close()
            sock = None
        done += 1
    if sock is not None:
        sock.close()
    ttfb = [r[0] for r in results]
    first = [r[1] for r in results]
    total = [r[2] for r in results]
    print(
        f"ttfb_us {pct(ttfb, 50):.0f} {pct(ttfb, 99):.0f} "
        f"first_event_us {pct(first, 50):.0f} {pct(first, 99):.0f} "
        f"total_us {pct(total, 50):.0f} {pct(total, 99):.0f} n {len(results)} errors {errors}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

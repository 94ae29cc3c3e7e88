#!/usr/bin/env python3
"""Open N keep-alive connections to HOST:PORT, send one non-stream chat completion on each and
read its answer (so each is an HTTP keep-alive connection that has served a request), then hold
them all idle for HOLD seconds and close them.

Usage: idle_conns.py HOST PORT [--connections N] [--hold S] [--timeout S] [--no-request]
Prints `held OK FAILED` (flushed) once every connection is set up, then `closed` at the end.
The caller measures the server's memory between the two lines. Bounded: every step has a
timeout and the whole run ends after --timeout seconds. Needs `ulimit -n` above N.
"""

import argparse
import asyncio
import sys

BODY = (
    b'{"model":"mistral-7b","messages":[{"role":"user","content":"hi"}],'
    b'"max_tokens":16,"stream":false}'
)


async def read_response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    if not lines[0].startswith(b"http/1.1 200"):
        raise ConnectionError(lines[0].decode(errors="replace"))
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return
    else:
        raise ConnectionError("response without framing")


async def open_one(host: str, port: int, req: bytes, gate: asyncio.Semaphore, conns: list):
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        if req:
            writer.write(req)
            await writer.drain()
            await asyncio.wait_for(read_response(reader), 10)
        conns.append(writer)


async def run(args) -> int:
    req = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {args.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    if args.no_request:
        req = b""
    gate = asyncio.Semaphore(256)
    conns: list = []
    results = await asyncio.gather(
        *(open_one(args.host, args.port, req, gate, conns) for _ in range(args.connections)),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(f"idle_conns: first failure: {failed[0]!r}", file=sys.stderr)
    print(f"held {len(conns)} {len(failed)}", flush=True)
    await asyncio.sleep(args.hold)
    for w in conns:
        w.close()
    print("closed", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--no-request", action="store_true", help="only connect (no request)")
    args = ap.parse_args()
    try:
        return asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        print("idle_conns: timed out", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

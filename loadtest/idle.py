#!/usr/bin/env python3
"""Open N idle connections to a listener and report the RSS growth of a process.

usage: loadtest/idle.py PORT N MODE PID
  MODE silent: connect and send nothing (held until the header timeout)
  MODE req:    send one `GET /v1/models`, read the answer, then sit in keep-alive
Bounded: every socket has a 30 s timeout; the script exits (closing all) after measuring.
"""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def main():
    port, n, mode, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kib(pid)
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if mode == "req":
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
        conns.append(s)
    if mode == "req":
        for s in conns:
            if not s.recv(65536).startswith(b"HTTP/1.1 200"):
                raise SystemExit("request failed")
    time.sleep(1.0)
    after = rss_kib(pid)
    print(f"mode={mode} n={n} rss_before={before}KiB rss_after={after}KiB "
          f"per_connection={(after - before) * 1024 // n}B")
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()

"""CopyCat beside etcd in one run: durable writes per second and one write's latency,
and their ratios (issue 16 compares within one run only: this machine's speed moves).

What it measures, each on 3 processes on loopback with fsync on every commit:
* etcd (Debian's `etcd`, when it is on PATH): puts of 100-byte values through its v3
  JSON gateway, `--concurrency` keep-alive HTTP connections to a member that does not
  lead (`etcd_proposals_per_s`), then one put at a time (`etcd_p50_ms`);
* CopyCat: `benchmarks/cluster.py`'s durable run, a subscriber on a node that does not
  lead proposing (`copycat_proposals_per_s`, `copycat_p50_ms`).
The client of etcd is Python (this file), as CopyCat's proposers are: both share the
2 cores with the servers. PySyncObj is not run here yet.

How to run (a minute or two; etcd is installed for the benchmark only, never a
dependency of CopyCat: `apt-get install etcd-server`):

    .venv/bin/python benchmarks/peers.py

The last line printed is one JSON object with the figures and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import cluster


def start_etcd(root: Path) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """Three etcd members on loopback; returns their processes and client ports."""
    ports = cluster.free_ports(6)
    client, peer = ports[:3], ports[3:]
    initial = ",".join(f"m{i}=http://127.0.0.1:{peer[i]}" for i in range(3))
    procs = [
        subprocess.Popen(
            [
                "etcd",
                f"--name=m{i}",
                f"--data-dir={root / f'm{i}'}",
                f"--listen-client-urls=http://127.0.0.1:{client[i]}",
                f"--advertise-client-urls=http://127.0.0.1:{client[i]}",
                f"--listen-peer-urls=http://127.0.0.1:{peer[i]}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer[i]}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                "--log-level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(3)
    ]
    return procs, client


class Http:
    """One keep-alive HTTP/1.1 connection, one request at a time (a page of asyncio:
    the standard library has no asyncio HTTP client, and a client library would be a
    dependency of the benchmark)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        answer = await self.reader.readexactly(length) if length else b"{}"
        if status != 200:
            raise RuntimeError(f"etcd answered {status}: {answer[:200]!r}")
        parsed: dict[str, object] = json.loads(answer)
        return parsed

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


async def etcd_figures(
    ports: list[int], count: int, concurrency: int, samples: int
) -> dict[str, float]:
    deadline = time.monotonic() + 60
    leader_port = None
    while leader_port is None:
        for port in ports:
            try:
                status = await Http(port).post("/v3/maintenance/status", {})
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                continue
            header = status.get("header")
            leads = isinstance(header, dict) and status["leader"] == header.get("member_id")
            if status.get("leader") and leads:
                leader_port = port
        if leader_port is None:
            if time.monotonic() > deadline:
                raise RuntimeError("etcd elected no leader within 60 s")
            await asyncio.sleep(0.2)
    target = next(p for p in ports if p != leader_port)  # as CopyCat's proposer: a follower
    value = _b64(b"x" * 100)
    remaining = count

    async def worker(n: int) -> None:
        nonlocal remaining
        conn = Http(target)
        try:
            while remaining > 0:
                remaining -= 1
                await conn.post("/v3/kv/put", {"key": _b64(b"k%d" % n), "value": value})
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    rate = count / (time.perf_counter() - started)
    conn = Http(target)
    times = []
    for i in range(samples):
        begin = time.perf_counter()
        await conn.post("/v3/kv/put", {"key": _b64(b"lat%d" % i), "value": value})
        times.append(time.perf_counter() - begin)
    conn.close()
    times.sort()
    return {"proposals_per_s": rate, "p50_ms": times[len(times) // 2] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    out: dict[str, object] = {"cpus": os.cpu_count(), "payload_bytes": 100, "nodes": 3}
    etcd: dict[str, float] | None = None
    if shutil.which("etcd"):
        say(f"etcd: {args.count} puts, {args.concurrency} connections, then latency")
        with tempfile.TemporaryDirectory() as tmp:
            procs, ports = start_etcd(Path(tmp))
            try:
                etcd = asyncio.run(etcd_figures(ports, args.count, args.concurrency, args.samples))
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait(timeout=10)
        out["etcd_proposals_per_s"] = round(etcd["proposals_per_s"])
        out["etcd_p50_ms"] = round(etcd["p50_ms"], 2)
    else:
        say("etcd is not on PATH: only CopyCat is measured")
    say(f"CopyCat: {args.count} proposals, {args.concurrency} in flight, then latency")
    ours: dict[str, float] = cluster.run_throughput(
        True, args.count, args.concurrency, args.samples
    )
    out["copycat_proposals_per_s"] = round(ours["proposals_per_s"])
    out["copycat_p50_ms"] = round(ours["p50_ms"], 2)
    if etcd is not None:
        out["throughput_ratio_to_etcd"] = round(
            ours["proposals_per_s"] / etcd["proposals_per_s"], 2
        )
        out["p50_ratio_to_etcd"] = round(ours["p50_ms"] / etcd["p50_ms"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

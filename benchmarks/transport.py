"""Transport throughput between two processes on loopback.

What it measures: a sender process (this one) streams raft messages to a receiver
process (a child started by this script) through `copycat.transport.Endpoint`, on
uvloop when installed. Each figure is messages (or bytes) fully received and
decoded into raft dataclasses on the receiver, divided by the sender's wall time
from its first send to the receiver's answer that it has them all.

* `small_msgs_per_s`: `AppendEntries` messages carrying one entry, padded so each
  encodes to 100 bytes on the wire (`small_msg_wire_bytes`), sent in batches of
  `--batch` per event-loop turn (the transport coalesces each batch into one frame).
* `mb_per_s`: `AppendEntries` messages carrying one 1 MiB entry, one per frame;
  MB = 10**6 bytes of entry data.
* `tls_small_msgs_per_s`, `tls_mb_per_s`: the same over mutual TLS (certificates
  generated for the run with `cryptography`).
* `grpc_small_msgs_per_s` (when grpcio is installed): the DESIGN.md baseline. The same
  100-byte messages, encoded by the same codec, sent as one grpc.aio stream message
  each over a client-streaming call (gRPC does its own HTTP/2 batching) and decoded
  the same way on the receiver. `grpc_batched_msgs_per_s`: one stream message per
  batch of `--batch` messages, i.e. our batching with gRPC as the pipe.

Targets (DESIGN/issue 4): small_msgs_per_s >= 200,000 and mb_per_s >= 300 without TLS.

How to run:

    .venv/bin/python benchmarks/transport.py                 # about 30 s
    .venv/bin/python benchmarks/transport.py --small 2000000 --big 2000
    .venv/bin/python benchmarks/transport.py --profile small # cProfile of the sender

Progress goes to stderr; the last stdout line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from copycat.raft import AppendEntries, Entry
from copycat.transport import (
    Endpoint,
    TransportConfig,
    decode_messages,
    encode_message,
    make_dev_certs,
    new_event_loop,
)
from copycat.transport._codec import decode_message_item, unpack

SENDER, RECEIVER = 1, 2
GROUPS = 1000


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def small_message(i: int, pad: int) -> AppendEntries:
    return AppendEntries(
        term=7,
        sender=SENDER,
        to=RECEIVER,
        prev_index=i,
        prev_term=7,
        entries=(Entry(term=7, index=i + 1, data=b"x" * pad),),
        commit=i,
    )


def pad_for_100_bytes() -> int:
    pad = 0
    while len(encode_message(999, small_message(1_000_000, pad + 1))) <= 100:
        pad += 1
    return pad


def config(node_id: int, tls_dir: str | None, port: int = 0) -> TransportConfig:
    tls = None
    if tls_dir is not None:
        from copycat.transport import TLSConfig

        tls = TLSConfig(
            ca_file=f"{tls_dir}/ca.pem",
            cert_file=f"{tls_dir}/node-{node_id}.pem",
            key_file=f"{tls_dir}/node-{node_id}.key",
        )
    return TransportConfig(
        node_id=node_id,
        cluster_name="bench",
        port=port,
        tls=tls,
        max_frame_bytes=32 << 20,
        send_queue_max_bytes=256 << 20,
        send_queue_max_msgs=1 << 22,
    )


# ---------------------------------------------------------------- receiver process


async def receiver_main(tls_dir: str | None) -> None:
    received = 0
    target = -1
    done = asyncio.Event()

    def on_messages(peer: int, batch: list) -> None:
        nonlocal received
        received += len(batch)
        if received >= target >= 0:
            done.set()

    async def expect(peer: int, body: bytes) -> bytes:
        nonlocal received, target
        target = int(body)
        if received >= target:
            done.set()
        await done.wait()
        n = received
        received, target = 0, -1
        done.clear()
        return str(n).encode()

    async def ping(peer: int, body: bytes) -> bytes:
        return b"pong"

    ep = Endpoint(config(RECEIVER, tls_dir), on_messages=on_messages)
    ep.register_request_handler("expect", expect)
    ep.register_request_handler("ping", ping)
    await ep.start()
    print(f"PORT {ep.address[1]}", flush=True)
    # Run until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await ep.close()


# ---------------------------------------------------------------- sender side


def start_receiver(args: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", "receiver", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"receiver failed to start: {line!r}")
    return proc, int(line.split()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run_small(ep: Endpoint, n: int, batch: int, pad: int) -> float:
    msgs = [small_message(i, pad) for i in range(batch)]
    await ep.request(RECEIVER, "ping", timeout_s=10)
    start = time.perf_counter()
    sent = 0
    send = ep.send
    while sent < n:
        k = min(batch, n - sent)
        for i in range(k):
            send(i % GROUPS, msgs[i])
        sent += k
        status = ep.peer_status(RECEIVER)
        if status is not None and (status.write_paused or status.queued_bytes > 8 << 20):
            await ep.drain(RECEIVER)
        else:
            await asyncio.sleep(0)
    got = int(await ep.request(RECEIVER, "expect", str(n).encode(), timeout_s=300))
    elapsed = time.perf_counter() - start
    assert got == n, (got, n)
    return n / elapsed


async def run_big(ep: Endpoint, n: int) -> float:
    data = os.urandom(1 << 20)
    await ep.request(RECEIVER, "ping", timeout_s=10)
    start = time.perf_counter()
    for i in range(n):
        ep.send(
            i % GROUPS,
            AppendEntries(
                term=7,
                sender=SENDER,
                to=RECEIVER,
                prev_index=i,
                prev_term=7,
                entries=(Entry(term=7, index=i + 1, data=data),),
                commit=i,
            ),
        )
        await ep.drain(RECEIVER)
    got = int(await ep.request(RECEIVER, "expect", str(n).encode(), timeout_s=300))
    elapsed = time.perf_counter() - start
    assert got == n, (got, n)
    return n * len(data) / elapsed / 1e6


async def sender_run(kind: str, n: int, batch: int, pad: int, tls_dir: str | None) -> float:
    proc, port = start_receiver(["--tls-dir", tls_dir] if tls_dir else [])
    try:
        ep = Endpoint(config(SENDER, tls_dir))
        await ep.start()
        ep.add_peer(RECEIVER, "127.0.0.1", port)
        try:
            if kind == "small":
                return await run_small(ep, n, batch, pad)
            return await run_big(ep, n)
        finally:
            await ep.close()
    finally:
        stop(proc)


# ---------------------------------------------------------------- grpc baseline


def grpc_available() -> bool:
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


async def grpc_receiver_main() -> None:
    import grpc

    async def stream(request_iterator, context) -> bytes:
        n = 0
        async for item in request_iterator:
            raw = unpack(item)
            if type(raw) is list and raw and type(raw[0]) is list:
                n += len(decode_messages(item))
            else:
                decode_message_item(raw)
                n += 1
        return str(n).encode()

    handler = grpc.method_handlers_generic_handler(
        "bench.Transport",
        {"Stream": grpc.stream_unary_rpc_method_handler(stream)},
    )
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"PORT {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


async def grpc_sender_run(n: int, batch: int, pad: int, batched: bool) -> float:
    import grpc

    from copycat.transport._codec import new_packer

    proc, port = start_receiver(["--grpc"])
    try:
        pack = new_packer()
        msgs = [small_message(i, pad) for i in range(batch)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_unary("/bench.Transport/Stream")

            async def items():
                sent = 0
                while sent < n:
                    k = min(batch, n - sent)
                    encoded = [encode_message(i % GROUPS, msgs[i], pack) for i in range(k)]
                    if batched:
                        yield bytes([0xDC]) + k.to_bytes(2, "big") + b"".join(encoded)
                    else:
                        for item in encoded:
                            yield item
                    sent += k

            start = time.perf_counter()
            got = int(await call(items(), timeout=600))
            elapsed = time.perf_counter() - start
        assert got == n, (got, n)
        return n / elapsed
    finally:
        stop(proc)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["sender", "receiver"], default="sender")
    parser.add_argument("--tls-dir", default=None)
    parser.add_argument("--grpc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--small", type=int, default=1_000_000, help="small messages per run")
    parser.add_argument("--big", type=int, default=1000, help="1 MiB messages per run")
    parser.add_argument("--batch", type=int, default=1000, help="small messages per loop turn")
    parser.add_argument("--profile", choices=["small", "big"], default=None)
    args = parser.parse_args()

    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    if args.role == "receiver":
        loop.run_until_complete(grpc_receiver_main() if args.grpc else receiver_main(args.tls_dir))
        return

    pad = pad_for_100_bytes()
    wire = len(encode_message(999, small_message(1_000_000, pad)))
    log(f"loop: {type(loop).__module__}; small message: {wire} bytes on the wire")
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        n = args.small if args.profile == "small" else args.big
        rate = loop.run_until_complete(sender_run(args.profile, n, args.batch, pad, None))
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        log(f"{args.profile}: {rate:,.0f}")
        return

    results: dict[str, float | int | str] = {
        "small_msg_wire_bytes": wire,
        "loop": type(loop).__module__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        make_dev_certs(tmp, [SENDER, RECEIVER])
        plans = [
            ("small_msgs_per_s", "small", args.small, None),
            ("mb_per_s", "big", args.big, None),
            ("tls_small_msgs_per_s", "small", args.small, tmp),
            ("tls_mb_per_s", "big", args.big, tmp),
        ]
        for name, kind, n, tls_dir in plans:
            log(f"{name}: sending {n:,} messages ...")
            value = loop.run_until_complete(sender_run(kind, n, args.batch, pad, tls_dir))
            results[name] = round(value, 1)
            log(f"{name}: {value:,.1f}")
    if grpc_available():
        n = max(args.small // 5, args.batch)
        for name, batched in (("grpc_small_msgs_per_s", False), ("grpc_batched_msgs_per_s", True)):
            log(f"{name}: sending {n:,} messages through grpc.aio ...")
            value = loop.run_until_complete(grpc_sender_run(n, args.batch, pad, batched))
            results[name] = round(value, 1)
            log(f"{name}: {value:,.1f}")
    else:
        log("grpcio is not installed: no gRPC baseline")
    loop.close()
    print(json.dumps(results))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    main()

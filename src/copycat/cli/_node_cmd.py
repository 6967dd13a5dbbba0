# `copycat node`: run one node from flags and `COPYCAT_*` environment variables until
# SIGINT or SIGTERM.
#
# What lives here: the flags, their merge with the environment into one `Config`, and
# the process around `_runtime.serve()`.
#
# Precedence, lowest first: the preset (`--preset`, else `Config.default()`), then the
# environment (`Config.from_env`), then flags. Flags are layered as the `COPYCAT_*`
# variables they stand for, so one parser (`Config.from_env`) reads both and the one
# validation of `Config` judges the result; a lan/wan preset is instantiated with
# `insecure_plaintext_gossip` as a placeholder that the merged variables always set.
#
# What must not: return to the interpreter once a node has started (see `_runtime`).
"""The `copycat node` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from copycat._logs import stderr_handler
from copycat.cli._runtime import StartError, exit_now, exit_process, serve
from copycat.errors import ConfigError
from copycat.transport import run as run_loop

if TYPE_CHECKING:
    from collections.abc import Mapping

    from copycat import Config, CopyCat

__all__: Final = ["add_arguments", "build_config", "run"]

log = logging.getLogger("copycat.cli")

ENV_PREFIX: Final = "COPYCAT_"

# argparse dest -> Config field, for every flag that sets a field.
_FLAG_FIELDS: Final = {
    "hostname": "hostname",
    "port": "port",
    "gossip_port": "gossip_port",
    "bind_host": "bind_host",
    "advertise_port": "advertise_port",
    "advertise_gossip_port": "advertise_gossip_port",
    "data_dir": "data_dir",
    "peers": "peers_to_contact",
    "data_center": "data_center",
    "rack": "rack",
    "node_name": "node_name",
    "cluster_name": "cluster_name",
    "node_id": "node_id",
    "tls_ca_file": "tls_ca_file",
    "tls_cert_file": "tls_cert_file",
    "tls_key_file": "tls_key_file",
    "tls_bind_node_id": "tls_bind_node_id",
    "gossip_keys": "gossip_keys",
    "insecure_plaintext_gossip": "insecure_plaintext_gossip",
    "durable": "durable",
    "tick_interval_s": "tick_interval_s",
    "election_ticks": "election_ticks",
    "snapshot_every_entries": "snapshot_every_entries",
    "snapshot_keep_entries": "snapshot_keep_entries",
    "replicas": "replicas",
    "leader_follows_writers": "leader_follows_writers",
    "leader_follow_after_s": "leader_follow_after_s",
    "http_port": "http_port",
    "log_format": "log_format",
}
_FIELD_FLAGS: Final = {field: "--" + dest.replace("_", "-") for dest, field in _FLAG_FIELDS.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `copycat node`. Every one is optional: unset flags fall back to the
    `COPYCAT_*` variable of the same field, then to the preset."""
    ident = parser.add_argument_group("identity and addresses")
    ident.add_argument(
        "--preset",
        choices=("local", "lan", "wan"),
        help="start from Config.local()/lan()/wan() instead of Config.default()",
    )
    ident.add_argument(
        "--hostname",
        help="address published to other nodes; also bound unless --bind-host (default 127.0.0.1)",
    )
    ident.add_argument("--port", type=int, help="CopyCat transport port (default 7458)")
    ident.add_argument("--gossip-port", type=int, help="gossip port (default 7459)")
    ident.add_argument(
        "--bind-host",
        help="address the transport and gossip listen on, for example 0.0.0.0 in a "
        "container (default: --hostname)",
    )
    ident.add_argument(
        "--advertise-port",
        type=int,
        help="transport port published to other nodes, when a mapping forwards it to "
        "--port (default: the bound port)",
    )
    ident.add_argument(
        "--advertise-gossip-port",
        type=int,
        help="gossip port published to other nodes, when a mapping forwards it to "
        "--gossip-port (default: the bound port)",
    )
    ident.add_argument("--data-dir", help="this node's data directory (default ./copy-cat-db)")
    ident.add_argument(
        "--peers",
        action="append",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="gossip addresses of nodes already in the cluster (repeatable; none: start a "
        "new cluster)",
    )
    ident.add_argument("--data-center", help="this node's data center (default dc1)")
    ident.add_argument("--rack", help="this node's rack (default rack1)")
    ident.add_argument(
        "--node-name", help="this node's name in logs and status (default: its HOST:PORT)"
    )
    ident.add_argument("--cluster-name", help="cluster name (default copycat)")
    ident.add_argument(
        "--node-id", type=int, help="node id (default: generated once, kept in the data dir)"
    )
    sec = parser.add_argument_group("security")
    sec.add_argument("--tls-ca-file", help="PEM of the cluster CA (with the two below: mTLS)")
    sec.add_argument("--tls-cert-file", help="PEM of this node's certificate")
    sec.add_argument("--tls-key-file", help="PEM of this node's private key")
    sec.add_argument(
        "--tls-bind-node-id",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require peers' certificates to name their node id (CN node-<id>)",
    )
    sec.add_argument(
        "--gossip-keys",
        action="append",
        metavar="KEY[,KEY...]",
        help="gossip keys, base64 (repeatable; the first encrypts). Visible to `ps`: prefer "
        "--gossip-keys-file or COPYCAT_GOSSIP_KEYS",
    )
    sec.add_argument(
        "--gossip-keys-file",
        type=Path,
        metavar="PATH",
        help="file with one gossip key per line (blank lines and # comments skipped)",
    )
    sec.add_argument(
        "--insecure-plaintext-gossip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="allow gossip without keys off loopback (trusted networks only)",
    )
    tune = parser.add_argument_group("tuning")
    tune.add_argument(
        "--durable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fsync every write before acknowledging it (default on)",
    )
    tune.add_argument("--tick-interval-s", type=float, help="seconds per raft tick")
    tune.add_argument("--election-ticks", type=int, help="ticks before a follower campaigns")
    tune.add_argument(
        "--snapshot-every-entries", type=int, help="entries between a subscriber's snapshots"
    )
    tune.add_argument(
        "--snapshot-keep-entries", type=int, help="entries kept below a snapshot on compaction"
    )
    tune.add_argument("--replicas", type=int, help="default replicas per data structure")
    tune.add_argument(
        "--leader-follows-writers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="move a group's leadership to the data center its proposals come from "
        "(default on with --preset wan, off otherwise)",
    )
    tune.add_argument(
        "--leader-follow-after-s",
        type=float,
        help="seconds one data center must send most proposals before leadership follows",
    )
    tune.add_argument(
        "--max-rtt-s",
        type=float,
        help="with --preset wan: the longest round trip between two data centers, "
        "which the raft timing is scaled to (default 0.15)",
    )
    tune.add_argument(
        "--http-port",
        type=int,
        help="serve /metrics (Prometheus), /status, /healthz and /readyz on this port "
        "of the bind address (0: the OS picks; default: off)",
    )
    run = parser.add_argument_group("process")
    run.add_argument(
        "--status-interval-s",
        type=float,
        default=1.0,
        help="how often the status file (read by `copycat status`) is rewritten (default 1)",
    )
    run.add_argument(
        "--leave-on-exit",
        action="store_true",
        help="on SIGINT/SIGTERM, hand this node's replicas over to other nodes before "
        "stopping (a graceful leave; a second signal stops at once)",
    )
    run.add_argument(
        "--leave-timeout-s",
        type=float,
        default=None,
        help="how long --leave-on-exit hands replicas over before stopping anyway (default 120)",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines on stderr: text (time, level, logger, message) or one JSON "
        "object per line (default text)",
    )
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level on stderr (default info)",
    )


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _read_keys_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("gossip_keys", f"cannot read {path}: {exc.strerror or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The node's `Config` from the preset, `environ` and the flags in `args` (see the
    header for the precedence). Raises `ConfigError` naming the field."""
    from copycat import Config

    merged = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    values: dict[str, object] = {dest: getattr(args, dest) for dest in _FLAG_FIELDS}
    for listed in ("peers", "gossip_keys"):
        given = values[listed]
        if isinstance(given, list):
            values[listed] = [part for item in given for part in str(item).split(",") if part]
    if args.gossip_keys_file is not None:
        keys = _read_keys_file(args.gossip_keys_file)
        previous = values["gossip_keys"]
        values["gossip_keys"] = [*(previous if isinstance(previous, list) else []), *keys]
    for dest, field in _FLAG_FIELDS.items():
        if values[dest] is not None:
            merged[ENV_PREFIX + field.upper()] = _env_text(values[dest])
    preset: str | None = args.preset
    if preset is None:
        base = Config.default()
    elif preset == "local":
        base = Config.local()
    else:
        # lan/wan refuse to exist without keys; the placeholder below is always
        # overwritten by the merged variables, so the final validation is the real one.
        merged.setdefault(ENV_PREFIX + "INSECURE_PLAINTEXT_GOSSIP", "0")
        if preset == "lan":
            base = Config.lan(insecure_plaintext_gossip=True)
        elif args.max_rtt_s is not None:
            base = Config.wan(max_rtt_s=args.max_rtt_s, insecure_plaintext_gossip=True)
        else:
            base = Config.wan(insecure_plaintext_gossip=True)
    if args.max_rtt_s is not None and preset != "wan":
        raise ConfigError("max_rtt_s", "scales the wan preset's timing: give --preset wan")
    return Config.from_env(ENV_PREFIX, environ=merged, base=base)


def describe_config_error(exc: ConfigError) -> str:
    """The error with the flag and variable that set the field, when there are."""
    field = exc.field
    hint = ""
    if field in _FIELD_FLAGS:
        hint = f" (set by {_FIELD_FLAGS[field]} or {ENV_PREFIX}{field.upper()})"
    return f"invalid configuration{hint}: {exc}"


async def _until_signalled(
    cc: CopyCat, *, leave: bool = False, leave_timeout_s: float | None = None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            log.error("second %s: exiting without a clean shutdown", sig.name)
            exit_now(128 + sig.value)
        received.append(sig.name)
        log.info("%s received: shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info(
        "node %d running: transport %s, gossip %s, data dir %s (stop with Ctrl-C or SIGTERM)",
        cc.node_id,
        cc.address,
        cc.gossip_address,
        cc.config.data_dir,
    )
    await stop.wait()
    if leave:
        log.info("leaving the cluster: handing replicas over first")
        await cc.leave(leave_timeout_s)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """`copycat node`. Returns 2 for an invalid configuration; once the node starts, it
    does not return: the process ends through `exit_process()`."""
    try:
        config = build_config(args, environ)
    except ConfigError as exc:
        print(f"copycat node: {describe_config_error(exc)}", file=sys.stderr)
        return 2
    handler = stderr_handler(config.log_format)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper()), handlers=[handler])
    interval = float(args.status_interval_s)
    if not interval > 0:
        print("copycat node: --status-interval-s must be above 0", file=sys.stderr)
        return 2
    code = 0
    try:
        leave = bool(args.leave_on_exit)
        leave_timeout_s = args.leave_timeout_s

        async def body(cc: CopyCat) -> None:
            await _until_signalled(cc, leave=leave, leave_timeout_s=leave_timeout_s)

        run_loop(serve(config, body, status_interval_s=interval))
        log.info("node stopped cleanly")
    except StartError as exc:
        log.error("cannot start the node: %s", exc)
        code = 1
    except TimeoutError:
        log.error("the node did not shut down within the time allowed")
        code = 1
    except KeyboardInterrupt:
        log.error("interrupted while starting")
        code = 130
    except Exception:
        # A bug, not an expected failure: show the traceback, then end the process.
        log.exception("the node failed")
        code = 1
    exit_process(code)

# The `copycat` command line: the parser and the dispatch to each command's module.
#
# What lives here: `main(argv) -> int` and the subcommands' parsers; expected failures
# become a message on stderr and an exit code (2 for usage and configuration errors,
# 1 for failures at run time), never a traceback.
#
# What must not: run a node in this process except through `copycat node` (which then
# ends the process itself, see `_runtime`).
"""`copycat demo | node | status | recover | certs`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Final

from copycat._version import __version__
from copycat.cli import _certs, _node_cmd, _recover

__all__: Final = ["build_parser", "main"]

EPILOG: Final = "See docs/cli.md for the commands, their flags and exit codes."


def build_parser() -> argparse.ArgumentParser:
    """The parser of `copycat` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="copycat",
        description="CopyCat: replicate your program's data structures across nodes, in "
        "order and exactly once.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"copycat {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run a 3-node cluster on this machine and show replication and recovery",
        description="Start 3 node processes on 127.0.0.1, replicate a hashmap, SIGKILL a "
        "node, keep writing, restart it and show it catching up. Takes no arguments.",
    )
    demo.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the temporary data dirs and node logs (for a post-mortem)",
    )

    node = commands.add_parser(
        "node",
        help="run one node until SIGINT or SIGTERM",
        description="Run one CopyCat node from flags and COPYCAT_* environment variables "
        "(flags win; --preset, else the defaults, fill the rest). Logs go to stderr; "
        "a status file for `copycat status` is kept in the data dir.",
    )
    _node_cmd.add_arguments(node)

    status = commands.add_parser(
        "status",
        help="print the members and groups a node sees",
        description="Read the status file a `copycat node` keeps in its data dir (or, with "
        "--node, the /status of any node's HTTP endpoint) and print its members and the "
        "groups it hosts. Exit 0 when the node runs, 1 when it is stopped, gone or not "
        "responding, or has no status file.",
    )
    status.add_argument(
        "--data-dir",
        type=Path,
        action="append",
        help="data dir of a node on this machine (repeatable; default ./copy-cat-db or "
        "$COPYCAT_DATA_DIR)",
    )
    status.add_argument(
        "--node",
        metavar="HOST:PORT",
        action="append",
        help="the HTTP endpoint (http_port, --http-port) of a node, on any machine, "
        "embedded programs included (repeatable); instead of --data-dir",
    )
    status.add_argument(
        "--watch",
        action="store_true",
        help="with --node: a live table, refreshed every --interval-s until Ctrl-C",
    )
    status.add_argument("--interval-s", type=float, default=1.0, help="--watch refresh (1)")
    status.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")

    recover = commands.add_parser(
        "recover",
        help="rebuild a group from one surviving node when its majority is gone for good",
        description="Disaster recovery: make the node at --node the only voter of the data "
        "structure's group, keeping every entry it has; placement and repair add voters "
        "again. The node refuses while the group has a leader or a majority of its voters "
        "is reachable. Without --yes it prints what would happen and what may be lost, and "
        "changes nothing (exit 3). Read docs/operations.md, 'Disaster recovery', first.",
    )
    _recover.add_arguments(recover)

    certs = commands.add_parser(
        "certs",
        help="make a cluster CA and node certificates for mutual TLS",
        description="Make the cluster CA once (`copycat certs ca`), then one certificate "
        "per node signed by it (`copycat certs node`), for --tls-ca-file, --tls-cert-file, "
        "--tls-key-file and --tls-bind-node-id.",
    )
    _certs.add_arguments(certs)
    return parser


def _status(args: argparse.Namespace) -> int:
    from copycat.cli._status import StatusError, liveness, read_status, render

    if args.watch:
        from copycat.cli._status import watch_remote

        if not args.node or args.json or not args.interval_s > 0:
            print(
                "copycat status: --watch needs --node, a positive --interval-s, and no --json",
                file=sys.stderr,
            )
            return 2
        return watch_remote(args.node, interval_s=args.interval_s, count=args.count)
    if args.node:
        return _remote_status(args.node, as_json=bool(args.json))
    dirs: list[Path] = args.data_dir or [Path(os.environ.get("COPYCAT_DATA_DIR", "./copy-cat-db"))]
    code = 0
    now = time.time()
    documents: list[dict[str, object]] = []
    for i, data_dir in enumerate(dirs):
        try:
            status = read_status(data_dir)
        except StatusError as exc:
            print(f"copycat status: {exc}", file=sys.stderr)
            code = 1
            continue
        running, _ = liveness(status, now=now)
        if not running:
            code = 1
        if args.json:
            documents.append({"data_dir": str(data_dir), "running": running, **asdict(status)})
        else:
            if i:
                print()
            print(render(status, now=now))
    if args.json:
        print(json.dumps(documents, indent=1, sort_keys=True))
    return code


def _remote_status(addresses: list[str], *, as_json: bool) -> int:
    from copycat.cli._status import StatusError, fetch_remote, render_remote

    code = 0
    documents: list[dict[str, object]] = []
    for i, address in enumerate(addresses):
        try:
            document = fetch_remote(address)
        except StatusError as exc:
            print(f"copycat status: {exc}", file=sys.stderr)
            code = 1
            continue
        if as_json:
            documents.append({"address": address, **document})
        else:
            if i:
                print()
            print(render_remote(document))
    if as_json:
        print(json.dumps(documents, indent=1, sort_keys=True))
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the `copycat` command line with `argv` (default: `sys.argv[1:]`) and return
    its exit code: 0 success, 1 failure at run time, 2 usage or configuration error,
    130 interrupted. `copycat node` does not return once its node has started: it ends
    the process (see docs/cli.md)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command == "demo":
        from copycat.cli import _demo

        return _demo.run(keep_data=bool(args.keep_data))
    if args.command == "node":
        return _node_cmd.run(args, os.environ)
    if args.command == "certs":
        return _certs.run(args)
    if args.command == "recover":
        return _recover.run(args)
    return _status(args)

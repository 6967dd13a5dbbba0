# `copycat recover`: rebuild a group from one surviving node when its voters' majority is
# gone for good, through the node's HTTP endpoint (POST /recover, loopback only).
#
# What lives here: the request, and the printing of the node's report or refusal.
# What must not: any decision (the node weighs the evidence: `copycat.host.Recovery`).
"""`copycat recover --node HOST:PORT DATA_STRUCTURE_ID [--yes]`."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import argparse

__all__: Final = ["DRY_RUN_EXIT", "add_arguments", "post_recover", "run"]

DRY_RUN_EXIT: Final = 3
"""Exit code without `--yes`: the report of what would happen was printed, nothing changed."""


class RecoverError(Exception):
    """The node could not be asked (unreachable, or it answered something else)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_structure_id", help="the data structure whose group to rebuild")
    parser.add_argument(
        "--node",
        metavar="HOST:PORT",
        required=True,
        help="the HTTP endpoint (http_port, --http-port) of the surviving node, reached "
        "from its own machine (POST /recover answers loopback connections only)",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="do it: without --yes only the report of what would happen is printed",
    )
    parser.add_argument("--json", action="store_true", help="print the node's answer as JSON")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="request timeout (30)")


def post_recover(
    address: str, data_structure_id: str, *, confirm: bool, timeout_s: float = 30.0
) -> tuple[int, dict[str, Any]]:
    """POST /recover to the node at `address`: (HTTP status, the JSON answer)."""
    import urllib.error
    import urllib.request

    url = f"http://{address}/recover"
    body = json.dumps({"data_structure_id": data_structure_id, "confirm": confirm}).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            code, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RecoverError(
            f"no answer from {url}: {reason} (is the node's http_port / --http-port set, "
            "and is this its address?)"
        ) from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        text = raw.decode("utf-8", "replace").strip()
        raise RecoverError(f"{url} answered {code}: {text}") from None
    if not isinstance(document, dict):
        raise RecoverError(f"{url} answered {code} with no CopyCat report")
    return code, document


def run(args: argparse.Namespace) -> int:
    """0: recovered; 1: refused or failed; DRY_RUN_EXIT: reported only (no --yes)."""
    from copycat.host import RecoveryReport

    ds, address = str(args.data_structure_id), str(args.node)
    if not args.json:
        what = "recovering" if args.yes else "checking (dry run)"
        print(f"copycat recover: {what} {ds} on the node at {address} ...", flush=True)
    try:
        code, document = post_recover(address, ds, confirm=bool(args.yes), timeout_s=args.timeout_s)
    except RecoverError as exc:
        print(f"copycat recover: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(document, indent=1, sort_keys=True))
    if code != 200:
        if not args.json:
            print(
                f"copycat recover: refused ({document.get('error', code)}): "
                f"{document.get('message', '')}",
                file=sys.stderr,
            )
            for voter, why in sorted(dict(document.get("reachable_voters", {})).items()):
                print(f"  reachable voter {voter}: {why}", file=sys.stderr)
        return 1
    try:
        report = RecoveryReport.from_json(document)
    except (KeyError, TypeError, ValueError):
        print(f"copycat recover: {address} answered no recovery report", file=sys.stderr)
        return 1
    if not args.json:
        print(report.describe())
    if not report.recovered:
        if not args.json:
            print("nothing changed: run again with --yes to recover (read MAY BE LOST first)")
        return DRY_RUN_EXIT
    return 0

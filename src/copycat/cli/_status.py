# The status file of a running node and `copycat status`, which reads it.
#
# What lives here: the file's schema (`NodeStatus`, `MemberStatus`, `GroupStatus`, JSON
# with a format number), `collect()` which reads it off a running `CopyCat`, the atomic
# `write_status()`, the validating `read_status()` and the text rendering.
#
# Why a file: the API offers no observer that could join the gossip briefly, and a node
# exposes no status endpoint, so `copycat node` writes `<data_dir>/status.json` every
# `status_interval_s` (and once more, marked stopped, when it shuts down), and
# `copycat status --data-dir D` reads it. It works on the machine of the node only, and
# says how old the file is and whether the process that wrote it still lives.
#
# What must not: start or join a node. Reading a status never touches the cluster.
"""The status file a `copycat node` keeps in its data dir, and its rendering."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from copycat import CopyCat

__all__: Final = [
    "STATUS_FILE",
    "GroupStatus",
    "MemberStatus",
    "NodeStatus",
    "StatusError",
    "collect",
    "read_status",
    "render",
    "write_status",
]

STATUS_FILE: Final = "status.json"
"""Name of the status file in a node's data dir."""

STATUS_FORMAT: Final = 1
"""Version of the file's schema; readers refuse any other."""

STALE_AFTER_INTERVALS: Final = 3
"""A running node's status older than this many write intervals (at least 5 s) is stale."""


class StatusError(Exception):
    """The status file is missing or is not one this version wrote; the message says
    what to do."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class MemberStatus:
    """One live member of the cluster, as the node sees it in its membership view."""

    node_id: int
    transport_address: str
    gossip_address: str
    data_center: str
    rack: str
    state: str
    """"alive" or "suspect" (failed and departed members are not in the view)."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class GroupStatus:
    """One raft group the node hosts a member of."""

    data_structure_id: str
    member: str
    """This node's member: "voter", "learner", or "subscriber" (a voter or learner with a
    subscription on this node)."""
    raft_role: str
    """"leader", "follower", "candidate" or "pre_candidate"."""
    leader_id: int
    """The leader this member knows of, 0 when it knows none."""
    term: int
    commit: int
    applied: int
    voters: list[int]
    learners: list[int]
    replicas_on: list[int]
    """The live nodes the directory says host a replica of it (as this node knows)."""
    split_with: list[int] = field(default_factory=list)
    """Nodes seen hosting another raft group under the same id (docs/host.md)."""
    refusing_writes: bool = False
    """This group is the younger of two under one id and refuses new writes."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """What one node wrote about itself, its view of the cluster and its groups."""

    format: int
    node_id: int
    pid: int
    state: str
    """"running", or "stopped" once the node shut down cleanly."""
    written_at: float
    """Unix time of the write."""
    interval_s: float
    """How often the node rewrites the file while it runs."""
    transport_address: str
    gossip_address: str
    data_center: str
    rack: str
    members: list[MemberStatus]
    groups: list[GroupStatus]
    counters: dict[str, int]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"


# -- writing (in the node's process) ------------------------------------------------------


def collect(cc: CopyCat, *, state: str, interval_s: float) -> NodeStatus:
    """The status of the running node `cc` now, from its public status calls."""
    members = [
        MemberStatus(
            node_id=m.node_id,
            transport_address=m.transport_address,
            gossip_address=m.gossip_address,
            data_center=m.data_center,
            rack=m.rack,
            state=m.state.value,
        )
        for m in cc.members()
    ]
    groups = [
        GroupStatus(
            data_structure_id=g.data_structure_id,
            member=g.member,
            raft_role=g.raft_role,
            leader_id=g.leader_id,
            term=g.term,
            commit=g.commit,
            applied=g.applied,
            voters=list(g.voters),
            learners=list(g.learners),
            replicas_on=list(g.replicas_on),
            split_with=list(g.split_with),
            refusing_writes=g.refusing_writes,
        )
        for g in cc.groups()
    ]
    config = cc.config
    return NodeStatus(
        format=STATUS_FORMAT,
        node_id=cc.node_id,
        pid=os.getpid(),
        state=state,
        written_at=time.time(),
        interval_s=interval_s,
        transport_address=cc.address,
        gossip_address=cc.gossip_address,
        data_center=config.data_center,
        rack=config.rack,
        members=members,
        groups=groups,
        counters=cc.counters(),
    )


def write_status(data_dir: Path, status: NodeStatus) -> None:
    """Replace `<data_dir>/status.json` atomically (a reader sees the old or the new
    file, never a torn one). Not fsynced: the file is advisory and rewritten often."""
    path = data_dir / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(status.to_json(), encoding="utf-8")
    os.replace(tmp, path)


# -- reading (in `copycat status`) -------------------------------------------------------


def read_status(data_dir: Path) -> NodeStatus:
    """The status in `<data_dir>/status.json`. Raises `StatusError` when it is missing,
    unreadable or not of this format."""
    path = data_dir / STATUS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StatusError(
            f"no status file at {path}: is a node (`copycat node --data-dir {data_dir}`) "
            "running there, or has it never started?"
        ) from None
    except OSError as exc:
        raise StatusError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        raw: object = json.loads(text)
        return _node_status(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise StatusError(f"{path} is not a status file this version can read: {exc}") from None


def _obj(value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    return value


def _int(obj: Mapping[str, object], key: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key!r} must be an integer")
    return value


def _float(obj: Mapping[str, object], key: str) -> float:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key!r} must be a number")
    return float(value)


def _str(obj: Mapping[str, object], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TypeError(f"{key!r} must be a string")
    return value


def _ints(obj: Mapping[str, object], key: str) -> list[int]:
    value = obj[key]
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise TypeError(f"{key!r} must be a list of integers")
    return [int(v) for v in value]


def _list(obj: Mapping[str, object], key: str) -> list[object]:
    value = obj[key]
    if not isinstance(value, list):
        raise TypeError(f"{key!r} must be a list")
    return list(value)


def _node_status(raw: object) -> NodeStatus:
    obj = _obj(raw)
    if obj.get("format") != STATUS_FORMAT:
        raise ValueError(f"format {obj.get('format')!r}, expected {STATUS_FORMAT}")
    counters = _obj(obj["counters"])
    return NodeStatus(
        format=STATUS_FORMAT,
        node_id=_int(obj, "node_id"),
        pid=_int(obj, "pid"),
        state=_str(obj, "state"),
        written_at=_float(obj, "written_at"),
        interval_s=_float(obj, "interval_s"),
        transport_address=_str(obj, "transport_address"),
        gossip_address=_str(obj, "gossip_address"),
        data_center=_str(obj, "data_center"),
        rack=_str(obj, "rack"),
        members=[
            MemberStatus(
                node_id=_int(m, "node_id"),
                transport_address=_str(m, "transport_address"),
                gossip_address=_str(m, "gossip_address"),
                data_center=_str(m, "data_center"),
                rack=_str(m, "rack"),
                state=_str(m, "state"),
            )
            for m in map(_obj, _list(obj, "members"))
        ],
        groups=[
            GroupStatus(
                data_structure_id=_str(g, "data_structure_id"),
                member=_str(g, "member"),
                raft_role=_str(g, "raft_role"),
                leader_id=_int(g, "leader_id"),
                term=_int(g, "term"),
                commit=_int(g, "commit"),
                applied=_int(g, "applied"),
                voters=_ints(g, "voters"),
                learners=_ints(g, "learners"),
                replicas_on=_ints(g, "replicas_on"),
                split_with=_ints(g, "split_with") if "split_with" in g else [],
                refusing_writes=g.get("refusing_writes") is True,
            )
            for g in map(_obj, _list(obj, "groups"))
        ],
        counters={str(k): _int(counters, k) for k in counters},
    )


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (it may be another process that
    reused the number; the file's age tells those apart)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def liveness(status: NodeStatus, *, now: float) -> tuple[bool, str]:
    """(running, description) of the node that wrote `status`, judged from the file's
    age, its state and whether its process still exists."""
    age = max(0.0, now - status.written_at)
    stale_after = max(5.0, STALE_AFTER_INTERVALS * status.interval_s)
    if status.state == "stopped":
        return False, f"stopped (shut down cleanly {age:.1f} s ago)"
    if not process_alive(status.pid):
        return (
            False,
            f"not running: process {status.pid} is gone (killed?); last status {age:.1f} s ago",
        )
    if age > stale_after:
        return (
            False,
            f"not responding: status {age:.1f} s old (written every {status.interval_s:g} s)",
        )
    return True, f"running (pid {status.pid}, status {age:.1f} s old)"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.extend(
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    return lines


def _ids(values: list[int]) -> str:
    return ",".join(str(v) for v in values) or "-"


def render(status: NodeStatus, *, now: float) -> str:
    """`status` as the text `copycat status` prints."""
    _, state = liveness(status, now=now)
    hosted: dict[int, list[str]] = {}
    for g in status.groups:
        for node in g.replicas_on:
            hosted.setdefault(node, []).append(g.data_structure_id)
    lines = [
        f"node {status.node_id} ({status.data_center}/{status.rack}) "
        f"transport {status.transport_address}, gossip {status.gossip_address}: {state}",
        f"members ({len(status.members)}, as node {status.node_id} "
        f"{'last saw' if status.state == 'stopped' else 'sees'} them):",
        *_table(
            ["NODE", "ADDRESS", "GOSSIP", "DC", "RACK", "STATE", "GROUPS"],
            [
                [
                    str(m.node_id) + ("*" if m.node_id == status.node_id else ""),
                    m.transport_address,
                    m.gossip_address,
                    m.data_center,
                    m.rack,
                    m.state,
                    str(len(hosted.get(m.node_id, []))),
                ]
                for m in status.members
            ],
        ),
        f"groups hosted by node {status.node_id} ({len(status.groups)}):",
    ]
    if status.groups:
        lines += _table(
            [
                "DATA STRUCTURE",
                "MEMBER",
                "RAFT",
                "LEADER",
                "TERM",
                "COMMIT",
                "APPLIED",
                "VOTERS",
                "LEARNERS",
                "REPLICAS ON",
                "SPLIT",
            ],
            [
                [
                    g.data_structure_id,
                    g.member,
                    g.raft_role,
                    str(g.leader_id or "-"),
                    str(g.term),
                    str(g.commit),
                    str(g.applied),
                    _ids(g.voters),
                    _ids(g.learners),
                    _ids(g.replicas_on),
                    (
                        ("refuses writes; " if g.refusing_writes else "older; ")
                        + "other group on "
                        + _ids(g.split_with)
                    )
                    if g.split_with
                    else "-",
                ]
                for g in status.groups
            ],
        )
        lines.append(
            "  GROUPS above counts the groups listed here that each member hosts; "
            "this node's directory index is read for its own groups only."
        )
    else:
        lines.append("  (none)")
    return "\n".join(lines)


# -- reading a node's HTTP endpoint (`copycat status --node`) --------------------------------


def fetch_remote(address: str, timeout_s: float = 5.0) -> dict[str, object]:
    """The `/status` document of the node whose HTTP endpoint (`Config.http_port`) is at
    `address` ("host:port"): any node, on any machine, embedded programs included.
    Raises `StatusError` naming the address when it does not answer with one."""
    import urllib.error
    import urllib.request

    url = f"http://{address}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            document: object = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(
            f"no status from {url}: {reason} (is the node's http_port / --http-port "
            "set, and is this its address?)"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise StatusError(f"{url} did not answer with a CopyCat status document") from None
    if not isinstance(document, dict) or not {"node", "members", "groups"} <= set(document):
        raise StatusError(f"{url} did not answer with a CopyCat status document")
    return document


def render_remote(document: Mapping[str, object]) -> str:
    """A `/status` document as the text `copycat status --node` prints: the node, its
    members, and its groups with the lag of its subscriber and, where it leads, of each
    follower."""
    node = document["node"]
    members = document["members"]
    groups = document["groups"]
    assert isinstance(node, dict)
    assert isinstance(members, list)
    assert isinstance(groups, list)
    me = node["node_id"]
    names = _names(members)
    lines = [
        f"node {me} {node['name']} ({node['data_center']}/{node['rack']}), "
        f"gossip {node['gossip_address']}, cluster {node['cluster_name']!r}",
        f"members ({len(members)}):",
        *_table(
            ["NODE", "NAME", "DC", "RACK", "STATE"],
            [
                [
                    str(m["node_id"]) + ("*" if m["node_id"] == me else ""),
                    str(m["name"]),
                    str(m["data_center"]),
                    str(m["rack"]),
                    str(m["state"]),
                ]
                for m in members
            ],
        ),
        f"groups ({len(groups)}):",
    ]
    rows = []
    for g in groups:
        sub = g["subscriber"]
        followers = g["followers"]
        rows.append(
            [
                str(g["data_structure_id"]),
                str(g["role"]),
                _leader(g, names),
                str(g["term"]),
                str(g["commit"]),
                str(g["applied"]),
                "-" if sub is None else f"{sub['lag_entries']} behind",
                ", ".join(
                    f"{names.get(str(n), n)}: {f['lag_entries']}" for n, f in followers.items()
                )
                or "-",
            ]
        )
    if rows:
        lines += _table(
            [
                "DATA STRUCTURE",
                "RAFT",
                "LEADER",
                "TERM",
                "COMMIT",
                "APPLIED",
                "SUBSCRIBER LAG",
                "FOLLOWER LAG (entries)",
            ],
            rows,
        )
    else:
        lines.append("  (none)")
    return "\n".join(lines)


def _names(members: object) -> dict[str, str]:
    """Node id (as text) -> name, from a `/status` document's members."""
    if not isinstance(members, list):
        return {}
    return {str(m["node_id"]): str(m.get("name") or m["node_id"]) for m in members}


def _leader(group: Mapping[str, object], names: Mapping[str, str]) -> str:
    """The group's leader by name (the node's id when its name is unknown), "-" if none."""
    leader = group.get("leader")
    if not leader:
        return "-"
    return str(group.get("leader_name") or names.get(str(leader)) or leader)


def watch_remote(
    addresses: list[str], *, interval_s: float, count: int | None, out: object = None
) -> int:
    """`copycat status --node ... --watch`: a live table of each node's members and
    groups (with lag), refreshed every `interval_s` until Ctrl-C, or `count` refreshes.
    A node that does not answer shows its error in place of its tables. Returns 0."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    console = out if isinstance(out, Console) else Console()

    def frame() -> Group:
        parts: list[object] = []
        for address in addresses:
            try:
                document = fetch_remote(address)
            except StatusError as exc:
                parts.append(Text(f"{address}: {exc}", style="red"))
                continue
            node = document["node"]
            assert isinstance(node, dict)
            members = Table(title=f"node {node['node_id']} {node['name']}: members")
            for header in ("NODE", "NAME", "DC", "RACK", "STATE"):
                members.add_column(header)
            for m in document["members"]:  # type: ignore[attr-defined]
                members.add_row(
                    str(m["node_id"]), m["name"], m["data_center"], m["rack"], m["state"]
                )
            names = _names(document["members"])
            groups = Table(title="groups")
            for header in ("DATA STRUCTURE", "RAFT", "LEADER", "TERM", "COMMIT", "LAG"):
                groups.add_column(header)
            for g in document["groups"]:  # type: ignore[attr-defined]
                sub = g["subscriber"]
                lag = "-" if sub is None else str(sub["lag_entries"])
                groups.add_row(
                    g["data_structure_id"],
                    g["role"],
                    _leader(g, names),
                    str(g["term"]),
                    str(g["commit"]),
                    lag,
                )
            parts += [members, groups]
        return Group(*parts)  # type: ignore[arg-type]

    shown = 0
    try:
        with Live(frame(), console=console, refresh_per_second=4, transient=False) as live:
            shown = 1
            while count is None or shown < count:
                time.sleep(interval_s)
                live.update(frame())
                shown += 1
    except KeyboardInterrupt:
        pass
    return 0

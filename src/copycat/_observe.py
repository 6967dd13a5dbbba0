# What a running node tells its operator: Prometheus metrics, a JSON status and health.
#
# What lives here: `Observer`, one per node: a Prometheus registry of its own (two nodes
# in one process never share series) whose collector reads the node's counters and
# groups at scrape time, the commit-latency histogram and proposal counters the
# subscription feeds, and `serve()`, an HTTP server for GET /metrics, /status, /healthz
# and /readyz (docs/operations.md says what each answers), and for the POST actions the
# node adds (`add_action`: POST /recover), which answer connections from a loopback
# address only (an operator on the node's machine), whatever `bind_host` is.
#
# We wrote the HTTP server ourselves (a page of asyncio): prometheus_client's runs in a
# thread of its own, and the status and health must read the node on its event loop.
#
# What must not: replication logic, or anything that blocks the loop (a scrape reads
# in-memory state only).
"""Metrics, status and health of one node, and the HTTP endpoint that serves them."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from typing import TYPE_CHECKING, Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from prometheus_client.core import Metric

__all__: Final = ["DEFAULT_STATUS_GROUPS", "MAX_GROUP_SERIES", "Observer", "StatusSource"]

log = logging.getLogger("copycat.http")

DEFAULT_STATUS_GROUPS: Final = 1000
"""Groups `/status` describes unless asked for more (`/status?groups=N`, `?groups=all`):
subscribed ones first, then by group id. `groups_total` counts every group."""

MAX_GROUP_SERIES: Final = 1000
"""Groups that get series of their own (subscribed groups first, then by id); the rest
are counted in `copycat_group_series_omitted`, so a node of 100,000 groups does not
make 100,000 series per metric."""

MAX_REQUEST_BYTES: Final = 8 << 10
REQUEST_TIMEOUT_S: Final = 5.0

LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class StatusSource(Protocol):
    """What the observer reads from its node (`CopyCat` implements it): plain data."""

    def status(self, *, max_groups: int | None = None) -> dict[str, Any]:
        """The node, its members and (at most `max_groups` of) its groups
        (docs/operations.md, "Status")."""
        ...

    def readiness(self) -> list[str]:
        """Why the node is not ready to serve (empty: ready)."""
        ...

    def metric_counters(self) -> Mapping[str, Mapping[str, int]]:
        """Counter families by name: {"host": {...}, "transport": {...}, "gossip": {...}}."""
        ...


class _NodeCollector(Collector):
    def __init__(self, source: StatusSource) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        source = self._source
        for family, values in source.metric_counters().items():
            counter = CounterMetricFamily(
                f"copycat_{family}_events",
                f"Counters of the node's {family} layer, by event",
                labels=["event"],
            )
            for event, value in sorted(values.items()):
                counter.add_metric([event], value)
            yield counter
        # Only the groups that get series are described: walking 100,000 groups would
        # hold the event loop for a second or more at every scrape.
        status = source.status(max_groups=MAX_GROUP_SERIES)
        members = GaugeMetricFamily(
            "copycat_members", "Members this node sees, by state", labels=["state"]
        )
        states: dict[str, int] = {}
        for member in status["members"]:
            states[member["state"]] = states.get(member["state"], 0) + 1
        for state, count in sorted(states.items()):
            members.add_metric([state], count)
        yield members
        shown = status["groups"]  # subscribed ones first, then by group id
        total = status["groups_total"]
        yield GaugeMetricFamily("copycat_groups", "Raft groups hosted here", value=total)
        yield GaugeMetricFamily(
            "copycat_group_series_omitted",
            f"Groups without series of their own (beyond {MAX_GROUP_SERIES})",
            value=total - len(shown),
        )
        label = ["data_structure"]
        gauges = {
            "commit": GaugeMetricFamily("copycat_group_commit_index", "Commit index", labels=label),
            "applied": GaugeMetricFamily(
                "copycat_group_applied_index", "Applied index", labels=label
            ),
            "term": GaugeMetricFamily("copycat_group_term", "Raft term", labels=label),
            "leader": GaugeMetricFamily(
                "copycat_group_is_leader", "1 while this node leads the group", labels=label
            ),
            "log_entries": GaugeMetricFamily(
                "copycat_group_log_entries",
                "Entries in this member's log (not compacted)",
                labels=label,
            ),
        }
        sub_lag = GaugeMetricFamily(
            "copycat_subscriber_lag_entries",
            "Committed entries the local subscriber has not been handed yet",
            labels=label,
        )
        sub_lag_s = GaugeMetricFamily(
            "copycat_subscriber_lag_seconds",
            "How long the local subscriber has been behind the commit index (0: caught up)",
            labels=label,
        )
        follower_lag = GaugeMetricFamily(
            "copycat_follower_lag_entries",
            "On the leader: entries each member lacks of the leader's log",
            labels=[*label, "member"],
        )
        for g in shown:
            ds = [g["data_structure_id"]]
            gauges["commit"].add_metric(ds, g["commit"])
            gauges["applied"].add_metric(ds, g["applied"])
            gauges["term"].add_metric(ds, g["term"])
            gauges["leader"].add_metric(ds, 1 if g["role"] == "leader" else 0)
            gauges["log_entries"].add_metric(ds, g["log_entries"])
            if g["subscriber"] is not None:
                sub_lag.add_metric(ds, g["subscriber"]["lag_entries"])
                sub_lag_s.add_metric(ds, g["subscriber"]["lag_seconds"])
            for member, figures in g["followers"].items():
                follower_lag.add_metric([g["data_structure_id"], member], figures["lag_entries"])
        yield from gauges.values()
        yield sub_lag
        yield sub_lag_s
        yield follower_lag


class Observer:
    """The metrics and the HTTP endpoint of one node."""

    def __init__(self, source: StatusSource) -> None:
        self._source = source
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(source))
        self.proposals = Counter(
            "copycat_proposals",
            "Proposals made on this node, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("ok", "failed", "timeout"):
            self.proposals.labels(outcome)
        self.commit_latency = Histogram(
            "copycat_commit_latency_seconds",
            "From propose() to its commit, for proposals made on this node",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        self._actions: dict[str, Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]]
        self._actions = {}

    def add_action(
        self, path: str, action: Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
    ) -> None:
        """Answer `POST path` with `action` (from loopback addresses only): its JSON body
        is handed over as a dict, and the action's (status, object) is the answer."""
        self._actions[path] = action

    def metrics(self) -> bytes:
        """The Prometheus text exposition of every series of this node."""
        return generate_latest(self.registry)

    # -- HTTP ------------------------------------------------------------------------------

    async def serve(self, host: str, port: int) -> tuple[str, int]:
        """Listen on `host:port` (0: the OS picks); returns the address bound."""
        self._server = await asyncio.start_server(self._answer, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("metrics and status on http://%s:%d/", *self.address)
        return self.address

    async def close(self) -> None:
        self.address = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_BYTES:
                raise ValueError("request head too large")
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path, _, query = target.partition("?")
            if method == "POST" and path in self._actions:
                code, kind, body = await self._post(path, head, reader, writer)
            else:
                code, kind, body = self._route(method, path, query)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            code, kind, body = 400, "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        except Exception:  # a bug or a node closing under the request: answer, log once
            log.exception("the HTTP endpoint failed to answer")
            code, kind, body = 500, "text/plain", b"internal error: see the node's log\n"
        reason = {
            200: "OK",
            400: "Bad Request",
            403: "Forbidden",
            404: "Not Found",
            405: "Method Not Allowed",
            409: "Conflict",
            500: "Internal Server Error",
        }
        head_out = (
            f"HTTP/1.1 {code} {reason.get(code, 'Service Unavailable')}\r\n"
            f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head_out.encode("latin-1") + body)
            await writer.drain()
        writer.close()

    def _route(self, method: str, path: str, query: str = "") -> tuple[int, str, bytes]:
        if method != "GET":
            posts = "".join(f", POST {p}" for p in sorted(self._actions))
            return 405, "text/plain", f"GET only{posts}\n".encode()
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, "text/plain; version=0.0.4", self.metrics()),
            "/status": lambda: self._status(query),
            "/healthz": lambda: (200, "text/plain", b"ok\n"),
            "/readyz": self._ready,
        }
        answer = routes.get(path)
        if answer is None:
            return 404, "text/plain", b"not found: try /metrics, /status, /healthz, /readyz\n"
        return answer()

    def _status(self, query: str) -> tuple[int, str, bytes]:
        """`/status`, describing at most `DEFAULT_STATUS_GROUPS` groups unless the query
        says `groups=N` or `groups=all`."""
        limit: int | None = DEFAULT_STATUS_GROUPS
        for name, _, value in (part.partition("=") for part in query.split("&") if part):
            if name != "groups":
                continue
            if value == "all":
                limit = None
            elif value.isdigit() and len(value) <= 9:
                limit = int(value)
            else:
                return 400, "text/plain", b"groups= takes a count or 'all'\n"
        return 200, "application/json", _json(self._source.status(max_groups=limit))

    async def _post(
        self,
        path: str,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> tuple[int, str, bytes]:
        peer = writer.get_extra_info("peername")
        try:
            loopback = ipaddress.ip_address(str(peer[0]).split("%", 1)[0]).is_loopback
        except (TypeError, IndexError, ValueError):
            loopback = False
        if not loopback:
            return 403, "text/plain", f"POST {path} is answered on loopback only\n".encode()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())  # ValueError: a bad request
        if not 0 < length <= MAX_REQUEST_BYTES:
            raise ValueError("a POST needs a JSON body of a few bytes")
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            raw = await reader.readexactly(length)
        try:
            request = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError("the body is not JSON") from exc
        if not isinstance(request, dict):
            raise ValueError("the body is not a JSON object")
        code, answer = await self._actions[path](request)
        return code, "application/json", _json(answer)

    def _ready(self) -> tuple[int, str, bytes]:
        reasons = self._source.readiness()
        if not reasons:
            return 200, "text/plain", b"ready\n"
        return 503, "text/plain", ("not ready: " + "; ".join(reasons) + "\n").encode()


def _json(document: object) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()

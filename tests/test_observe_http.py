"""The operators' HTTP endpoint on its own (`copycat._observe.Observer` over a fake
node): what each path answers, and that a bad request, another method or a failing node
gets a status code, never a dropped connection. Loopback only; every wait bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from copycat._observe import Observer

pytestmark = pytest.mark.timeout(30)


class FakeNode:
    def __init__(self, groups: int = 0) -> None:
        self.fail = False
        self.reasons: list[str] = []
        self.groups = groups
        self.asked: list[int | None] = []

    def status(self, *, max_groups: int | None = None) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("the node is closing")
        self.asked.append(max_groups)
        count = self.groups if max_groups is None else min(self.groups, max_groups)
        groups = [
            {
                "data_structure_id": f"ds{i}",
                "group_id": i,
                "role": "follower",
                "term": 1,
                "commit": 1,
                "applied": 1,
                "log_entries": 1,
                "subscriber": None,
                "followers": {},
            }
            for i in range(count)
        ]
        return {
            "node": {"node_id": 1},
            "members": [],
            "groups": groups,
            "groups_total": self.groups,
        }

    def readiness(self) -> list[str]:
        return self.reasons

    def metric_counters(self) -> dict[str, dict[str, int]]:
        return {"host": {"cycles": 3}}


async def ask(address: tuple[str, int], request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.asyncio
async def test_each_path_and_each_mistake_gets_its_status_code() -> None:
    node = FakeNode()
    observer = Observer(node)
    address = await observer.serve("127.0.0.1", 0)
    try:
        code, body = await ask(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert code == 200
        assert b'copycat_host_events_total{event="cycles"} 3.0' in body
        assert (await ask(address, b"GET /healthz HTTP/1.1\r\n\r\n")) == (200, b"ok\n")
        assert (await ask(address, b"GET /readyz HTTP/1.1\r\n\r\n")) == (200, b"ready\n")
        node.reasons = ["no node of peers_to_contact answered yet"]
        code, body = await ask(address, b"GET /readyz HTTP/1.1\r\n\r\n")
        assert code == 503
        assert b"peers_to_contact" in body
        assert (await ask(address, b"POST /status HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await ask(address, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await ask(address, b"\x00\x01garbage\r\n\r\n"))[0] == 400
        node.fail = True
        code, body = await ask(address, b"GET /status HTTP/1.1\r\n\r\n")
        assert code == 500
        assert b"see the node's log" in body
    finally:
        await observer.close()
    assert observer.address is None


@pytest.mark.asyncio
async def test_a_scrape_and_a_status_describe_a_bounded_number_of_groups() -> None:
    """A node hosting 100,000 groups took 1.8 s per scrape when every group was
    described (the event loop, raft ticks included, waited): the metrics describe
    `MAX_GROUP_SERIES` groups and `/status` `DEFAULT_STATUS_GROUPS` unless asked."""
    import json

    from copycat._observe import DEFAULT_STATUS_GROUPS, MAX_GROUP_SERIES

    node = FakeNode(groups=MAX_GROUP_SERIES + 500)
    observer = Observer(node)
    address = await observer.serve("127.0.0.1", 0)
    try:
        code, body = await ask(address, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert code == 200
        assert node.asked == [MAX_GROUP_SERIES]
        assert f"copycat_groups {MAX_GROUP_SERIES + 500}.0".encode() in body
        assert b"copycat_group_series_omitted 500.0" in body

        code, body = await ask(address, b"GET /status HTTP/1.1\r\n\r\n")
        assert code == 200
        assert len(json.loads(body)["groups"]) == DEFAULT_STATUS_GROUPS
        code, body = await ask(address, b"GET /status?groups=7 HTTP/1.1\r\n\r\n")
        assert (code, len(json.loads(body)["groups"])) == (200, 7)
        code, body = await ask(address, b"GET /status?groups=all HTTP/1.1\r\n\r\n")
        assert (code, len(json.loads(body)["groups"])) == (200, MAX_GROUP_SERIES + 500)
        assert node.asked[1:] == [DEFAULT_STATUS_GROUPS, 7, None]
        assert (await ask(address, b"GET /status?groups=-1 HTTP/1.1\r\n\r\n"))[0] == 400
    finally:
        await observer.close()


@pytest.mark.asyncio
async def test_a_post_action_gets_its_json_and_answers_from_loopback_only() -> None:
    observer = Observer(FakeNode())
    seen: list[dict[str, Any]] = []

    async def action(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seen.append(request)
        return 409, {"error": "RecoveryRefusedError"}

    observer.add_action("/recover", action)
    address = await observer.serve("127.0.0.1", 0)
    try:
        body = b'{"data_structure_id": "x", "confirm": true}'
        request = b"POST /recover HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        assert await ask(address, request) == (409, b'{\n "error": "RecoveryRefusedError"\n}\n')
        assert seen == [{"data_structure_id": "x", "confirm": True}]
        assert (await ask(address, b"POST /recover HTTP/1.1\r\n\r\n"))[0] == 400  # no body
        bad = b"POST /recover HTTP/1.1\r\nContent-Length: 3\r\n\r\n{{{"
        assert (await ask(address, bad))[0] == 400
        code, answer = await ask(address, b"POST /status HTTP/1.1\r\n\r\n")
        assert (code, answer) == (405, b"GET only, POST /recover\n")
    finally:
        await observer.close()

    class Remote:
        def get_extra_info(self, name: str) -> object:
            return ("10.1.2.3", 40000) if name == "peername" else None

    code, _kind, answer = await observer._post(
        "/recover",
        b"POST /recover HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
        asyncio.StreamReader(),
        Remote(),  # type: ignore[arg-type]
    )
    assert (code, answer) == (403, b"POST /recover is answered on loopback only\n")
    assert len(seen) == 1

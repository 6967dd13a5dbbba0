"""A real node's HTTP endpoint for operators (`Config.http_port`): `/metrics` parses
with prometheus-client's own parser and its counters move under proposals; `/status`
shows members, groups, leaders and the lag of a subscriber and of followers, and
`copycat status --node` prints it for this embedded node; `/healthz` and `/readyz`
answer; other paths are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .cluster import ProcessCluster, acked, proposed, wait_until

if TYPE_CHECKING:
    from .cluster import NodeProcess

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


def get(node: NodeProcess, path: str) -> tuple[int, str]:
    url = f"http://{node.ready['http']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def samples(node: NodeProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = get(node, "/metrics")
    assert code == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_status_and_health_of_a_real_node(procs: ProcessCluster) -> None:
    for node_id in (1, 2, 3):
        procs.add(node_id, extra=["--http-port=0", f"--node-name=eu-{node_id}"])
    procs.wait_members(3)
    n1 = procs.nodes[1]
    n1.send(op="allocate", replicas=3)
    ds = str(n1.wait_for("allocated", 30)["id"])
    n1.send(op="subscribe", id=ds)
    n1.wait_for("subscribed", 30)
    before = samples(n1)
    ok = ("copycat_proposals_total", (("outcome", "ok"),))
    assert before[ok] == 0

    n1.send(op="propose", id=ds, prefix="p", count=50, concurrency=4)
    wait_until(lambda: proposed(n1, "p"), 60, "50 proposals")
    assert len(acked(n1)) == 50
    after = samples(n1)
    assert after[ok] == 50
    assert after[("copycat_commit_latency_seconds_count", ())] == 50
    cycles = ("copycat_host_events_total", (("event", "cycles"),))
    assert after[cycles] > before[cycles]
    sent = ("copycat_transport_events_total", (("event", "bytes_sent"),))
    assert after[sent] > before[sent]
    labels = (("data_structure", ds),)
    assert after[("copycat_group_commit_index", labels)] >= 50
    assert ("copycat_subscriber_lag_entries", labels) in after
    assert after[("copycat_members", (("state", "alive"),))] == 3
    assert after[("copycat_group_log_entries", labels)] >= 50
    for event in ("proposals_retried", "proposals_deduplicated", "leader_changes"):
        assert ("copycat_host_events_total", (("event", event),)) in after
    assert ("copycat_repair_events_total", (("event", "voters_added"),)) in after

    code, text = get(n1, "/status")
    assert code == 200
    status = json.loads(text)
    assert (status["node"]["node_id"], status["node"]["name"]) == (1, "eu-1")
    # Names travel in gossip: node 1 shows every member by the name it was given.
    assert {m["node_id"]: m["name"] for m in status["members"]} == {i: f"eu-{i}" for i in (1, 2, 3)}
    assert status["groups_total"] == len(status["groups"]) >= 1
    none = json.loads(get(n1, "/status?groups=0")[1])
    assert (none["groups"], none["groups_total"]) == ([], status["groups_total"])
    # The subscribed group comes first when the groups are cut short.
    (first,) = json.loads(get(n1, "/status?groups=1")[1])["groups"]
    assert first["data_structure_id"] == ds
    (group,) = [g for g in status["groups"] if g["data_structure_id"] == ds]
    assert group["leader"] in (1, 2, 3)
    assert group["leader_name"] == f"eu-{group['leader']}"
    assert group["commit"] >= 50
    assert group["subscriber"]["delivered"] <= group["commit"]
    leaders = [
        g
        for n in procs.nodes.values()
        for g in json.loads(get(n, "/status")[1])["groups"]
        if g["data_structure_id"] == ds and g["role"] == "leader"
    ]
    assert len(leaders) == 1
    assert set(leaders[0]["followers"]) >= {str(i) for i in (1, 2, 3)} - {str(leaders[0]["leader"])}

    # `copycat status --node` reads the endpoint of this embedded (not CLI) node.
    shown = subprocess.run(
        [sys.executable, "-m", "copycat.cli", "status", "--node", str(n1.ready["http"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "members (3):" in out
    for member in status["members"]:
        assert member["name"] in out
    (row,) = [line for line in out.splitlines() if ds in line]
    assert f" eu-{group['leader']} " in row, row  # the leader by name
    assert ds in out
    assert "SUBSCRIBER LAG" in out
    assert " behind" in out
    watched = subprocess.run(
        [
            sys.executable,
            "-m",
            "copycat.cli",
            "status",
            "--node",
            str(n1.ready["http"]),
            "--watch",
            "--interval-s",
            "0.2",
            "--count",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert watched.returncode == 0, watched.stderr
    assert ds in watched.stdout
    assert "members" in watched.stdout
    unanswered = subprocess.run(
        [sys.executable, "-m", "copycat.cli", "status", "--node", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unanswered.returncode == 1
    assert "127.0.0.1:1/status" in unanswered.stderr

    assert get(n1, "/healthz") == (200, "ok\n")
    assert get(n1, "/readyz") == (200, "ready\n")
    assert get(n1, "/nope")[0] == 404

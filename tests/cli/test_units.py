# In-process tests of the command line's pure parts: the demo's hashmap, the merge of
# flags, environment and preset into a Config, the status file, and the errors that
# come before any node starts. No test here starts a node (nodes run in subprocesses
# only, in test_processes.py).
from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from copycat.cli import main
from copycat.cli._hashmap import HashMap, delete_command, put_command
from copycat.cli._main import build_parser
from copycat.cli._node_cmd import build_config
from copycat.cli._status import (
    STATUS_FILE,
    GroupStatus,
    MemberStatus,
    NodeStatus,
    StatusError,
    liveness,
    read_status,
    render,
    write_status,
)
from copycat.errors import ConfigError

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

KEY = "A" * 43 + "="  # base64 of 32 bytes


# -- the hashmap ---------------------------------------------------------------------------


def test_hashmap_applies_puts_and_deletes_in_order() -> None:
    m = HashMap()
    for command in (put_command("a", "1"), put_command("b", "2"), delete_command("a")):
        m.apply(command)
    assert (m.get("a"), m.get("b"), len(m)) == (None, "2", 1)


def test_hashmap_snapshot_round_trips_and_digest_follows_contents() -> None:
    m = HashMap()
    m.apply(put_command("k", "v"))
    other = HashMap()
    other.restore(m.snapshot())
    assert other.get("k") == "v"
    assert other.digest() == m.digest()
    other.apply(delete_command("k"))
    assert other.digest() != m.digest()
    other.restore(b"")
    assert len(other) == 0


@pytest.mark.parametrize(
    "command",
    [b"\xff", b"[]", b'{"op": "put", "key": 1, "value": "x"}', b'{"op": "zap", "key": "k"}'],
)
def test_hashmap_refuses_malformed_commands_unchanged(command: bytes) -> None:
    m = HashMap()
    m.apply(put_command("k", "v"))
    with pytest.raises(ValueError, match="not a hashmap command"):
        m.apply(command)
    assert m.get("k") == "v"


def test_hashmap_refuses_a_foreign_snapshot() -> None:
    m = HashMap()
    with pytest.raises(ValueError, match="not a hashmap snapshot"):
        m.restore(b'{"format": 99, "data": {}}')


# -- flags, environment, presets ---------------------------------------------------------


def _node_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["node", *argv])


def test_flags_override_environment_which_overrides_the_preset(tmp_path: Path) -> None:
    env = {"COPYCAT_PORT": "9000", "COPYCAT_RACK": "r9", "COPYCAT_DATA_DIR": str(tmp_path)}
    config = build_config(_node_args("--preset", "local", "--port", "9100"), env)
    assert config.port == 9100  # flag beats environment
    assert config.rack == "r9"  # environment beats preset
    assert config.durable is False  # the local preset's value
    assert config.data_dir == str(tmp_path)


def test_lists_take_commas_and_repeats() -> None:
    args = _node_args("--peers", "127.0.0.1:1,127.0.0.1:2", "--peers", "127.0.0.1:3")
    config = build_config(args, {})
    assert config.peers_to_contact == ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")


def test_lan_preset_needs_keys_and_takes_them_from_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gossip keys are required"):
        build_config(_node_args("--preset", "lan", "--hostname", "10.1.2.3"), {})
    keys = tmp_path / "keys"
    keys.write_text(f"# cluster key\n{KEY}\n")
    config = build_config(
        _node_args("--preset", "lan", "--hostname", "10.1.2.3", "--gossip-keys-file", str(keys)),
        {},
    )
    assert (config.gossip_preset, tuple(config.gossip_keys)) == ("lan", (KEY,))
    assert config.insecure_plaintext_gossip is False


def test_bind_and_advertise_flags_set_their_fields() -> None:
    args = _node_args(
        "--preset",
        "lan",
        "--hostname",
        "10.1.2.3",
        "--bind-host",
        "0.0.0.0",
        "--advertise-port",
        "30458",
        "--advertise-gossip-port",
        "30459",
        "--gossip-keys",
        KEY,
    )
    config = build_config(args, {})
    assert (config.hostname, config.bind_host) == ("10.1.2.3", "0.0.0.0")
    assert (config.advertise_port, config.advertise_gossip_port) == (30458, 30459)
    assert config.transport_config(1).host == "0.0.0.0"
    assert config.membership_config(1).transport_address == "10.1.2.3:30458"
    # The environment sets them too, and a flag beats it.
    env = {"COPYCAT_BIND_HOST": "127.0.0.2", "COPYCAT_ADVERTISE_PORT": "9000"}
    from_env = build_config(_node_args("--advertise-port", "9100"), env)
    assert (from_env.bind_host, from_env.advertise_port) == ("127.0.0.2", 9100)


def test_wan_flags_scale_the_timing_and_switch_leader_following() -> None:
    base = ("--preset", "wan", "--hostname", "10.1.2.3", "--gossip-keys", KEY)
    config = build_config(_node_args(*base, "--max-rtt-s", "0.4"), {})
    assert (config.tick_interval_s, config.leader_follows_writers) == (0.4, True)
    config = build_config(
        _node_args(*base, "--no-leader-follows-writers", "--leader-follow-after-s", "30"), {}
    )
    assert (config.leader_follows_writers, config.leader_follow_after_s) == (False, 30.0)
    with pytest.raises(ConfigError) as info:
        build_config(_node_args("--max-rtt-s", "0.4"), {})
    assert info.value.field == "max_rtt_s"


def test_a_wildcard_bind_on_the_default_preset_names_the_rule_and_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["node", "--bind-host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "gossip_preset: 'local' runs on loopback only" in err
    assert "bind_host '0.0.0.0'" in err
    assert main(["node", "--advertise-gossip-port", "0"]) == 2
    assert "(set by --advertise-gossip-port or COPYCAT_ADVERTISE_GOSSIP_PORT)" in (
        capsys.readouterr().err
    )


def test_hostname_help_says_it_is_published_and_bound_unless_bind_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["node", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "address published to other nodes; also bound unless --bind-host" in out
    for flag in ("--bind-host", "--advertise-port", "--advertise-gossip-port"):
        assert flag in out


def test_environment_alone_configures_a_node() -> None:
    config = build_config(_node_args(), {"COPYCAT_NODE_ID": "42", "COPYCAT_DURABLE": "off"})
    assert (config.node_id, config.durable, config.port) == (42, False, 7458)


# -- errors before a node starts (exit 2, a message, no traceback) -----------------------


def test_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "--port", "not-a-port"]) == 2
    assert "invalid int value: 'not-a-port'" in capsys.readouterr().err


def test_unknown_command_and_missing_command_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fly"]) == 2
    assert "invalid choice: 'fly'" in capsys.readouterr().err
    assert main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_invalid_config_names_the_field_and_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Invalid, so no node starts in this process.
    assert main(["node", "--data-dir", str(tmp_path), "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "copycat node: invalid configuration (set by --port or COPYCAT_PORT)" in err
    assert "port: must be an integer from 0 to 65535" in err
    assert "Traceback" not in err


def test_misspelt_environment_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COPYCAT_PROT", "1")
    assert main(["node", "--data-dir", str(tmp_path)]) == 2
    assert "COPYCAT_PROT: unknown setting" in capsys.readouterr().err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


# -- the status file ---------------------------------------------------------------------


def _status(**changes: object) -> NodeStatus:
    status = NodeStatus(
        format=1,
        node_id=7,
        pid=1,  # init: alive on any Unix
        state="running",
        written_at=time.time(),
        interval_s=1.0,
        transport_address="127.0.0.1:7458",
        gossip_address="127.0.0.1:7459",
        data_center="dc1",
        rack="rack1",
        members=[
            MemberStatus(
                node_id=n,
                transport_address=f"127.0.0.1:{7456 + 2 * n}",
                gossip_address=f"127.0.0.1:{7457 + 2 * n}",
                data_center="dc1",
                rack=f"r{n}",
                state="alive",
            )
            for n in (7, 8)
        ],
        groups=[
            GroupStatus(
                data_structure_id="01M8C22EWJKDH7EEHBG9YHQSM3",
                member="subscriber",
                raft_role="leader",
                leader_id=7,
                term=3,
                commit=12,
                applied=12,
                voters=[7, 8],
                learners=[],
                replicas_on=[7, 8],
            )
        ],
        counters={"cycles": 5},
    )
    return replace(status, **changes)  # type: ignore[arg-type]


def test_status_file_round_trips_and_renders(tmp_path: Path) -> None:
    write_status(tmp_path, _status())
    status = read_status(tmp_path)
    assert status == _status(written_at=status.written_at)
    text = render(status, now=status.written_at)
    assert "node 7 (dc1/rack1) transport 127.0.0.1:7458, gossip 127.0.0.1:7459: running" in text
    assert "members (2, as node 7 sees them)" in text
    assert "01M8C22EWJKDH7EEHBG9YHQSM3  subscriber  leader  7" in text


def test_status_tells_stale_stopped_and_gone_apart() -> None:
    now = time.time()
    assert liveness(_status(), now=now)[0]
    running, text = liveness(_status(written_at=now - 60), now=now)
    assert not running
    assert "not responding" in text
    assert "stopped" in liveness(_status(state="stopped"), now=now)[1]
    assert "is gone" in liveness(_status(pid=2**22 + 12345), now=now)[1]


def test_status_of_a_dir_without_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    assert f"no status file at {tmp_path / STATUS_FILE}" in capsys.readouterr().err


def test_status_refuses_a_garbled_file(tmp_path: Path) -> None:
    (tmp_path / STATUS_FILE).write_text(json.dumps({"format": 1, "node_id": "x"}))
    with pytest.raises(StatusError, match="not a status file this version can read"):
        read_status(tmp_path)


# -- copycat recover ---------------------------------------------------------------------


def test_recover_needs_the_node_and_says_when_it_does_not_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ds = "01M8ZJYVHE2STX879HJJY74QSR"
    assert main(["recover", ds]) == 2  # --node is required
    capsys.readouterr()
    # a port nothing listens on (bound, then closed): no answer is a failure, not a hang
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["recover", "--node", f"127.0.0.1:{port}", ds, "--timeout-s", "5"]) == 1
    err = capsys.readouterr().err
    assert "no answer from" in err
    assert "http_port" in err


def test_recover_report_round_trips_through_json() -> None:
    from copycat import RecoveryReport

    report = RecoveryReport(
        data_structure_id="01M8ZJYVHE2STX879HJJY74QSR",
        node_id=1,
        recovered=False,
        voters_before=(1, 2, 3),
        unreachable_voters=(2, 3),
        evidence={2: "not in gossip's view", 3: "not in gossip's view"},
        last_index=64,
        commit_index=60,
        kept_uncommitted=4,
        recovery_index=0,
        term=0,
        in_flight_proposals=2,
    )
    assert RecoveryReport.from_json(json.loads(json.dumps(report.to_json()))) == report
    text = report.describe()
    assert "DRY RUN" in text
    assert "past index 64" in text
    assert "4 entries past it are kept" in text

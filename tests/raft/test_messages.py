"""Plain data of the core that has behaviour: the `ConfChange` wire form (round trip,
and hostile input refused with `ConfChangeError` only), `RaftConfig.validate` (one
`ConfigError` naming the field per rule) and the `SplitMix64` random source."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copycat.errors import ConfChangeError, ConfigError
from copycat.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    Entry,
    EntryKind,
    MemoryLog,
    Propose,
    RaftConfig,
    RawNode,
    ReadOnlyOption,
    SplitMix64,
    add_learner,
    add_voter,
    remove_node,
)

# -- ConfChange encoding ------------------------------------------------------------------

wire_ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
conf_changes = st.builds(
    ConfChange,
    changes=st.lists(
        st.builds(
            ConfChangeSingle,
            type=st.sampled_from(list(ConfChangeType)),
            node_id=st.integers(1, 2**64 - 1),  # member ids are positive
        ),
        max_size=6,
    ).map(tuple),
    transition=st.sampled_from(list(ConfChangeTransition)),
    context=st.binary(max_size=64),
)


@settings(max_examples=200)
@given(cc=conf_changes)
def test_conf_change_round_trip(cc: ConfChange) -> None:
    data = cc.encode()
    assert isinstance(data, bytes)
    decoded = ConfChange.decode(data)
    assert decoded == cc
    assert decoded.encode() == data
    for single in decoded.changes:
        assert type(single.type) is ConfChangeType
        assert type(single.node_id) is int


@pytest.mark.parametrize(
    "cc", [add_voter(1), add_learner(2), remove_node(3), ConfChange(), ConfChange(context=b"x")]
)
def test_helpers_round_trip(cc: ConfChange) -> None:
    assert ConfChange.decode(cc.encode()) == cc


def test_helpers_build_one_change() -> None:
    assert add_voter(7).changes == (ConfChangeSingle(type=ConfChangeType.ADD_VOTER, node_id=7),)
    assert add_learner(7).changes[0].type == ConfChangeType.ADD_LEARNER
    assert remove_node(7).changes[0].type == ConfChangeType.REMOVE_NODE
    assert not add_voter(7).uses_joint()
    assert ConfChange().leaves_joint()


def packed(value: object) -> bytes:
    data: bytes = msgpack.packb(value)
    return data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\x93\x01\x00\x90",  # three fields, not four
        packed([1, 0, [], b""]) + b"\x00",  # trailing bytes
        packed([2, 0, [], b""]),  # unknown version
        packed([1, 9, [], b""]),  # unknown transition
        packed([1, 0, [[7, 1]], b""]),  # unknown change type
        packed([1, 0, [[0]], b""]),
        packed([1, 0, [[0, 1, 2]], b""]),
        packed([1, 0, [0, 1], b""]),
        packed([1, 0, None, b""]),
        packed([1, 0, [], "text, not bytes"]),
        packed({"version": 1}),
        packed(42),
        packed(None),
        b"\x91" * 600 + b"\x90",  # deeply nested lists
    ],
)
def test_decode_refuses_malformed_bytes(data: bytes) -> None:
    with pytest.raises(ConfChangeError, match="malformed"):
        ConfChange.decode(data)


@pytest.mark.parametrize(
    "node_id",
    [None, [5], math.nan, math.inf, -math.inf, 1.5, 5.0, "5", b"5"],
    ids=repr,
)
def test_decode_refuses_a_node_id_that_is_not_an_integer(node_id: object) -> None:
    """`decode` "raises `ConfChangeError` on anything malformed": a node id on the wire
    is an integer; anything else is malformed, not to be coerced."""
    with pytest.raises(ConfChangeError):
        ConfChange.decode(packed([1, 0, [[0, node_id]], b""]))


@settings(max_examples=500)
@given(data=st.binary(max_size=64))
def test_decode_of_random_bytes_raises_only_conf_change_error(data: bytes) -> None:
    try:
        cc = ConfChange.decode(data)
    except ConfChangeError:
        return
    assert isinstance(cc, ConfChange)


msgpack_scalars = st.one_of(
    st.none(), st.booleans(), wire_ints, st.floats(), st.text(max_size=5), st.binary(max_size=5)
)
special_floats = st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 1.5, 1e300])
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


hostile_changes = st.one_of(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from([0, 1, 2]), msgpack_scalars),
            st.one_of(special_floats, st.integers(1, 9), msgpack_scalars, msgpack_values),
        ),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.lists(msgpack_values, max_size=3), max_size=3),
    msgpack_values,
)


def decode_refuses_or_parses(value: object) -> None:
    try:
        cc = ConfChange.decode(packed(value))
    except ConfChangeError:
        return
    assert isinstance(cc, ConfChange)


@settings(max_examples=400)
@given(
    transition=st.sampled_from([0, 1, 2]), changes=hostile_changes, context=st.binary(max_size=4)
)
def test_decode_of_hostile_changes_in_a_valid_frame_raises_only_conf_change_error(
    transition: int, changes: Any, context: bytes
) -> None:
    """Hostile input that is valid msgpack, framed like a conf change."""
    decode_refuses_or_parses([1, transition, changes, context])


@settings(max_examples=300)
@given(
    version=st.one_of(st.just(1), msgpack_values),
    transition=st.one_of(st.sampled_from([0, 1, 2]), msgpack_values),
    changes=hostile_changes,
    context=st.one_of(st.binary(max_size=4), msgpack_values),
)
def test_decode_of_hostile_frames_raises_only_conf_change_error(
    version: Any, transition: Any, changes: Any, context: Any
) -> None:
    decode_refuses_or_parses([version, transition, changes, context])


def single_voter_leader() -> tuple[RawNode, MemoryLog]:
    """A one-voter group whose only member has won its election."""
    log = MemoryLog.bootstrap([1])
    node = RawNode(RaftConfig(node_id=1), log)

    def drain() -> None:
        while node.has_ready():
            rd = node.ready()
            if rd.hard_state is not None:
                log.set_hard_state(rd.hard_state)
            log.append(list(rd.entries))
            node.advance(rd)

    drain()
    node.campaign()
    drain()
    assert node.is_leader()
    return node, log


@pytest.mark.parametrize(
    "data",
    [b"garbage", packed([1, 0, [[0, math.inf]], b""]), packed([1, 0, [[0, None]], b""])],
    ids=["not-msgpack", "inf-node-id", "none-node-id"],
)
def test_forwarded_proposal_with_malformed_conf_change_is_dropped_not_raised(
    data: bytes,
) -> None:
    """STYLE.md section 1: "Remote garbage is counted, logged and dropped." A proposal
    forwarded by a follower is remote input: `step` must not raise on it."""
    node, _ = single_voter_leader()
    last = node.last_index()
    bad = Entry(term=0, index=0, kind=EntryKind.CONF_CHANGE, data=data)
    node.step(Propose(term=0, sender=2, to=1, entries=(bad,)))
    assert node.status().dropped_proposals == 1
    assert node.last_index() == last  # nothing appended


# -- RaftConfig.validate ------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    RaftConfig(node_id=1).validate()


@pytest.mark.parametrize(
    "overrides",
    [
        {"election_ticks": 2, "heartbeat_ticks": 1},
        {"max_inflight_msgs": 1},
        {"applied": 0, "max_msg_bytes": 0, "max_inflight_bytes": 0},
        {"max_uncommitted_bytes": 0, "max_committed_bytes_per_ready": 0},
        {"read_only": ReadOnlyOption.LEASE_BASED, "check_quorum": True},
        {"read_only": ReadOnlyOption.LEASE_BASED, "election_ticks": 2, "lease_drift_ticks": 1},
        {"election_ticks": 2, "heartbeat_ticks": 1, "lease_drift_ticks": 5},  # SAFE: unused
        {"node_id": 2**64},
    ],
)
def test_boundary_values_are_valid(overrides: dict[str, Any]) -> None:
    RaftConfig(**{"node_id": 1, **overrides}).validate()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"node_id": 0}, "node_id"),
        ({"node_id": -1}, "node_id"),
        ({"heartbeat_ticks": 0}, "heartbeat_ticks"),
        ({"heartbeat_ticks": -1, "election_ticks": 10}, "heartbeat_ticks"),
        ({"election_ticks": 1, "heartbeat_ticks": 1}, "election_ticks"),
        ({"election_ticks": 3, "heartbeat_ticks": 5}, "election_ticks"),
        ({"election_ticks": 0}, "election_ticks"),
        ({"max_inflight_msgs": 0}, "max_inflight_msgs"),
        ({"applied": -1}, "applied"),
        ({"max_msg_bytes": -1}, "max_msg_bytes"),
        ({"max_inflight_bytes": -1}, "max_inflight_bytes"),
        ({"max_uncommitted_bytes": -1}, "max_uncommitted_bytes"),
        ({"max_committed_bytes_per_ready": -1}, "max_committed_bytes_per_ready"),
        ({"read_only": ReadOnlyOption.LEASE_BASED, "check_quorum": False}, "read_only"),
        ({"lease_drift_ticks": 0}, "lease_drift_ticks"),
        ({"read_only": ReadOnlyOption.LEASE_BASED, "lease_drift_ticks": 10}, "lease_drift_ticks"),
        ({"read_only": ReadOnlyOption.LEASE_BASED, "election_ticks": 2}, "lease_drift_ticks"),
    ],
)
def test_validate_names_the_field(overrides: dict[str, Any], field: str) -> None:
    config = RaftConfig(**{"node_id": 1, **overrides})
    with pytest.raises(ConfigError) as excinfo:
        config.validate()
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"{field}: ")
    assert isinstance(excinfo.value, ValueError)


def test_raw_node_refuses_an_invalid_config_at_construction() -> None:
    with pytest.raises(ConfigError) as excinfo:
        RawNode(RaftConfig(node_id=1, max_inflight_msgs=0), MemoryLog.bootstrap([1]))
    assert excinfo.value.field == "max_inflight_msgs"


# -- SplitMix64 ---------------------------------------------------------------------------


def test_splitmix64_reference_values() -> None:
    # Vigna's reference SplitMix64 from state 0.
    rng = SplitMix64(0)
    assert [rng.randrange(0, 2**64) for _ in range(3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


@settings(max_examples=100)
@given(seed=st.integers(-(2**70), 2**70))
def test_splitmix64_is_deterministic_per_seed(seed: int) -> None:
    a, b = SplitMix64(seed), SplitMix64(seed)
    first = [a.randrange(0, 1000) for _ in range(20)]
    assert first == [b.randrange(0, 1000) for _ in range(20)]
    # Only the low 64 bits of the seed count.
    c = SplitMix64(seed + 2**64)
    assert first == [c.randrange(0, 1000) for _ in range(20)]


def test_splitmix64_seeds_give_different_streams() -> None:
    streams = {tuple(SplitMix64(seed).randrange(0, 2**32) for _ in range(4)) for seed in range(50)}
    assert len(streams) == 50


@settings(max_examples=200)
@given(seed=st.integers(0, 2**64 - 1), start=st.integers(-(10**6), 10**6), width=st.integers(1, 50))
def test_splitmix64_stays_in_range(seed: int, start: int, width: int) -> None:
    rng = SplitMix64(seed)
    for _ in range(20):
        assert start <= rng.randrange(start, start + width) < start + width


def test_splitmix64_covers_a_small_range() -> None:
    rng = SplitMix64(7)
    assert {rng.randrange(10, 20) for _ in range(500)} == set(range(10, 20))


@pytest.mark.parametrize(("start", "stop"), [(5, 5), (5, 4), (0, -1)])
def test_splitmix64_refuses_an_empty_range(start: int, stop: int) -> None:
    with pytest.raises(ValueError, match="empty range"):
        SplitMix64(1).randrange(start, stop)


@pytest.mark.parametrize("node_id", [0, -1, -(2**63)])
def test_decode_refuses_a_node_id_that_is_not_positive(node_id: int) -> None:
    """Member ids are positive; a frame naming another id is refused, not decoded."""
    data = msgpack.packb([1, 0, [[int(ConfChangeType.ADD_VOTER), node_id]], b""])
    with pytest.raises(ConfChangeError):
        ConfChange.decode(data)

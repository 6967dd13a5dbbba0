"""The directory's pure parts: the change log and its bounded history, deltas, snapshots,
digests (checked against a naive oracle with hypothesis), the wire codec, the metadata
layout and the config rules."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copycat.errors import ConfigError, ProtocolError
from copycat.membership import DirectoryEntry, MembershipConfig, Role
from copycat.membership._directory import (
    Delta,
    DirectoryLog,
    DirectoryMismatchError,
    PeerDirectory,
    digest_of,
    entry_hash,
    parse_digest_hex,
)
from copycat.membership._meta import NodeMeta, decode_meta
from copycat.membership._wire import (
    ChunkKind,
    SyncChunk,
    SyncRequest,
    decode,
    encode_chunks,
    encode_request,
)

keys = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "ds-ü", "x" * 128]),
    st.integers(1, 4),
    st.integers(1, 3),
)
changes = st.tuples(keys, st.none() | st.sampled_from(list(Role)))
batches = st.lists(st.lists(changes, max_size=6), max_size=25)


def replay(batches_: list[list[tuple[tuple[str, int, int], Role | None]]]) -> list[dict]:
    """The naive oracle: the full directory after every version."""
    states: list[dict] = [{}]
    for batch in batches_:
        state = dict(states[-1])
        for key, role in batch:
            if role is None:
                state.pop(key, None)
            else:
                state[key] = role
        if state != states[-1]:
            states.append(state)
    return states


@settings(max_examples=200, deadline=None)
@given(batches, st.integers(0, 12))
def test_log_matches_oracle_and_deltas_rebuild_every_version(batches_, history) -> None:
    log = DirectoryLog(max_history_changes=history)
    for batch in batches_:
        log.apply(batch)
    states = replay(batches_)
    assert log.version == len(states) - 1
    assert dict(log.entries()) == states[-1]
    assert log.digest == digest_of(states[-1]) == log.recompute_digest()
    assert log.history_changes <= history
    for version, state in enumerate(states):
        delta = log.delta_since(version)
        if version < log.floor:
            assert delta is None
            continue
        assert delta is not None
        copy = PeerDirectory(epoch=1)
        copy.replace(_snapshot(state, version))
        copy.apply_delta(delta)
        assert dict(copy.entries()) == states[-1]
        assert copy.version == log.version
        # Coalesced: one change per key, never more than keys that differ.
        assert len({k for k, _ in delta.changes}) == len(delta.changes)
    assert log.delta_since(log.version + 1) is None


def _snapshot(state: dict, version: int):
    from copycat.membership._directory import Snapshot

    return Snapshot(version=version, entries=tuple(state.items()), digest=digest_of(state))


def test_history_bound_drops_old_records_and_forces_a_snapshot() -> None:
    log = DirectoryLog(max_history_changes=3)
    for i in range(1, 6):
        log.apply([(("ds", i, 1), Role.VOTER)])
    assert log.version == 5
    assert log.floor == 2
    assert log.delta_since(1) is None
    delta = log.delta_since(2)
    assert delta is not None
    assert [k for k, _ in delta.changes] == [("ds", 3, 1), ("ds", 4, 1), ("ds", 5, 1)]


def test_noop_changes_do_not_move_the_version() -> None:
    log = DirectoryLog(max_history_changes=100)
    assert log.apply([(("ds", 1, 1), None)]) == 0
    assert log.apply([(("ds", 1, 1), Role.VOTER), (("ds", 1, 1), None)]) == 0
    assert log.version == 0
    assert log.apply([(("ds", 1, 1), Role.VOTER)]) == 1
    assert log.apply([(("ds", 1, 1), Role.VOTER)]) == 0
    assert log.version == 1


def test_bad_keys_are_refused_before_anything_changes() -> None:
    log = DirectoryLog(max_history_changes=100)
    for bad in [("", 1, 1), ("ds", 0, 1), ("ds", 1, -1), ("x" * 129, 1, 1), ("ds", True, 1)]:
        with pytest.raises(ValueError, match=r"\w"):
            log.apply([(("ok", 1, 1), Role.VOTER), (bad, Role.VOTER)])
    assert log.version == 0
    with pytest.raises(ValueError, match="group_id"):
        DirectoryEntry(data_structure_id="ds", group_id=0, replica_id=1, role=Role.VOTER)


def test_digest_is_order_independent_and_sensitive_to_role() -> None:
    a = {("x", 1, 1): Role.VOTER, ("y", 2, 1): Role.LEARNER}
    b = dict(reversed(list(a.items())))
    assert digest_of(a) == digest_of(b)
    assert digest_of(a) != digest_of({**a, ("x", 1, 1): Role.LEARNER})
    # The encoding is unambiguous: a data structure id cannot absorb the group id.
    assert entry_hash(("a|1", 2, 3), Role.VOTER) != entry_hash(("a", 12, 3), Role.VOTER)
    assert parse_digest_hex("0" * 32) == 0
    assert parse_digest_hex("g" * 32) is None
    assert parse_digest_hex("0" * 31) is None


def test_peer_copy_refuses_deltas_that_do_not_fit() -> None:
    copy = PeerDirectory(epoch=1)
    with pytest.raises(DirectoryMismatchError, match="full"):
        copy.apply_delta(Delta(from_version=0, to_version=1, changes=(), digest=0))
    copy.replace(_snapshot({("x", 1, 1): Role.VOTER}, 3))
    with pytest.raises(DirectoryMismatchError, match="version 2"):
        copy.apply_delta(Delta(from_version=2, to_version=4, changes=(), digest=0))
    bad = Delta(from_version=3, to_version=4, changes=((("y", 1, 1), Role.VOTER),), digest=123)
    with pytest.raises(DirectoryMismatchError, match="digest") as info:
        copy.apply_delta(bad)
    assert info.value.applied == ((("y", 1, 1), Role.VOTER),)
    assert copy.needs_full
    with pytest.raises(DirectoryMismatchError, match="digest"):
        copy.replace(
            _snapshot({("x", 1, 1): Role.VOTER}, 3).__class__(
                version=5, entries=((("x", 1, 1), Role.VOTER),), digest=1
            )
        )


# -- wire --------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.lists(changes, max_size=400, unique_by=lambda c: c[0]),
    st.integers(4096, 65_536),
    st.sampled_from(list(ChunkKind)),
)
def test_chunks_fit_the_limit_and_decode_to_the_changes(changes_, limit, kind) -> None:
    if kind is ChunkKind.SNAPSHOT:
        changes_ = [(k, r or Role.VOTER) for k, r in changes_]
    chunks = encode_chunks(
        request_id=7,
        epoch=9,
        kind=kind,
        from_version=1,
        to_version=2,
        digest=(1 << 128) - 1,
        changes=tuple(changes_),
        max_bytes=limit,
    )
    assert all(len(c) <= limit for c in chunks)
    decoded = [decode(c, max_bytes=65_536) for c in chunks]
    assert all(isinstance(d, SyncChunk) for d in decoded)
    got = [ch for d in decoded if isinstance(d, SyncChunk) for ch in d.changes]
    assert got == list(changes_)
    assert [d.chunk_index for d in decoded if isinstance(d, SyncChunk)] == list(range(len(chunks)))


def test_chunk_bytes_per_change_are_small() -> None:
    one = [((f"ds-{i:05d}", i + 1, 1), Role.VOTER) for i in range(1000)]
    size = sum(
        len(c)
        for c in encode_chunks(
            request_id=1,
            epoch=1,
            kind=ChunkKind.DELTA,
            from_version=1,
            to_version=2,
            digest=0,
            changes=tuple(one),
            max_bytes=60_000,
        )
    )
    assert 1000 * 10 < size < 1000 * 40


def test_request_round_trips() -> None:
    request = SyncRequest(request_id=1, target_epoch=2, from_version=3, full=True, missing=(4, 5))
    assert decode(encode_request(request), max_bytes=65_536) == request


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_refused_with_protocol_error_only(data) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data, max_bytes=65_536)


# -- metadata and config -------------------------------------------------------------------


def test_metadata_round_trips_and_fits_512_bytes_at_the_limits() -> None:
    meta = NodeMeta(
        node_id=(1 << 63) - 1,
        transport_address="h" * 194 + ":65535",
        data_center="d" * 64,
        rack="r" * 64,
        directory_version=(1 << 64) - 1,
        directory_digest=(1 << 128) - 1,
        name="n" * 64,
    )
    tags = meta.encode()
    assert decode_meta(tags) == meta
    # kinship encodes each key and value with a length prefix of at most 2 bytes.
    assert sum(len(k.encode()) + len(v.encode()) + 4 for k, v in tags.items()) <= 512


@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"cc": "2"},
        {"cc": "1", "id": "0", "ta": "a:1", "dc": "d", "rk": "r", "dv": "0", "dd": "0" * 32},
        {"cc": "1", "id": "x", "ta": "a:1", "dc": "d", "rk": "r", "dv": "0", "dd": "0" * 32},
        {"cc": "1", "id": "1", "ta": "a:1", "dc": "d", "rk": "r", "dv": "-1", "dd": "0" * 32},
        {"cc": "1", "id": "1", "ta": "a:1", "dc": "d", "rk": "r", "dv": "0", "dd": "zz"},
        {"cc": "1", "id": "1", "ta": "", "dc": "d", "rk": "r", "dv": "0", "dd": "0" * 32},
        {"cc": "1", "id": "1", "ta": "a:1", "dc": "d", "rk": "r", "dv": "0", "dd": "0" * 32}
        | {"nm": ""},
        {"cc": "1", "id": "1", "ta": "a:1", "dc": "d", "rk": "r", "dv": "0", "dd": "0" * 32}
        | {"nm": "n" * 65},
    ],
)
def test_malformed_metadata_is_not_a_copycat_node(tags) -> None:
    assert decode_meta(tags) is None


def test_a_node_that_publishes_no_name_is_shown_by_its_transport_address() -> None:
    tags = {"cc": "1", "id": "1", "ta": "a:1", "dc": "d", "rk": "r", "dv": "0", "dd": "0" * 32}
    meta = decode_meta(tags)
    assert meta is not None
    assert (meta.name, meta.display_name) == ("", "a:1")
    named = decode_meta(tags | {"nm": "eu-1a"})
    assert named is not None
    assert named.display_name == "eu-1a"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"node_id": 0}, "node_id"),
        ({"node_id": True}, "node_id"),
        ({"gossip_port": 70000}, "gossip_port"),
        ({"peers_to_contact": ("nope",)}, "peers_to_contact"),
        ({"peers_to_contact": "127.0.0.1:1"}, "peers_to_contact"),
        ({"cluster_name": ""}, "cluster_name"),
        ({"preset": "fast"}, "preset"),
        ({"gossip_host": "10.0.0.1"}, "preset"),
        ({"gossip_host": "10.0.0.1", "preset": "lan"}, "encryption_keys"),
        ({"preset": "lan"}, "encryption_keys"),
        ({"transport_address": "nohost"}, "transport_address"),
        ({"data_center": "d" * 65}, "data_center"),
        ({"rack": "a\nb"}, "rack"),
        ({"sync_timeout_s": 0}, "sync_timeout_s"),
        ({"anti_entropy_interval_s": float("inf")}, "anti_entropy_interval_s"),
        ({"max_chunk_bytes": 70_000}, "max_chunk_bytes"),
        ({"sync_max_retries": -1}, "sync_max_retries"),
    ],
)
def test_config_names_the_broken_field(fields, field) -> None:
    settings_ = {"node_id": 1, **fields}
    with pytest.raises(ConfigError) as info:
        MembershipConfig(**settings_)
    assert info.value.field == field


def test_config_defaults_work_on_one_machine() -> None:
    config = MembershipConfig(node_id=5)
    assert config.preset == "local"
    assert config.gossip_name == "n5"
    MembershipConfig(node_id=5, gossip_host="10.0.0.1", preset="lan", encryption_keys=("k",))
    MembershipConfig(node_id=5, gossip_host="::1", gossip_port=0)

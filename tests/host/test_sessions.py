"""The deduplication table: pure, deterministic, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copycat.errors import CorruptLogError
from copycat.host import Session
from copycat.host._sessions import (
    Proposal,
    SessionTable,
    decode_proposal,
    encode_proposal,
)

S1 = b"a" * 16
S2 = b"b" * 16


def _p(session: bytes, seq: int, first_unacked: int = 1) -> Proposal:
    return Proposal(session=session, seq=seq, first_unacked=first_unacked, data=b"%d" % seq)


def test_a_retry_of_an_applied_sequence_is_a_duplicate() -> None:
    table = SessionTable(ttl_entries=100, max_sessions=10)
    assert table.apply(_p(S1, 1), 1)
    assert not table.apply(_p(S1, 1), 2)


def test_out_of_order_retries_in_the_window_apply_once() -> None:
    """Sequence 2 is lost, 3 commits, then 2 is retried: 2 applies (once), 3 does not
    apply again."""
    table = SessionTable(ttl_entries=100, max_sessions=10)
    assert table.apply(_p(S1, 1), 1)
    assert table.apply(_p(S1, 3, first_unacked=2), 2)
    assert table.apply(_p(S1, 2, first_unacked=2), 3)
    assert not table.apply(_p(S1, 2, first_unacked=2), 4)
    assert not table.apply(_p(S1, 3, first_unacked=2), 5)


def test_below_the_low_water_mark_is_a_duplicate() -> None:
    table = SessionTable(ttl_entries=100, max_sessions=10)
    assert table.apply(_p(S1, 5, first_unacked=5), 1)
    assert not table.apply(_p(S1, 4, first_unacked=5), 2)


def test_expiry_and_eviction_bound_the_table() -> None:
    table = SessionTable(ttl_entries=10, max_sessions=2)
    table.apply(_p(S1, 1), 1)
    table.apply(_p(S2, 1), 2)
    assert table.expire(11) == 1  # S1 unseen for 10 entries
    assert len(table) == 1
    for i in range(3, 6):
        table.apply(_p(bytes([i]) * 16, 1), i)
    assert len(table) == 2  # the least recently seen were evicted


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([S1, S2]), st.integers(1, 8)), max_size=40))
def test_two_members_applying_one_log_decide_alike_and_snapshots_round_trip(ops) -> None:
    a = SessionTable(ttl_entries=5, max_sessions=2)
    b = SessionTable(ttl_entries=5, max_sessions=2)
    for index, (session, seq) in enumerate(ops, start=1):
        if index % 4 == 0:
            a.expire(index)
            b.expire(index)
        assert a.apply(_p(session, seq), index) == b.apply(_p(session, seq), index)
    restored = SessionTable(ttl_entries=5, max_sessions=2)
    restored.restore(a.encode(), group=1, index=len(ops))
    assert restored.encode() == a.encode()


def test_proposal_codec_round_trips_and_refuses_garbage() -> None:
    p = _p(S1, 3, first_unacked=2)
    assert decode_proposal(encode_proposal(p), group=1, index=1) == p
    assert decode_proposal(b"", group=1, index=1) is None
    with pytest.raises(CorruptLogError):
        decode_proposal(b"\x93\x01\x02\x03", group=1, index=7)


def test_a_wide_window_keeps_the_applied_set_bounded_and_deduplicates() -> None:
    """A proposer with 5,000 proposals in flight: the applied set is pruned (in batches
    that grow with the window) so it never holds much more than two windows, and every
    retry of an applied sequence is still a duplicate."""
    window = 5000
    table = SessionTable(ttl_entries=1 << 30, max_sessions=10)
    largest = 0
    for seq in range(1, 40_001):
        assert table.apply(_p(S1, seq, first_unacked=max(1, seq - window)), seq)
        largest = max(largest, len(table._sessions[S1].applied))
    assert largest <= 2 * window + 1
    for seq in (1, 20_000, 39_000, 40_000):
        assert not table.apply(_p(S1, seq, first_unacked=40_001 - window), 40_001)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.just("new"), st.integers(0, 60)), max_size=120))
def test_first_unacked_is_the_lowest_sequence_in_flight(ops: list[str | int]) -> None:
    session = Session()
    for op in ops:
        if op == "new":
            session.in_flight.add(session.next_seq)
            session.next_seq += 1
        else:
            session.in_flight.discard(op)
        expected = min(session.in_flight) if session.in_flight else session.next_seq
        assert session.first_unacked() == expected

"""The leader's per-follower bookkeeping: `Inflights` (flow control window) and the
PROBE / REPLICATE / SNAPSHOT state machine of `Progress` (etcd tracker/progress.go)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copycat.raft._progress import Inflights, Progress, ProgressState

PROBE, REPLICATE, SNAPSHOT = ProgressState.PROBE, ProgressState.REPLICATE, ProgressState.SNAPSHOT


def progress(
    state: ProgressState = PROBE, *, match: int = 0, next_index: int = 1, window: int = 4
) -> Progress:
    pr = Progress(next_index=next_index, inflights=Inflights(window))
    pr.state = state
    pr.match = match
    return pr


# -- Inflights ----------------------------------------------------------------------------


def test_inflights_full_by_count() -> None:
    inf = Inflights(3)
    for i in (1, 2):
        inf.add(i, 100)
        assert not inf.full()
    inf.add(3, 100)
    assert inf.full()
    assert inf.count() == 3
    inf.free_first()
    assert not inf.full()
    assert inf.count() == 2


def test_inflights_full_by_bytes() -> None:
    inf = Inflights(100, max_bytes=1000)
    inf.add(1, 600)
    assert not inf.full()
    inf.add(2, 400)  # exactly at the limit counts as full
    assert inf.full()
    inf.free_le(1)
    assert not inf.full()
    inf.add(3, 5000)  # one oversized message fits in an empty-enough window...
    assert inf.full()  # ...but then nothing more does


def test_inflights_without_byte_limit_ignores_bytes() -> None:
    inf = Inflights(2, max_bytes=0)
    inf.add(1, 10**12)
    assert not inf.full()


def test_free_le_frees_every_message_up_to_the_index() -> None:
    inf = Inflights(10, max_bytes=1000)
    for last, size in ((3, 100), (5, 200), (9, 300), (12, 400)):
        inf.add(last, size)
    assert inf.full()
    inf.free_le(4)  # frees only the message ending at 3 (5 is not acknowledged yet)
    assert inf.count() == 3
    assert not inf.full()  # 900 bytes left, under the 1000-byte limit
    inf.free_le(9)
    assert inf.count() == 1
    inf.free_le(100)
    assert inf.count() == 0
    inf.free_le(100)  # freeing an empty window is a no-op
    assert inf.count() == 0
    inf.free_first()
    assert inf.count() == 0


def test_reset_empties_count_and_bytes() -> None:
    inf = Inflights(5, max_bytes=100)
    inf.add(1, 100)
    assert inf.full()
    inf.reset()
    assert inf.count() == 0
    assert not inf.full()
    inf.add(2, 99)
    assert not inf.full()  # the reset forgot the first message's bytes


inflight_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 5), st.sampled_from([0, 50, 100, 250, 499])),
        st.tuples(st.just("free_le"), st.integers(0, 60), st.just(0)),
        st.tuples(st.just("free_first"), st.just(0), st.just(0)),
        st.tuples(st.just("reset"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(max_msgs=st.integers(1, 6), max_bytes=st.sampled_from([0, 100, 500]), ops=inflight_ops)
def test_inflights_match_a_plain_list(
    max_msgs: int, max_bytes: int, ops: list[tuple[str, int, int]]
) -> None:
    inf = Inflights(max_msgs, max_bytes)
    model: list[tuple[int, int]] = []
    last = 0
    for op, a, b in ops:
        if op == "add":
            if inf.full():  # the leader never sends into a full window
                continue
            last += a  # indexes only grow
            inf.add(last, b)
            model.append((last, b))
        elif op == "free_le":
            inf.free_le(a)
            model = [m for m in model if m[0] > a]
        elif op == "free_first":
            inf.free_first()
            model = model[1:]
        else:
            inf.reset()
            model = []
        total = sum(size for _, size in model)
        assert inf.count() == len(model)
        assert inf.full() == (len(model) >= max_msgs or (max_bytes > 0 and total >= max_bytes))


# -- Progress state machine ---------------------------------------------------------------


def test_new_progress_probes() -> None:
    pr = Progress(next_index=5, inflights=Inflights(4))
    assert (pr.state, pr.match, pr.next, pr.is_learner) == (PROBE, 0, 5, False)
    assert not pr.is_paused()


def test_probe_pauses_after_one_append_until_acknowledged() -> None:
    pr = progress(PROBE, match=3, next_index=4)
    pr.sent_entries(5, 2, 100)
    assert pr.is_paused()
    assert pr.next == 4  # a probe does not advance next optimistically
    assert pr.maybe_update(5)
    assert not pr.is_paused()
    assert (pr.match, pr.next) == (5, 6)


def test_replicate_advances_next_optimistically_and_fills_the_window() -> None:
    pr = progress(REPLICATE, match=3, next_index=4, window=2)
    pr.sent_entries(5, 2, 10)
    assert pr.next == 6
    assert not pr.is_paused()
    pr.sent_entries(5, 0, 0)  # an empty append takes no room
    assert pr.inflights.count() == 1
    pr.sent_entries(7, 2, 10)
    assert pr.next == 8
    assert pr.is_paused()
    pr.maybe_update(5)
    pr.inflights.free_le(5)
    assert not pr.is_paused()


def test_snapshot_state_is_always_paused() -> None:
    pr = progress(REPLICATE, match=3, next_index=9)
    pr.become_snapshot(20)
    assert pr.state == SNAPSHOT
    assert pr.pending_snapshot == 20
    assert pr.is_paused()
    pr.sent_entries(25, 3, 10)
    assert pr.is_paused()
    assert pr.inflights.count() == 0


@pytest.mark.parametrize(
    ("match", "next_index", "ack", "want_updated", "want_match", "want_next"),
    [
        (3, 6, 5, True, 5, 6),
        (3, 6, 8, True, 8, 9),
        (3, 6, 3, False, 3, 6),  # duplicate acknowledgement
        (3, 6, 1, False, 3, 6),  # stale acknowledgement never moves match back
        (3, 4, 3, False, 3, 4),
    ],
)
def test_maybe_update(
    match: int,
    next_index: int,
    ack: int,
    want_updated: bool,
    want_match: int,
    want_next: int,
) -> None:
    pr = progress(REPLICATE, match=match, next_index=next_index)
    assert pr.maybe_update(ack) is want_updated
    assert (pr.match, pr.next) == (want_match, want_next)


def test_stale_ack_does_not_unpause_a_probe() -> None:
    pr = progress(PROBE, match=5, next_index=6)
    pr.sent_entries(6, 1, 1)
    assert not pr.maybe_update(4)
    assert pr.is_paused()


@pytest.mark.parametrize(
    ("state", "match", "next_index", "rejected", "hint", "want", "want_next"),
    [
        # REPLICATE: a rejection at or below match is stale.
        (REPLICATE, 5, 10, 5, 5, False, 10),
        (REPLICATE, 5, 10, 4, 4, False, 10),
        # ... a fresh one falls back to match + 1 whatever the hint.
        (REPLICATE, 5, 10, 9, 0, True, 6),
        (REPLICATE, 5, 10, 7, 7, True, 6),
        # PROBE: only a rejection of next - 1 is news.
        (PROBE, 0, 10, 5, 0, False, 10),
        (PROBE, 0, 10, 10, 0, False, 10),
        (PROBE, 0, 10, 9, 9, True, 9),
        (PROBE, 0, 10, 9, 3, True, 4),  # the hint jumps further back
        (PROBE, 0, 10, 9, 20, True, 9),  # a hint past the rejection is ignored
        (PROBE, 4, 10, 9, 1, True, 5),  # never below match + 1
        (PROBE, 0, 1, 0, 0, True, 1),  # next never reaches 0
    ],
)
def test_maybe_decrease_to(
    state: ProgressState,
    match: int,
    next_index: int,
    rejected: int,
    hint: int,
    want: bool,
    want_next: int,
) -> None:
    pr = progress(state, match=match, next_index=next_index)
    if state == PROBE:
        pr.probe_sent = True
    assert pr.maybe_decrease_to(rejected, hint) is want
    assert pr.next == want_next
    assert pr.match == match
    if state == PROBE:
        assert pr.is_paused() is not want  # a fresh rejection lets the next probe go


def test_become_replicate_and_probe_restart_from_match() -> None:
    pr = progress(REPLICATE, match=5, next_index=5)
    pr.sent_entries(9, 4, 40)
    pr.become_probe()
    assert (pr.state, pr.next) == (PROBE, 6)
    assert pr.inflights.count() == 0
    pr.sent_entries(9, 4, 40)
    assert pr.is_paused()
    pr.become_replicate()
    assert (pr.state, pr.next) == (REPLICATE, 6)
    assert not pr.probe_sent
    assert not pr.is_paused()


@pytest.mark.parametrize(
    ("match", "pending", "want_next"),
    [
        (0, 20, 21),  # resume after the snapshot the follower received
        (25, 20, 26),  # ... or after its match if that is further
        (20, 20, 21),
    ],
)
def test_become_probe_from_snapshot_resumes_after_pending_snapshot(
    match: int, pending: int, want_next: int
) -> None:
    pr = progress(REPLICATE, match=match, next_index=match + 1)
    pr.become_snapshot(pending)
    pr.become_probe()
    assert pr.state == PROBE
    assert pr.next == want_next
    assert pr.pending_snapshot == 0
    assert not pr.is_paused()


def test_become_snapshot_clears_the_window() -> None:
    pr = progress(REPLICATE, match=1, next_index=2)
    pr.sent_entries(3, 2, 10)
    pr.become_snapshot(10)
    assert pr.inflights.count() == 0
    pr.become_replicate()
    assert pr.pending_snapshot == 0


@settings(max_examples=200)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["send", "ack", "reject", "probe", "replicate", "snapshot"]),
            st.integers(0, 30),
            st.integers(0, 30),
        ),
        max_size=40,
    )
)
def test_match_never_decreases_and_next_stays_past_match(ops: list[tuple[str, int, int]]) -> None:
    pr = progress(PROBE, match=0, next_index=1)
    for op, a, b in ops:
        old_match = pr.match
        if op == "send":
            if not pr.is_paused():
                pr.sent_entries(pr.next - 1 + a % 5, a % 5, b)
        elif op == "ack":
            pr.maybe_update(a)
        elif op == "reject":
            pr.maybe_decrease_to(a, b)
        elif op == "probe":
            pr.become_probe()
        elif op == "replicate":
            pr.become_replicate()
        else:
            pr.become_snapshot(a)
        assert pr.match >= old_match
        assert pr.next >= pr.match + 1
        assert pr.next >= 1

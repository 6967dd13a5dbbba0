"""`Tombstones`: the durable record of the groups this node deleted, with what each
deleted member was (what a member opened again must recall); `KnownNodes`: the durable
quorum of group creation, and the lookup reply that spreads it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack
import pytest

from copycat.host import KnownNodes, Retired, Tombstones
from copycat.host._control import decode_lookup, encode_flag, encode_lookup

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(10)

GID = 2055173902535002147349222414510573848


def test_a_tombstone_and_its_retired_member_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "tombstones"
    Tombstones(path).add(GID, Retired(term=4, vote=3, last_log_term=4, last_log_index=73))
    Tombstones(path).add(7)
    again = Tombstones(path)
    assert GID in again
    assert 7 in again
    assert 8 not in again
    assert again.retired(GID) == Retired(4, 3, 4, 73)
    assert again.retired(7) is None


def test_a_later_retirement_keeps_the_further_log(tmp_path: Path) -> None:
    path = tmp_path / "tombstones"
    stones = Tombstones(path)
    stones.add(GID, Retired(term=4, vote=3, last_log_term=4, last_log_index=73))
    # Back as a blank member that was dropped again before it caught up.
    stones.add(GID, Retired(term=6, vote=0, last_log_term=0, last_log_index=0))
    expected = Retired(term=6, vote=0, last_log_term=4, last_log_index=73)
    assert stones.retired(GID) == expected
    assert Tombstones(path).retired(GID) == expected


def test_a_torn_last_line_is_ignored_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tombstones"
    Tombstones(path).add(GID, Retired(term=4, vote=3, last_log_term=4, last_log_index=73))
    # A crash while the next line was written: "... 4 123" torn to "... 4 12".
    with path.open("a") as f:
        f.write(f"{GID:032x} 9 3 4 12")
    again = Tombstones(path)
    assert again.retired(GID) == Retired(4, 3, 4, 73)
    assert "incomplete" in caplog.text


def test_a_line_that_is_no_tombstone_is_ignored_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tombstones"
    path.write_text(f"not-hex\n{GID:032x} 1 2\n{7:032x}\n")
    again = Tombstones(path)
    assert GID not in again
    assert 7 in again
    assert caplog.text.count("is not a tombstone") == 2


def test_known_nodes_survive_a_restart_less_those_that_left(tmp_path: Path) -> None:
    """A node restarted inside a partition must still count the nodes out of sight in its
    creation quorum (sim seed 63 before the fix: a second group under one id)."""
    path = tmp_path / "known_nodes"
    known = KnownNodes(path, 1)
    for node_id in (2, 3, 4, 5):
        known.add(node_id)
    known.discard(5)  # left on purpose
    again = KnownNodes(path, 1)
    assert sorted(again) == [1, 2, 3, 4]
    assert len(again) == 4


def test_known_nodes_ignore_a_torn_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "known_nodes"
    KnownNodes(path, 1).add(2)
    with path.open("a") as f:
        f.write("+3")  # torn: no newline
    assert sorted(KnownNodes(path, 1)) == [1, 2]
    assert "incomplete" in caplog.text


def test_a_lookup_reply_carries_the_known_nodes_and_old_replies_still_read() -> None:
    assert decode_lookup(encode_lookup(True, [5, 3])) == (True, [3, 5], False)
    assert decode_lookup(encode_lookup(False, [], listed=True)) == (False, [], True)
    assert decode_lookup(msgpack.packb([False, [4]])) == (False, [4], False)
    assert decode_lookup(encode_flag(False)) == (False, [], False)  # an earlier version
    for bad in (
        msgpack.packb([True]),
        msgpack.packb([True, [-1]]),
        msgpack.packb([1, []]),
        msgpack.packb([True, [], 1]),
    ):
        with pytest.raises(ValueError, match="lookup reply"):
            decode_lookup(bad)

"""`Tombstones`: the durable record of the groups this node deleted, with what each
deleted member was (what a member opened again must recall)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from copycat.host import Retired, Tombstones

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(10)

GID = 2055173902535002147349222414510573848


def test_a_tombstone_and_its_retired_member_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "tombstones"
    Tombstones(path).add(GID, Retired(term=4, vote=3, last_log_term=4, last_log_index=73))
    Tombstones(path).add(7)
    again = Tombstones(path)
    assert GID in again and 7 in again and 8 not in again
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
    assert GID not in again and 7 in again
    assert caplog.text.count("is not a tombstone") == 2

"""Read-your-writes in `copycat.sync` (issue 15), over the fake node.

In the facade "delivered" means delivered to *your* thread: the thread reading
`commits` took the item and came back for the next one. The facade reads ahead of that
thread into the channel, so what the asyncio node counts as delivered is not enough:
`wait_delivered`, `read_barrier` and `propose(wait_delivered=True)` also wait for the
reader, and refuse (instead of hanging) when called by the reader while it holds an
item.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

import copycat.sync
from copycat._config import Config
from copycat.errors import CopyCatError
from tests.sync.fakes import FakeFactory

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(60)

SAFETY_S = 10.0


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def cc(factory: FakeFactory) -> Iterator[copycat.sync.CopyCat]:
    with copycat.sync.CopyCat(Config(), node_factory=factory) as node:
        yield node


class HoldingReader:
    """Reads `commits` in a thread; after taking `hold_at` it holds it until released."""

    def __init__(self, sub: copycat.sync.Subscription, hold_at: bytes) -> None:
        self.sub = sub
        self.hold_at = hold_at
        self.taken: list[bytes] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for item in self.sub.commits:
            assert isinstance(item, bytes)
            self.taken.append(item)
            if item == self.hold_at:
                self.holding.set()
                self.release.wait(SAFETY_S)


def in_thread(fn: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_wait_delivered_waits_for_the_reader_thread_not_only_the_facade(
    cc: copycat.sync.CopyCat,
) -> None:
    sub = cc.subscribe(cc.new_data_structure_id(), lambda: b"")
    reader = HoldingReader(sub, hold_at=b"a")
    try:
        first = sub.propose(b"a")
        second = sub.propose(b"b")
        assert second > first
        assert reader.holding.wait(SAFETY_S)
        waiter, out = in_thread(lambda: sub.wait_delivered(first, timeout=SAFETY_S))
        waiter.join(0.3)  # the facade took "a" long ago; the reader still holds it
        assert waiter.is_alive(), f"returned while the reader held the item: {out}"
        reader.release.set()
        waiter.join(SAFETY_S)
        assert out == [None]
        assert reader.taken[0] == b"a"
        sub.wait_delivered(second, timeout=SAFETY_S)
        assert reader.taken == [b"a", b"b"]
        assert sub.position == second
    finally:
        reader.release.set()
        sub.close()


def test_propose_waiting_for_delivery_returns_once_the_reader_has_it(
    cc: copycat.sync.CopyCat,
) -> None:
    sub = cc.subscribe(cc.new_data_structure_id(), lambda: b"")
    reader = HoldingReader(sub, hold_at=b"never")
    try:
        for n in range(5):
            value = b"v%d" % n
            position = sub.propose(value, timeout=SAFETY_S, wait_delivered=True)
            assert reader.taken[-1] == value
            assert position == n + 1
        assert sub.read_barrier(timeout=SAFETY_S) == 5
        assert len(reader.taken) == 5
    finally:
        sub.close()


def test_the_reader_waiting_on_itself_raises_instead_of_hanging(
    cc: copycat.sync.CopyCat, factory: FakeFactory
) -> None:
    sub = cc.subscribe(cc.new_data_structure_id(), lambda: b"")
    first = sub.propose(b"a")
    errors: list[Exception] = []
    for item in sub.commits:
        assert item == b"a"
        with pytest.raises(CopyCatError, match="wait forever") as caught:
            sub.wait_delivered(first, timeout=SAFETY_S)
        errors.append(caught.value)
        with pytest.raises(CopyCatError, match="wait forever"):
            sub.propose(b"b", wait_delivered=True)
        break
    assert len(errors) == 1
    assert [s.log for s in factory.nodes[-1].subscriptions] == [[b"a"]]
    sub.close()


def test_a_reader_that_does_not_come_back_times_out_naming_the_caller_s_timeout(
    cc: copycat.sync.CopyCat,
) -> None:
    from copycat.errors import ReadTimeoutError

    sub = cc.subscribe(cc.new_data_structure_id(), lambda: b"")
    reader = HoldingReader(sub, hold_at=b"a")
    try:
        first = sub.propose(b"a")
        assert reader.holding.wait(SAFETY_S)
        with pytest.raises(ReadTimeoutError) as raised:
            sub.wait_delivered(first, timeout=0.3)
        assert "within 0.3 s" in str(raised.value), str(raised.value)
        assert raised.value.index == first
    finally:
        reader.release.set()
        sub.close()

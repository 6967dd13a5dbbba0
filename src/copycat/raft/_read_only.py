"""ReadIndex bookkeeping on the leader (thesis §6.4): pending read requests, keyed by
their context, each waiting for a quorum of heartbeat acknowledgements."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, kw_only=True)
class ReadRequest:
    """One pending read: who asked, with what context, at which commit index."""

    sender: int
    context: bytes
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnlyQueue:
    """Requests in arrival order; acknowledging one confirms all earlier ones."""

    __slots__ = ("_order", "_pending")

    def __init__(self) -> None:
        self._pending: dict[bytes, ReadRequest] = {}
        self._order: list[bytes] = []

    def add(self, request: ReadRequest) -> bool:
        """Queue a request; False when one with the same context is already pending."""
        if request.context in self._pending:
            return False
        self._pending[request.context] = request
        self._order.append(request.context)
        return True

    def ack(self, sender: int, context: bytes) -> set[int] | None:
        """Record `sender`'s acknowledgement; returns the acknowledgers so far."""
        request = self._pending.get(context)
        if request is None:
            return None
        request.acks.add(sender)
        return request.acks

    def release_through(self, context: bytes) -> list[ReadRequest]:
        """Remove and return every request up to and including `context`."""
        if context not in self._pending:
            return []
        position = self._order.index(context)
        released = [self._pending.pop(ctx) for ctx in self._order[: position + 1]]
        del self._order[: position + 1]
        return released

    def last_context(self) -> bytes | None:
        return self._order[-1] if self._order else None

    def __len__(self) -> int:
        return len(self._order)

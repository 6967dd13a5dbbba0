"""Exactly-once proposals: the entry format that carries (session, sequence), and the
deduplication table every member of a group applies deterministically.

What lives here: pure functions and a table; no asyncio, no I/O, no clock. Expiry is
measured in applied log entries, not seconds, so that every member (interactive or
detached) drops the same sessions at the same index.

The rules:
1. A proposal is [FORMAT, session (16 bytes), seq, first_unacked, data]. `seq` counts
   from 1 per session; `first_unacked` is the lowest sequence whose commit the proposer
   has not yet seen, so everything below it is known to be applied.
2. Applying a proposal: the session's low-water mark rises to `first_unacked`; a
   `seq` below the mark, or already in the session's applied set, is a duplicate and is
   skipped; anything else is applied and remembered.
3. A session unseen for `ttl_entries` applied entries expires; when the table holds
   `max_sessions`, the session seen least recently is evicted. A proposer whose session
   expired gets a new one: its retried proposals may then apply twice, which is why the
   TTL is long compared with any retry (docs/host.md, "Exactly once").
4. The table is part of every snapshot (`encode_table` / `decode_table`), beside the
   user's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import msgpack

from copycat.errors import CorruptLogError

ENTRY_FORMAT: Final = 1
TABLE_FORMAT: Final = 1
SESSION_ID_BYTES: Final = 16
PRUNE_AT: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    session: bytes
    seq: int
    first_unacked: int
    data: bytes


def encode_proposal(p: Proposal) -> bytes:
    packed: bytes = msgpack.packb([ENTRY_FORMAT, p.session, p.seq, p.first_unacked, p.data])
    return packed


def decode_proposal(raw: bytes, *, group: object, index: int) -> Proposal | None:
    """The proposal in an entry's data; None for an empty entry (a leader's no-op).
    A malformed entry raises `CorruptLogError`: the log holds only what members wrote."""
    if not raw:
        return None
    try:
        fmt, session, seq, first_unacked, data = msgpack.unpackb(raw)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptLogError(group, index, f"undecodable proposal: {exc}") from exc
    if (
        fmt != ENTRY_FORMAT
        or not isinstance(session, bytes)
        or len(session) != SESSION_ID_BYTES
        or type(seq) is not int
        or type(first_unacked) is not int
        or not isinstance(data, bytes)
        or seq < 1
    ):
        raise CorruptLogError(group, index, "malformed proposal envelope")
    return Proposal(session=session, seq=seq, first_unacked=first_unacked, data=data)


@dataclass(slots=True)
class SessionState:
    low: int = 1
    """Every sequence below this one is known applied."""
    applied: set[int] = field(default_factory=set)
    """Applied sequences at or above `low`."""
    last_index: int = 0
    """Log index of the session's latest proposal (for expiry and eviction)."""
    prune_at: int = PRUNE_AT
    """Size of `applied` that triggers the next pruning (doubles with the proposer's
    window, so pruning stays amortized O(1) per proposal however many are in flight)."""


class SessionTable:
    """The deduplication state of one group (see the module rules)."""

    __slots__ = ("_sessions", "max_sessions", "ttl_entries")

    def __init__(self, *, ttl_entries: int, max_sessions: int) -> None:
        if ttl_entries < 1 or max_sessions < 1:
            raise ValueError("ttl_entries and max_sessions must be at least 1")
        self.ttl_entries = ttl_entries
        self.max_sessions = max_sessions
        self._sessions: dict[bytes, SessionState] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def apply(self, p: Proposal, index: int) -> bool:
        """Record proposal `p` committed at `index`; True if it must be delivered,
        False if it is a duplicate."""
        state = self._sessions.get(p.session)
        if state is None:
            self._make_room(index)
            state = SessionState()
            self._sessions[p.session] = state
        else:
            # Move to the end: the dict's order is the recency order (deterministic).
            del self._sessions[p.session]
            self._sessions[p.session] = state
        state.last_index = index
        if p.first_unacked > state.low:
            state.low = p.first_unacked
            if len(state.applied) > state.prune_at:
                # Sequences below `low` are duplicates by the rule above whether or not
                # the set holds them: prune in batches, not on every proposal.
                state.applied = {s for s in state.applied if s >= state.low}
                state.prune_at = max(PRUNE_AT, 2 * len(state.applied))
        if p.seq < state.low or p.seq in state.applied:
            return False
        state.applied.add(p.seq)
        return True

    def expire(self, index: int) -> int:
        """Drop sessions unseen for `ttl_entries` entries; returns how many."""
        cutoff = index - self.ttl_entries
        expired = 0
        for session, state in list(self._sessions.items()):
            if state.last_index > cutoff:
                break  # recency order: the rest are newer
            del self._sessions[session]
            expired += 1
        return expired

    def _make_room(self, index: int) -> None:
        self.expire(index)
        while len(self._sessions) >= self.max_sessions:
            oldest = next(iter(self._sessions))
            del self._sessions[oldest]

    def encode(self) -> bytes:
        rows = [
            [session, st.low, sorted(s for s in st.applied if s >= st.low), st.last_index]
            for session, st in self._sessions.items()
        ]
        packed: bytes = msgpack.packb([TABLE_FORMAT, rows])
        return packed

    def restore(self, raw: bytes, *, group: object, index: int) -> None:
        """Replace the table with one read from a snapshot."""
        try:
            fmt, rows = msgpack.unpackb(raw)
            if fmt != TABLE_FORMAT:
                raise ValueError(f"table format {fmt}")
            sessions: dict[bytes, SessionState] = {}
            for session, low, applied, last_index in rows:
                if not isinstance(session, bytes) or type(low) is not int:
                    raise ValueError("bad session row")
                sessions[session] = SessionState(
                    low=low, applied={int(s) for s in applied}, last_index=int(last_index)
                )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptLogError(group, index, f"bad session table in snapshot: {exc}") from exc
        self._sessions = sessions

"""Leadership follows the writers: the leader of a group whose proposals come mostly from
another data center, for a while, hands its leadership to a voter there.

What lives here: `FollowConfig`; `Streaks`, the pure decision (which data center, if
any, a group's leadership should move to, given each window's proposals by data center);
and `LeaderFollower`, the loop that reads the host's counts every window and asks raft
for a leader transfer. What must not: raft logic (the transfer is raft's, thesis §3.10),
placement (which nodes hold voters), the user's view.

Why: a proposal from a follower's node travels to the leader first, so it commits in
about 2 round trips instead of 1; across data centers that is the largest cost a writer
pays. The rules (docs/wan.md, "The leader follows the writers"):
1. Only the leader decides, from what it saw: the proposals that reached it (its own
   node's included), counted per origin node, mapped to data centers by gossip.
2. A data center other than the leader's own must send at least `share` of the group's
   proposals in each of `windows` windows in a row (`after_s` in all), each window
   holding at least `min_per_window` proposals. A window short of either breaks the
   streak. Two data centers writing alike never reach the share: no flapping.
3. A leader that a move brought less than `cooldown_s` ago does not move it again, so
   leadership moves at most once per cooldown whatever the writes do. A leader elected
   after a timeout (the first of a new group, or after a failure) may move it at once.
4. The new leader is a voter in that data center: the node the most proposals came from
   if it is a voter, else the first voter there. Without a voter there, nothing moves.
Every move is logged at info and counted (`leader_moves_followed`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from copycat._ids import group_name
from copycat.errors import CopyCatError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from copycat.host._host import Host

log = logging.getLogger("copycat.follow")

UNKNOWN_DC: Final = ""
"""Where proposals from a node gossip does not place come from: never a target."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowConfig:
    node_id: int
    after_s: float = 15.0
    """How long one other data center must send most of a group's proposals before
    leadership moves there."""
    windows: int = 3
    """Windows `after_s` is cut into; each must show the same data center."""
    share: float = 0.75
    """Share of a window's proposals that data center must send (above one half, so
    that two writing alike never move it)."""
    min_per_window: int = 10
    """Fewer proposals in a window say nothing about where the writers are."""
    cooldown_s: float | None = field(default=None)
    """No move within this long of a move bringing the leadership here; None: 4 x
    `after_s`."""

    def __post_init__(self) -> None:
        if not self.after_s > 0 or self.windows < 1:
            raise ValueError("after_s must be positive and windows at least 1")
        if not 0.5 < self.share <= 1.0:
            raise ValueError("share must be above 0.5 and at most 1")

    @property
    def window_s(self) -> float:
        return self.after_s / self.windows

    @property
    def cooldown(self) -> float:
        return 4 * self.after_s if self.cooldown_s is None else self.cooldown_s


class Streaks:
    """Per group, the data center that has sent most of its proposals, window after
    window (rules 2 and 3 of the module docstring). Pure: no clock, no I/O."""

    __slots__ = ("_config", "_streaks")

    def __init__(self, config: FollowConfig) -> None:
        self._config = config
        self._streaks: dict[int, tuple[str, int]] = {}

    def observe(
        self,
        gid: int,
        by_dc: Mapping[str, int],
        own_dc: str,
        *,
        since_move_s: float,
    ) -> str | None:
        """One window of `gid`'s proposals by data center, seen by its leader in
        `own_dc`, whom a move brought `since_move_s` ago (infinite: it was elected);
        returns the data center to move the leadership to, or None."""
        cfg = self._config
        total = sum(by_dc.values())
        top, count = max(by_dc.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
        if total < cfg.min_per_window or top in (own_dc, UNKNOWN_DC) or count < cfg.share * total:
            self._streaks.pop(gid, None)
            return None
        dc, windows = self._streaks.get(gid, (top, 0))
        windows = windows + 1 if dc == top else 1
        self._streaks[gid] = (top, windows)
        if windows < cfg.windows or since_move_s < cfg.cooldown:
            return None
        self._streaks.pop(gid, None)
        return top

    def forget(self, gid: int) -> None:
        self._streaks.pop(gid, None)

    def tracked(self) -> list[int]:
        return list(self._streaks)


class LeaderFollower:
    """The loop of one node: every window, on the groups it leads that saw proposals,
    applies `Streaks` and transfers leadership where it says."""

    def __init__(self, config: FollowConfig, host: Host, dc_of: Callable[[int], str]) -> None:
        self.config = config
        self._host = host
        self._dc_of = dc_of
        self._streaks = Streaks(config)
        self._moving: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        host.counters.setdefault("leader_moves_followed", 0)

    async def run(self) -> None:
        """Scan every window until cancelled."""
        while True:
            await asyncio.sleep(self.config.window_s)
            self.scan()

    def scan(self) -> None:
        """One window: every group that saw proposals, or has a streak going."""
        host = self._host
        own_dc = self._dc_of(self.config.node_id)
        for gid in set(host.groups_with_origins()) | set(self._streaks.tracked()):
            origins = host.take_origins(gid)
            leading = host.leading_for(gid)
            if leading is None or gid in self._moving:
                self._streaks.forget(gid)
                continue
            leading_s, moved_here = leading
            by_dc: dict[str, int] = {}
            for node, count in origins.items():
                dc = self._dc_of(node)
                by_dc[dc] = by_dc.get(dc, 0) + count
            target_dc = self._streaks.observe(
                gid, by_dc, own_dc, since_move_s=leading_s if moved_here else math.inf
            )
            if target_dc is None:
                continue
            target = self._choose(gid, target_dc, origins)
            if target is None:  # debug: it would repeat every `after_s` for the group
                log.debug(
                    "%s: most proposals come from %s, which holds no voter: leadership stays here",
                    group_name(gid),
                    target_dc,
                )
                continue
            self._moving.add(gid)
            task = asyncio.get_running_loop().create_task(
                self._move(gid, target, target_dc, sum(origins.values()))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _choose(self, gid: int, dc: str, origins: Mapping[int, int]) -> int | None:
        status = self._host.group_status(gid)
        if status is None:
            return None
        there = [v for v in status.voters if v != self.config.node_id and self._dc_of(v) == dc]
        if not there:
            return None
        return max(there, key=lambda v: (origins.get(v, 0), -v))

    async def _move(self, gid: int, target: int, dc: str, proposals: int) -> None:
        cfg = self.config
        log.info(
            "%s: leadership moves to node %d in %s: over %.0f s, at least %.0f%% of "
            "the proposals came from there (%d in the last window)",
            group_name(gid),
            target,
            dc,
            cfg.after_s,
            100 * cfg.share,
            proposals,
        )
        try:
            await self._host.transfer_leader(gid, target)
        except (CopyCatError, ValueError) as exc:
            log.warning("%s: leadership did not move to node %d: %s", group_name(gid), target, exc)
        else:
            self._host.counters["leader_moves_followed"] += 1
        finally:
            self._moving.discard(gid)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

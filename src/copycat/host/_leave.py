"""Graceful leave: a node hands every replica it holds over before it goes.

What lives here: `Leave`, which drives the hand-over of each group from the leaving
node (docs/host.md, "Graceful leave"), and the handler by which a group's leader
replaces a leaving node (`copycat.hand_over`). What must not: placement arithmetic or
membership changes themselves (`Repair` and `Host` make them), the user's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from copycat._ids import DataStructureId, group_name
from copycat.errors import CopyCatError, NotLeaderError, ProposalTimeoutError
from copycat.host._control import Method, decode_flag, encode_flag
from copycat.host._host import decode_ints, encode_ints

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from copycat.host._host import Host
    from copycat.host._repair import Repair
    from copycat.membership import View

log = logging.getLogger("copycat.leave")

LEAVE_CONCURRENCY: Final = 8
"""Groups a leaving node hands over at once."""
PROGRESS_EVERY_S: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveConfig:
    node_id: int
    tick_interval_s: float
    election_ticks: int
    proposal_timeout_s: float


class Leave:
    """The hand-over of a leaving node's replicas, and the leader's side of it."""

    def __init__(
        self,
        config: LeaveConfig,
        host: Host,
        repair: Repair,
        *,
        call: Callable[..., Awaitable[bytes]],
        view: Callable[[], View],
        drop: Callable[[int], None],
    ) -> None:
        self.config = config
        self.host = host
        self.repair = repair
        self._call = call
        self._view = view
        self._drop = drop
        """Deletes this node's copy of a group handed over (the node's bookkeeping too)."""

    async def hand_over_all(self, deadline: float) -> list[int]:
        """Hand every group over by `deadline` (loop time), `LEAVE_CONCURRENCY` at once,
        logging progress; returns the groups that could not be."""
        host = self.host
        loop = asyncio.get_running_loop()
        total = len(host.groups)
        failed: list[int] = []
        progress = loop.create_task(self._log_progress(total))
        closing = False
        try:
            semaphore = asyncio.Semaphore(LEAVE_CONCURRENCY)

            async def one(gid: int) -> None:
                async with semaphore:
                    if not await self.hand_over(gid, deadline):
                        failed.append(gid)

            # A second round takes the groups that arrived meanwhile (a start_replica
            # accepted just before leaving began).
            for _round in range(2):
                await asyncio.gather(*(one(gid) for gid in sorted(host.groups)))
                if not host.groups or failed or loop.time() >= deadline:
                    break
        except GeneratorExit:
            closing = True  # dropped unfinished (its node's loop is gone): no await
            raise
        finally:
            progress.cancel()
            if not closing:
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
        return failed

    async def _log_progress(self, total: int) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            done = total - len(self.host.groups)
            log.info("leaving: %d of %d groups handed over", done, total)

    async def hand_over(self, gid: int, deadline: float) -> bool:
        """Get this node out of group `gid`, replaced, by `deadline`; True when done."""
        host, repair, cfg = self.host, self.repair, self.config
        loop = asyncio.get_running_loop()
        ds = DataStructureId.from_int(gid)
        me = cfg.node_id
        pause = cfg.tick_interval_s * 5
        blank_until = loop.time() + 2 * cfg.election_ticks * cfg.tick_interval_s
        last_error: Exception | None = None
        while loop.time() < deadline:
            status = host.group_status(gid)
            if status is None:
                return True
            try:
                if me not in status.voters and me not in status.learners:
                    if status.blank and loop.time() < blank_until:
                        # An empty member: a leader may be adding it right now (a
                        # start_replica accepted before the leave); give it a moment.
                        await asyncio.sleep(pause)
                        continue
                    # Removed already (a retry after a lost answer), or never filled.
                    self._drop(gid)
                    return True
                if status.is_leader:
                    live = set(self._view().node_ids)
                    others = [v for v in status.voters if v != me and v in live]
                    if status.joint or gid in repair.changing:
                        await asyncio.sleep(pause)
                        continue
                    if not others:
                        # A lone voter: its replacement joins first, then leads.
                        repair.changing.add(gid)
                        try:
                            await repair.replace_voter(gid, me, exclude=(me,), remove=False)
                        finally:
                            repair.changing.discard(gid)
                        continue
                    matches = host.matches(gid)
                    to = max(others, key=lambda v: (matches.get(v, 0), -v))
                    log.info("leaving: group %s: handing leadership to node %d", ds, to)
                    await host.transfer_leader(gid, to)
                    continue
                if not status.leader_id:
                    await asyncio.sleep(pause)
                    continue
                reply = await self._call(
                    status.leader_id,
                    Method.HAND_OVER,
                    encode_ints(gid, me),
                    timeout_s=max(1.0, deadline - loop.time()),
                )
                self._drop(gid)
                if not decode_flag(reply):
                    log.warning(
                        "leaving: group %s: no node could take this replica; the group "
                        "goes on with one voter less (topped up when a node joins)",
                        ds,
                    )
                else:
                    log.info("leaving: group %s handed over", ds)
                return True
            except asyncio.CancelledError:
                raise
            except (CopyCatError, ValueError, OSError) as exc:
                last_error = exc
                log.debug("leaving: group %s: %s; trying again", ds, exc)
                await asyncio.sleep(pause)
        log.warning("leaving: group %s not handed over: %s", ds, last_error)
        return False

    async def serve_hand_over(self, peer: int, body: bytes) -> bytes:
        """On the leader of a group: node `leaving` goes. A voter is replaced first (as
        repair does, without waiting for any grace), a learner is just removed. Answers
        whether a node took the voter's place (`encode_flag`; a learner: True). Leaving
        is on purpose, so a voter with no replacement is removed all the same."""
        gid, leaving = decode_ints(body, 2)
        host, repair, cfg = self.host, self.repair, self.config
        status = host.group_status(gid)
        if status is None:
            raise CopyCatError(f"node {cfg.node_id} hosts no member of group {gid}")
        if not status.is_leader:
            raise NotLeaderError(status.leader_id or None)
        if leaving == cfg.node_id:
            raise CopyCatError("the leader does not hand itself over: transfer leadership first")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.proposal_timeout_s
        while gid in repair.changing:
            if loop.time() > deadline:
                raise ProposalTimeoutError(
                    f"{group_name(gid)}: another membership change is under way"
                )
            await asyncio.sleep(cfg.tick_interval_s * 5)
        repair.changing.add(gid)
        try:
            status = host.group_status(gid)
            if status is None or (leaving not in status.voters and leaving not in status.learners):
                return encode_flag(True)
            if leaving not in status.voters:
                await host.remove_member(gid, leaving)
                return encode_flag(True)
            live = set(self._view().node_ids)
            dead = [v for v in status.voters if v not in live]
            log.info("group %s: node %d leaves", DataStructureId.from_int(gid), leaving)
            replaced = await repair.replace_voter(gid, leaving, exclude=dead, shrink=True)
        finally:
            repair.changing.discard(gid)
        return encode_flag(replaced)

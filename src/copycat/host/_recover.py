"""Disaster recovery of one group: rebuild it from this node's member when the majority
of its voters is gone for good (`CopyCat.recover`, `copycat recover`).

What lives here: `Recovery`, which weighs the evidence, refuses with
`RecoveryRefusedError` or forces the configuration (`Host.force_sole_voter`), and
`RecoveryReport`, what it tells the operator. What must not: the log arithmetic
(`_force.py`), the user's view and the directory (`copycat`).

The rules (docs/operations.md, "Disaster recovery"):
1. Refuse while the group has a leader this member knows of: a group with a leader
   commits, and needs no recovery.
2. Refuse while a majority of the group's voters (this member included; in a joint
   configuration, of either half) is reachable. A voter counts as reachable when gossip
   lists its node (alive, or suspect: not yet declared failed), or when this member had
   a raft message of the group from it within `heard_within_s` (or opened less than that
   ago). Only what this node can see counts: a voter cut off from this node alone, and
   alive for the others, is not seen. That is what the operator vouches for.
3. Refuse when this node's member is not in the group's configuration.
4. Otherwise make this member the only voter, keeping every entry it has; placement and
   repair add voters again up to the group's replica rule as nodes are there.
A dry run checks the same and reports what would happen, changing nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from copycat._ids import DataStructureId
from copycat.errors import RecoveryRefusedError
from copycat.host._force import ForcedConf, plan_sole_voter

if TYPE_CHECKING:
    from collections.abc import Callable

    from copycat.host._host import Host
    from copycat.membership import View


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryReport:
    """What a recovery did (or, for a dry run, would do) and what it may have lost."""

    data_structure_id: str
    node_id: int
    """The surviving member: the group's only voter afterwards."""
    recovered: bool
    """False for a dry run: nothing was changed."""
    voters_before: tuple[int, ...]
    unreachable_voters: tuple[int, ...]
    """The voters removed (none was reachable: the evidence for each is below)."""
    evidence: dict[int, str]
    """Why each removed voter counts as unreachable."""
    last_index: int
    """The survivor's last index: every entry up to it is kept."""
    commit_index: int
    """The survivor's commit index before the recovery."""
    kept_uncommitted: int
    """Entries past its commit index that the survivor holds: kept and committed by the
    recovery (the old majority may have committed them; if it did not, their proposers
    were told the outcome is unknown)."""
    recovery_index: int
    """The index of the last recovery entry (0 for a dry run)."""
    term: int
    """The term of the recovery entries (0 for a dry run)."""
    in_flight_proposals: int
    """Proposals made on this node and not yet seen committed: resent to the survivor
    once it leads (the same session and sequence: applied at most once)."""
    leader: bool = False
    """Whether the survivor leads the group when the report is made."""

    def lost(self) -> str:
        """What may be lost, in words."""
        return (
            f"entries the other voters had past index {self.last_index} (which this node "
            "never received) are lost; so are proposals in flight on other nodes that "
            "were not resent (a subscriber's session resends its own until it times out)"
        )

    def describe(self) -> str:
        """Lines for an operator (what `copycat recover` prints)."""
        done = "RECOVERED" if self.recovered else "DRY RUN (nothing changed)"
        lines = [
            f"{done}: data structure {self.data_structure_id} from node {self.node_id}",
            f"  voters before:        {', '.join(map(str, self.voters_before))}",
            f"  voters after:         {self.node_id} (placement and repair add more)",
            "  removed (unreachable): "
            + (", ".join(f"{v} ({self.evidence[v]})" for v in self.unreachable_voters) or "-"),
            f"  survivor last index:  {self.last_index} (every entry up to it is kept)",
            f"  survivor commit:      {self.commit_index}"
            + (
                f" ({self.kept_uncommitted} entries past it are kept and committed)"
                if self.kept_uncommitted
                else ""
            ),
            f"  in-flight proposals:  {self.in_flight_proposals} on this node (resent)",
            f"  MAY BE LOST:          {self.lost()}",
        ]
        if self.recovered:
            lines.append(
                f"  recovery entries up to index {self.recovery_index}, term {self.term}; "
                + ("this node leads the group" if self.leader else "the election follows")
            )
        return "\n".join(lines)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RecoveryReport:
        """The report `to_json` made (what `copycat recover` reads back); ValueError or
        KeyError when `document` is not one."""
        return cls(
            data_structure_id=str(document["data_structure_id"]),
            node_id=int(document["node_id"]),
            recovered=bool(document["recovered"]),
            voters_before=tuple(int(v) for v in document["voters_before"]),
            unreachable_voters=tuple(int(v) for v in document["unreachable_voters"]),
            evidence={int(k): str(v) for k, v in dict(document["evidence"]).items()},
            last_index=int(document["last_index"]),
            commit_index=int(document["commit_index"]),
            kept_uncommitted=int(document["kept_uncommitted"]),
            recovery_index=int(document["recovery_index"]),
            term=int(document["term"]),
            in_flight_proposals=int(document["in_flight_proposals"]),
            leader=bool(document["leader"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The report as plain data (what POST /recover answers)."""
        return {
            "data_structure_id": self.data_structure_id,
            "node_id": self.node_id,
            "recovered": self.recovered,
            "voters_before": list(self.voters_before),
            "unreachable_voters": list(self.unreachable_voters),
            "evidence": {str(k): v for k, v in self.evidence.items()},
            "last_index": self.last_index,
            "commit_index": self.commit_index,
            "kept_uncommitted": self.kept_uncommitted,
            "recovery_index": self.recovery_index,
            "term": self.term,
            "in_flight_proposals": self.in_flight_proposals,
            "leader": self.leader,
            "lost": self.lost(),
        }


class Recovery:
    """The recovery of this node's groups (see the module docstring for its rules)."""

    def __init__(self, host: Host, view: Callable[[], View], *, heard_within_s: float) -> None:
        self.host = host
        self._view = view
        self.heard_within_s = heard_within_s
        """How recent a raft message from a voter makes it reachable (rule 2)."""

    def reachable_voters(self, gid: int, voters: frozenset[int]) -> dict[int, str]:
        """Which of `voters` (this node left out) count as reachable (rule 2), with the
        evidence for each."""
        host = self.host
        view = self._view()
        found: dict[int, str] = {}
        for voter in sorted(voters - {host.config.node_id}):
            member = view.member(voter)
            silent = host.silent_for(gid, voter)
            if member is not None:
                found[voter] = f"gossip lists its node as {member.state.value}"
            elif silent < self.heard_within_s:
                found[voter] = (
                    f"raft heard from it {silent:.1f} s ago (less than {self.heard_within_s:g} s)"
                )
        return found

    def check(self, gid: int) -> tuple[ForcedConf, dict[int, str]]:
        """Raise `RecoveryRefusedError` unless rules 1 to 3 allow recovering `gid` here;
        otherwise the forced configuration planned (nothing written yet) and the
        evidence for each voter it removes. The majority is counted in the configuration
        raft applied and in the one the log ends with (changes not yet applied), each
        half of a joint one alike."""
        host = self.host
        me = host.config.node_id
        ds = DataStructureId.from_int(gid)
        status = host.group_status(gid)
        if status is None:
            raise RecoveryRefusedError(ds, f"{ds}: this node hosts no member of it")
        group = host.group(gid)
        applied = group.raw.conf_state()
        plan = plan_sole_voter(group.log, me)
        confs = (applied, plan.before)
        if not any(me in conf.members() for conf in confs):
            raise RecoveryRefusedError(
                ds, f"{ds}: this node's member is not in the group's configuration"
            )
        voters = frozenset().union(*(c.voters | c.voters_outgoing for c in confs))
        reachable = self.reachable_voters(gid, voters)
        if status.leader_id:
            who = "this node" if status.leader_id == me else f"node {status.leader_id}"
            raise RecoveryRefusedError(
                ds,
                f"{ds}: the group has a leader ({who}, term {status.term}): it commits and "
                "needs no recovery",
                reachable_voters=reachable,
                leader_id=status.leader_id,
            )
        for half in (h for conf in confs for h in (conf.voters, conf.voters_outgoing) if h):
            up = sorted(v for v in half if v == me or v in reachable)
            if len(up) > len(half) // 2:
                raise RecoveryRefusedError(
                    ds,
                    f"{ds}: a majority of its voters is reachable ({len(up)} of {len(half)}: "
                    + "; ".join("this node" if v == me else f"node {v}: {reachable[v]}" for v in up)
                    + "): the group elects a leader by itself; recover only when the "
                    "majority is gone for good",
                    reachable_voters=reachable,
                )
        evidence = {
            v: f"not in gossip's view; raft silent for {host.silent_for(gid, v):.0f} s"
            for v in sorted(voters - {me} - set(reachable))
        }
        return plan, evidence

    async def recover(self, gid: int, *, dry_run: bool = False) -> RecoveryReport:
        """Rebuild group `gid` from this node's member (rules 1 to 4); with `dry_run`,
        only check and report. After a real recovery it waits (up to two election
        timeouts) for this node to lead the group."""
        host = self.host
        planned, evidence = self.check(gid)
        group = host.group(gid)
        in_flight = len(group.waiters)
        ds = str(DataStructureId.from_int(gid))
        if dry_run:
            return _report(ds, host.config.node_id, planned, evidence, in_flight)
        plan = host.force_sole_voter(gid)
        cfg = host.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * cfg.election_ticks * cfg.tick_interval_s
        while loop.time() < deadline:
            status = host.group_status(gid)
            if status is None or status.is_leader:
                break
            await asyncio.sleep(cfg.tick_interval_s)
        status = host.group_status(gid)
        leads = status is not None and status.is_leader
        return _report(ds, cfg.node_id, plan, evidence, in_flight, done=True, leader=leads)


def _report(
    ds: str,
    node_id: int,
    plan: ForcedConf,
    evidence: dict[int, str],
    in_flight: int,
    *,
    done: bool = False,
    leader: bool = False,
) -> RecoveryReport:
    """The report of `plan`: carried out (`done`), or only planned (a dry run: no
    recovery entry and no new term yet)."""
    return RecoveryReport(
        data_structure_id=ds,
        node_id=node_id,
        recovered=done,
        voters_before=_voters(plan),
        unreachable_voters=tuple(sorted(evidence)),
        evidence=evidence,
        last_index=plan.last_index,
        commit_index=plan.commit_index,
        kept_uncommitted=plan.last_index - plan.commit_index,
        recovery_index=plan.recovery_index if done else 0,
        term=plan.new_term if done else 0,
        in_flight_proposals=in_flight,
        leader=leader,
    )


def _voters(plan: ForcedConf) -> tuple[int, ...]:
    return tuple(sorted(plan.before.voters | plan.before.voters_outgoing))

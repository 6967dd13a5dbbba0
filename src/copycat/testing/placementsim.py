# A simulated cluster that measures placement: load spread, movement on leave and join,
# and rule violations.
#
# What lives here: the `placementsim` command (`python -m copycat.testing.placementsim`)
# and `simulate`, which it wraps. It builds a topology and group ids from a seed, calls
# `copycat.placement` and checks the results with `copycat.placement.violations`.
#
# What must not: placement logic of its own (it measures `copycat.placement`, it does not
# reimplement it), I/O beyond stderr progress and the final JSON line on stdout, or
# imports from layers other than `copycat.placement` and `copycat.errors`.
"""Placement simulator.

Builds a cluster of D data centers x R racks x K nodes (default 3 x 3 x 4) and G groups
(default 1,000) with seeded, ULID-shaped ids, places every group, then measures:

* `max_node_over_mean`: the most loaded node's replicas over the mean (target <= 1.25);
* `moved_on_leave_fraction`: replicas whose node changed when one node leaves, over the
  replicas placed (target <= 2/N, N the initial number of nodes);
* `moved_on_join_fraction`: the same when one node joins (target <= 2/N);
* `rule_violations`: broken placement rules over the three placements (target 0).

It also reports plain rendezvous (no load bound) figures and the *collateral* groups:
groups that changed although they had no replica on the node that left, or although the
node that joined did not win one of their replicas (0 for plain rendezvous).

Run it::

    python -m copycat.testing.placementsim                    # last line: JSON summary
    python -m copycat.testing.placementsim --groups 5000 --seed 3
    python -m copycat.testing.placementsim --load-factor none # plain rendezvous

Exit status 0 when every target is met, 1 when one is missed, 2 when the cluster cannot
hold the rule at all (`NotEnoughNodesError`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import TYPE_CHECKING

from copycat.errors import ConfigError, NotEnoughNodesError
from copycat.placement import (
    DEFAULT_LOAD_FACTOR,
    NodeInfo,
    PlacementRule,
    RackSpread,
    Topology,
    place_groups,
    violations,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

MAX_NODE_OVER_MEAN = 1.25
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def group_ids(count: int, seed: int) -> list[str]:
    """`count` distinct ULID-shaped ids (26 Crockford base32 characters) from `seed`."""
    rng = random.Random(f"placementsim-groups-{seed}")
    ids: set[str] = set()
    while len(ids) < count:
        ids.add("".join(rng.choice(_CROCKFORD) for _ in range(26)))
    return sorted(ids)


def build_topology(data_centers: int, racks: int, nodes_per_rack: int) -> Topology:
    """Nodes 1..N labelled dc1..dcD and r1..rR, weight 1."""
    nodes: list[NodeInfo] = []
    for d in range(1, data_centers + 1):
        for r in range(1, racks + 1):
            for _ in range(nodes_per_rack):
                nodes.append(NodeInfo(node_id=len(nodes) + 1, data_center=f"dc{d}", rack=f"r{r}"))
    return Topology.of(nodes)


def _moved(before: Mapping[str, Sequence[int]], after: Mapping[str, Sequence[int]]) -> int:
    return sum(len(set(after[g]) - set(before[g])) for g in before)


def _loads(placement: Mapping[str, Sequence[int]], topology: Topology) -> dict[int, int]:
    loads = dict.fromkeys(topology.node_ids, 0)
    for nodes in placement.values():
        for n in nodes:
            loads[n] += 1
    return loads


def _max_over_mean(placement: Mapping[str, Sequence[int]], topology: Topology) -> float:
    loads = _loads(placement, topology)
    mean = sum(loads.values()) / len(loads)
    return max(loads.values()) / mean if mean else 0.0


def _rule_violations(
    placement: Mapping[str, Sequence[int]], topology: Topology, rule: PlacementRule
) -> int:
    return sum(len(violations(nodes, topology, rule)) for nodes in placement.values())


def simulate(
    *,
    data_centers: int = 3,
    racks: int = 3,
    nodes_per_rack: int = 4,
    groups: int = 1000,
    rule: PlacementRule | None = None,
    load_factor: float | None = DEFAULT_LOAD_FACTOR,
    seed: int = 0,
    log: bool = False,
) -> dict[str, object]:
    """Run the simulation; returns the summary that `main` prints (with `ok`)."""
    rule = rule or PlacementRule()

    def say(line: str) -> None:
        if log:
            print(f"placementsim: {line}", file=sys.stderr, flush=True)

    topology = build_topology(data_centers, racks, nodes_per_rack)
    n = len(topology)
    ids = group_ids(groups, seed)
    rng = random.Random(f"placementsim-changes-{seed}")
    leaver = rng.choice(topology.node_ids)
    newcomer = NodeInfo(
        node_id=n + 1,
        data_center=f"dc{rng.randint(1, data_centers)}",
        rack=f"r{rng.randint(1, racks)}",
    )
    say(f"{n} nodes, {len(ids)} groups, {rule.replicas} replicas, load factor {load_factor}")

    before = place_groups(ids, topology, rule, load_factor=load_factor)
    plain = place_groups(ids, topology, rule, load_factor=None)
    say("placed every group")
    left_topology = topology.without(leaver)
    after_leave = place_groups(ids, left_topology, rule, load_factor=load_factor)
    plain_leave = place_groups(ids, left_topology, rule, load_factor=None)
    say(f"node {leaver} left")
    joined_topology = topology.with_nodes(newcomer)
    after_join = place_groups(ids, joined_topology, rule, load_factor=load_factor)
    plain_join = place_groups(ids, joined_topology, rule, load_factor=None)
    say(f"node {newcomer.node_id} joined {newcomer.data_center}/{newcomer.rack}")

    placed = len(ids) * rule.replicas
    collateral_leave = sum(
        1 for g in ids if leaver not in before[g] and set(after_leave[g]) != set(before[g])
    )
    collateral_join = sum(
        1
        for g in ids
        if newcomer.node_id not in after_join[g] and set(after_join[g]) != set(before[g])
    )
    rule_violations = (
        _rule_violations(before, topology, rule)
        + _rule_violations(after_leave, left_topology, rule)
        + _rule_violations(after_join, joined_topology, rule)
    )
    say("checked the rules")
    limit = 2 / n
    over_mean = round(_max_over_mean(before, topology), 4)
    moved_leave = round(_moved(before, after_leave) / placed, 4)
    moved_join = round(_moved(before, after_join) / placed, 4)
    summary: dict[str, object] = {
        "nodes": n,
        "groups": len(ids),
        "replicas": placed,
        "load_factor": load_factor,
        "max_node_over_mean": over_mean,
        "moved_on_leave_fraction": moved_leave,
        "moved_on_join_fraction": moved_join,
        "move_limit": round(limit, 4),
        "rule_violations": rule_violations,
        "collateral_groups_on_leave": collateral_leave,
        "collateral_groups_on_join": collateral_join,
        "plain_max_node_over_mean": round(_max_over_mean(plain, topology), 4),
        "plain_moved_on_leave_fraction": round(_moved(plain, plain_leave) / placed, 4),
        "plain_moved_on_join_fraction": round(_moved(plain, plain_join) / placed, 4),
        "seed": seed,
    }
    checks = {
        "max_node_over_mean": over_mean <= MAX_NODE_OVER_MEAN,
        "moved_on_leave_fraction": moved_leave <= limit,
        "moved_on_join_fraction": moved_join <= limit,
        "rule_violations": rule_violations == 0,
    }
    missed = [name for name, ok in checks.items() if not ok]
    summary["missed"] = missed
    summary["ok"] = not missed
    return summary


def _load_factor(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m copycat.testing.placementsim",
        description="Measure CopyCat placement on a simulated cluster; prints one JSON line.",
    )
    parser.add_argument("--data-centers", type=int, default=3)
    parser.add_argument("--racks", type=int, default=3, help="racks per data center")
    parser.add_argument("--nodes-per-rack", type=int, default=4)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--data-center-replicas", type=int, default=None)
    parser.add_argument(
        "--rack-spread", choices=[s.value for s in RackSpread], default=RackSpread.PREFERRED.value
    )
    parser.add_argument(
        "--load-factor",
        type=_load_factor,
        default=DEFAULT_LOAD_FACTOR,
        help=f"bounded-load factor, or 'none' for plain rendezvous (default {DEFAULT_LOAD_FACTOR})",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        rule = PlacementRule(
            replicas=args.replicas,
            data_center_replicas=args.data_center_replicas,
            rack_spread=RackSpread(args.rack_spread),
        )
    except ConfigError as e:
        parser.error(str(e))
    try:
        summary = simulate(
            data_centers=args.data_centers,
            racks=args.racks,
            nodes_per_rack=args.nodes_per_rack,
            groups=args.groups,
            rule=rule,
            load_factor=args.load_factor,
            seed=args.seed,
            log=True,
        )
    except NotEnoughNodesError as e:
        print(f"placementsim: the cluster cannot hold the rule: {e}", file=sys.stderr)
        return 2
    ok = bool(summary["ok"])
    if not ok:
        print(f"placementsim: missed {summary['missed']}", file=sys.stderr)
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

# Placement: which nodes hold the replicas of a group, and the rule checker.
#
# What lives here: `place` (one group, pure rendezvous), `place_groups` (many groups, with
# an optional load bound computed from the same view and the sorted group ids), and
# `violations` (an independent check of a replica set against a rule).
#
# What must not: I/O, clocks, randomness, Python's `hash()`, dependence on the order in
# which the caller lists nodes, group ids or exclusions, or imports from other CopyCat
# layers except `copycat.errors` (membership is adapted into a `Topology` by the host).
"""Deterministic, CRUSH-style replica placement (see docs/placement.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from copycat.errors import ConfigError, InternalError, NotEnoughNodesError
from copycat.placement._model import NodeInfo, PlacementRule, RackSpread, Topology
from copycat.placement._rendezvous import rank

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

DEFAULT_LOAD_FACTOR: Final = 1.15
"""`place_groups` caps each node at ceil(1.15 x its fair share) by default: at 1,000
groups x 3 replicas over 36 nodes, plain rendezvous leaves the busiest node around 1.2 to
1.3 times the mean (binomial spread); the bound keeps it at most 1.16 while moving only a
few replicas more than plain rendezvous when a node joins or leaves."""

_DEFAULT_RULE: Final = PlacementRule()


@dataclass(frozen=True, slots=True)
class _Eligible:
    """The nodes that may take replicas (in the view, not excluded, weight > 0) and the
    aggregates the rules need, per data center."""

    nodes: tuple[NodeInfo, ...]
    rack_sizes: Mapping[str, Mapping[str, int]]  # data center -> rack -> eligible nodes
    weights: Mapping[str, float]  # data center -> sum of eligible weights


def _eligible(topology: Topology, exclude: Collection[int]) -> _Eligible:
    gone = frozenset(exclude)
    nodes = tuple(n for n in topology.nodes if n.weight > 0 and n.node_id not in gone)
    sizes: dict[str, dict[str, int]] = {}
    weights: dict[str, float] = {}
    for n in nodes:
        racks = sizes.setdefault(n.data_center, {})
        racks[n.rack] = racks.get(n.rack, 0) + 1
        weights[n.data_center] = weights.get(n.data_center, 0.0) + n.weight
    return _Eligible(nodes, sizes, weights)


def water_level(capacities: Iterable[int], amount: int) -> int | None:
    """The smallest level `c >= 1` with `sum(min(c, cap) for cap in capacities) >=
    amount`: the most even spread of `amount` over bins of the given capacities. None
    when the capacities cannot hold `amount`."""
    caps = sorted(capacities)
    if sum(caps) < amount:
        return None
    level = 1
    while sum(min(level, c) for c in caps) < amount:
        level += 1
    return level


def _dc_capacity(view: _Eligible, dc: str, spread: RackSpread) -> int:
    racks = view.rack_sizes[dc]
    return len(racks) if spread is RackSpread.REQUIRED else sum(racks.values())


def _describe_dcs(view: _Eligible, spread: RackSpread) -> str:
    return ", ".join(
        f"{dc} can hold {_dc_capacity(view, dc, spread)}" for dc in sorted(view.rack_sizes)
    )


def _shares(dc_order: Sequence[str], view: _Eligible, rule: PlacementRule) -> list[tuple[str, int]]:
    """The data centers a group uses and how many replicas each holds. `dc_order` is the
    order in which each data center's best node ranks for the group (data centers that
    hold more current replicas first); earlier data centers take the larger shares."""
    total = rule.replicas
    spread = rule.rack_spread
    available = len(view.nodes)
    caps = {dc: _dc_capacity(view, dc, spread) for dc in dc_order}
    d = rule.data_center_replicas
    if d is None:
        # Spread over as many data centers as exist (up to `replicas`), as evenly as
        # their capacities allow; the best-ranked ones take the larger shares.
        if len(dc_order) >= total:
            return [(dc, 1) for dc in dc_order[:total]]
        level = water_level(caps.values(), total)
        if level is None:
            what = "racks" if spread is RackSpread.REQUIRED else "nodes"
            raise NotEnoughNodesError(
                total,
                available,
                f"the data centers can hold {sum(caps.values())} replicas in all "
                f"(one per eligible {what[:-1]}; {_describe_dcs(view, spread)})",
            )
        shares = {dc: min(level, caps[dc]) for dc in dc_order}
        surplus = sum(shares.values()) - total
        for dc in reversed(dc_order):  # the worst-ranked full ones give one back
            if surplus == 0:
                break
            if shares[dc] == level:
                shares[dc] -= 1
                surplus -= 1
        return [(dc, shares[dc]) for dc in dc_order if shares[dc] > 0]
    base, extra = divmod(total, d)
    big_left, small_left = extra, d - extra
    chosen: list[tuple[str, int]] = []
    for dc in dc_order:
        if big_left and caps[dc] >= base + 1:
            chosen.append((dc, base + 1))
            big_left -= 1
        elif small_left and caps[dc] >= base:
            chosen.append((dc, base))
            small_left -= 1
        if not big_left and not small_left:
            return chosen
    need = f"{d} data centers holding {base} replicas each" + (
        f" ({extra} of them {base + 1})" if extra else ""
    )
    raise NotEnoughNodesError(
        total,
        available,
        f"data_center_replicas={d} needs {need}; the view has: "
        f"{_describe_dcs(view, spread) or 'no eligible node'}",
    )


def _rack_cap(rack_sizes: Mapping[str, int], share: int, spread: RackSpread) -> int:
    if spread is RackSpread.REQUIRED:
        return 1
    level = water_level(rack_sizes.values(), share)
    if level is None:  # _shares only gives a data center what its nodes can hold
        raise InternalError(f"a share of {share} does not fit racks {dict(rack_sizes)}")
    return level


def _fill(
    candidates: Sequence[NodeInfo],
    share: int,
    rack_cap: int,
    current: frozenset[int],
    loads: Mapping[int, int] | None,
    capacity: Mapping[int, int] | None,
) -> list[NodeInfo] | None:
    picked: list[NodeInfo] = []
    per_rack: dict[str, int] = {}
    for n in candidates:
        if per_rack.get(n.rack, 0) >= rack_cap:
            continue
        if (
            capacity is not None
            and loads is not None
            and n.node_id not in current
            and loads.get(n.node_id, 0) >= capacity[n.node_id]
        ):
            continue
        picked.append(n)
        per_rack[n.rack] = per_rack.get(n.rack, 0) + 1
        if len(picked) == share:
            return picked
    return None


def _select(
    ranked: Sequence[NodeInfo],
    view: _Eligible,
    rule: PlacementRule,
    current: frozenset[int],
    loads: Mapping[int, int] | None = None,
    capacity: Mapping[int, int] | None = None,
) -> tuple[int, ...]:
    total = rule.replicas
    if len(view.nodes) < total:
        raise NotEnoughNodesError(
            total,
            len(view.nodes),
            "too few eligible nodes (in the view, not excluded, weight > 0)",
        )
    # Current replicas first (kept when the rules allow), then rendezvous order.
    order = sorted(ranked, key=lambda n: n.node_id not in current) if current else ranked
    position = {n.node_id: i for i, n in enumerate(order)}
    by_dc: dict[str, list[NodeInfo]] = {}
    for n in order:
        by_dc.setdefault(n.data_center, []).append(n)
    # Data centers in the order their best node ranks; with current replicas, those
    # holding more of them come first, so a data center keeps the share it holds.
    held = {dc: sum(1 for n in ns if n.node_id in current) for dc, ns in by_dc.items()}
    dc_order = sorted(by_dc, key=lambda dc: -held[dc]) if current else list(by_dc)
    picked: list[NodeInfo] = []
    for dc, share in _shares(dc_order, view, rule):
        cap = _rack_cap(view.rack_sizes[dc], share, rule.rack_spread)
        got = _fill(by_dc[dc], share, cap, current, loads, capacity)
        if got is None and capacity is not None:
            # The load bound cannot be met in this data center without breaking a rule:
            # the rules win; place it as plain rendezvous would.
            got = _fill(by_dc[dc], share, cap, current, None, None)
        if got is None:
            raise InternalError(f"data center {dc} cannot hold a share of {share}")
        picked.extend(got)
    picked.sort(key=lambda n: position[n.node_id])
    return tuple(n.node_id for n in picked)


def _check_group_id(group_id: object) -> str:
    if not isinstance(group_id, str):
        raise TypeError(f"group ids are str (the data structure id), not {type(group_id).__name__}")
    return group_id


def place(
    group_id: str,
    topology: Topology,
    rule: PlacementRule = _DEFAULT_RULE,
    *,
    exclude: Collection[int] = (),
    current: Collection[int] = (),
) -> tuple[int, ...]:
    """The nodes that should hold the replicas of `group_id`, best first.

    Pure and deterministic: it depends only on the arguments' values (not on the order of
    the topology's nodes, of `exclude` or of `current`), so every node computes the same
    answer from an equal view.

    1. Nodes in `exclude`, and nodes of weight 0, receive no replica.
    2. Nodes in `current` (the group's replicas today) are preferred over every other
       node and kept whenever the rule allows; ids not in the topology or excluded are
       ignored. Without `current`, placement is pure rendezvous.
    3. The result has exactly `rule.replicas` distinct node ids, spread as `rule` says,
       or `NotEnoughNodesError(asked, available, detail)` is raised, where `asked` is
       `rule.replicas`, `available` the number of eligible nodes, and `detail` names the
       rule that cannot be met. Fewer replicas are never placed silently.
    """
    gid = _check_group_id(group_id)
    view = _eligible(topology, exclude)
    ranked = [n for n, _, _ in rank(gid, view.nodes)]
    return _select(ranked, view, rule, frozenset(current))


def place_groups(
    group_ids: Iterable[str],
    topology: Topology,
    rule: PlacementRule = _DEFAULT_RULE,
    *,
    exclude: Collection[int] = (),
    current: Mapping[str, Collection[int]] | None = None,
    load_factor: float | None = DEFAULT_LOAD_FACTOR,
) -> dict[str, tuple[int, ...]]:
    """Placement of many groups at once, with an optional bound on each node's load.

    With `load_factor=None` this is `place` for each group. With a load factor (>= 1),
    groups are placed in sorted id order, and a node that already holds
    ceil(load_factor x fair share) replicas is passed over for the next node in
    rendezvous order that keeps the rules (bounded-load rendezvous). A node's fair share
    is its data center's replica total under plain rendezvous times the node's part of
    the data center's weight. The bound yields to the rules (a rack that must take a
    replica takes it) and to `current` (a current replica is never moved for load).

    Deterministic in the *set* of group ids and the view: every node that passes the
    same ids (in any order) and an equal topology gets the same result. Unlike `place`,
    one group's placement may depend on the other groups (rarely: only when a node is
    full), so callers that need agreement must use the same set of ids.
    Raises `NotEnoughNodesError` as `place` does.
    """
    ids = sorted({_check_group_id(g) for g in group_ids})
    if load_factor is not None and (not math.isfinite(load_factor) or load_factor < 1.0):
        raise ConfigError("load_factor", f"must be >= 1 or None, got {load_factor}")
    view = _eligible(topology, exclude)
    currents = {g: frozenset((current or {}).get(g, ())) for g in ids}
    ranked = {g: [n for n, _, _ in rank(g, view.nodes)] for g in ids}
    plain = {g: _select(ranked[g], view, rule, currents[g]) for g in ids}
    if load_factor is None or not ids:
        return plain
    node_dc = {n.node_id: n.data_center for n in view.nodes}
    dc_totals: dict[str, int] = {}
    for nodes in plain.values():
        for node_id in nodes:
            dc = node_dc[node_id]
            dc_totals[dc] = dc_totals.get(dc, 0) + 1
    capacity: dict[int, int] = {}
    for n in view.nodes:
        fair = dc_totals.get(n.data_center, 0) * n.weight / view.weights[n.data_center]
        # The 1e-9 keeps float noise from rounding an exact bound up by one.
        capacity[n.node_id] = max(1, math.ceil(load_factor * fair - 1e-9))
    loads: dict[int, int] = {}
    result: dict[str, tuple[int, ...]] = {}
    for g in ids:
        nodes = _select(ranked[g], view, rule, currents[g], loads, capacity)
        for node_id in nodes:
            loads[node_id] = loads.get(node_id, 0) + 1
        result[g] = nodes
    return result


def violations(
    replicas: Collection[int],
    topology: Topology,
    rule: PlacementRule = _DEFAULT_RULE,
    *,
    exclude: Collection[int] = (),
) -> list[str]:
    """Every way `replicas` breaks `rule` in this view, as sentences; empty when it keeps
    it. Checked independently of how `place` chooses, for tests, the simulator and the
    host (is this group placed well?):

    1. exactly `rule.replicas` distinct nodes, each in the view, not excluded, weight > 0;
    2. data centers: with `data_center_replicas=d`, exactly d data centers, each holding
       replicas // d or replicas // d + 1; with None, min(replicas, data centers with
       eligible nodes) data centers, no one holding more than the even level and none
       fewer than one below it unless it is full;
    3. racks, per data center holding k: `REQUIRED`, distinct racks; `PREFERRED`, no rack
       holding more than the even level of k over the data center's racks (1 when the
       data center has at least k racks with eligible nodes).
    """
    found: list[str] = []
    ids = list(replicas)
    total = rule.replicas
    if len(ids) != total:
        found.append(f"{len(ids)} replicas, the rule asks for {total}")
    if len(set(ids)) != len(ids):
        found.append(f"a node holds two replicas: {sorted(ids)}")
    view = _eligible(topology, exclude)
    eligible = {n.node_id: n for n in view.nodes}
    members = [eligible[i] for i in dict.fromkeys(ids) if i in eligible]
    found.extend(
        f"node {i} is not eligible (absent, excluded or weight 0)"
        for i in dict.fromkeys(ids)
        if i not in eligible
    )
    per_dc: dict[str, list[NodeInfo]] = {}
    for n in members:
        per_dc.setdefault(n.data_center, []).append(n)
    spread = rule.rack_spread
    d = rule.data_center_replicas
    if d is not None:
        base, extra = divmod(total, d)
        if len(per_dc) != d:
            found.append(f"{len(per_dc)} data centers, the rule asks for {d}")
        found.extend(
            f"data center {dc} holds {len(ns)}, the rule asks for {base} or {base + 1}"
            for dc, ns in sorted(per_dc.items())
            if len(ns) not in (base, base + (1 if extra else 0))
        )
    else:
        want = min(total, len(view.rack_sizes))
        if len(per_dc) != want:
            found.append(f"{len(per_dc)} data centers, {want} are available")
        caps = {dc: _dc_capacity(view, dc, spread) for dc in view.rack_sizes}
        level = water_level(caps.values(), total) if len(caps) < total else 1
        if level is not None:
            for dc, ns in sorted(per_dc.items()):
                if len(ns) > level:
                    found.append(f"data center {dc} holds {len(ns)}, more than the even {level}")
            for dc, cap in sorted(caps.items()):
                have = len(per_dc.get(dc, ()))
                if len(caps) < total and have < min(cap, level - 1):
                    found.append(f"data center {dc} holds {have}, fewer than the even {level - 1}")
    for dc, ns in sorted(per_dc.items()):
        racks: dict[str, int] = {}
        for n in ns:
            racks[n.rack] = racks.get(n.rack, 0) + 1
        worst = max(racks.values())
        if spread is RackSpread.REQUIRED:
            allowed = 1
        else:
            allowed = water_level(view.rack_sizes[dc].values(), len(ns)) or len(ns)
        if worst > allowed:
            found.append(
                f"data center {dc}: a rack holds {worst} of its {len(ns)} replicas, "
                f"the rack rule allows {allowed}"
            )
    return found

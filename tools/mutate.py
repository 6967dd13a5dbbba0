"""Named mutations: does the suite catch the bugs it claims to?

What it measures: for each named mutation (a deliberate bug, written as one exact text
replacement in one source file), whether the tests named beside it fail. A mutation
the tests miss is a "survivor": a claim the suite does not back. The list holds the
bugs the project has actually had or feared (issues 10 and 12); add one whenever a
review finds a bug no test caught.

How to run (not part of CI; a few minutes):
    .venv/bin/python tools/mutate.py            # every mutation
    .venv/bin/python tools/mutate.py NAME ...   # only these
    .venv/bin/python tools/mutate.py --list
    .venv/bin/python tools/mutate.py --sim-seeds 500 NAME ...
        # the first whole-cluster simulator seed that catches each (see
        # tests/sim/test_sim_catches_bugs.py, which records them)

Each mutation runs in a scratch copy of the tree (src, tests, pyproject.toml), with that
copy's src first on PYTHONPATH (node processes the tests start inherit it), so the
working tree is never touched. Its last line is one JSON object: mutations, killed,
survived (names), kill_rate.

A small script of our own rather than mutmut or cosmic-ray: those generate thousands of
operator flips that mostly test nothing we claim, while each line here is a bug with a
name, a reason and the tests that must catch it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600


SIM_SEEDS = "tests/sim/test_sim_catches_bugs.py::test_the_recorded_seeds_pass_on_the_real_code"
"""The simulator's recorded seeds: on a mutated tree, one of them must catch the bug
(`--sim-seeds` finds the first seed that does)."""


@dataclass(frozen=True)
class Mutation:
    name: str
    why: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "lmdb_no_fsync",
        "a durable store commits without fsync",
        "src/copycat/storage/_lmdb.py",
        "                sync=durable,",
        "                sync=False,",
        ("tests/storage/test_durability.py",),
    ),
    Mutation(
        "host_sends_before_write",
        "the real Host sends every message (votes, acks) before its write",
        "src/copycat/host/_host.py",
        "            if rd.send_before_persist and rd.messages:",
        "            if rd.messages:",
        ("tests/host/test_persist_before_send.py",),
    ),
    Mutation(
        "lone_leader_early_send",
        "a lone leader tells learners of entries not on its disk (issue 10, bug 4)",
        "src/copycat/raft/_rawnode.py",
        "            and (commit_on_disk or r.bugs.early_send_lone_leader),",
        "            and True,",
        ("tests/raft/test_ready_flags.py",),
    ),
    Mutation(
        "lease_from_ack_arrival",
        "a LEASE_BASED leader measures its lease from the acknowledgement's arrival, not "
        "from the send (issue 15)",
        "src/copycat/raft/_raft.py",
        "            pr.lease_tick = max(pr.lease_tick, sent)",
        "            pr.lease_tick = self.ticks",
        ("tests/raft/paper/test_lease_read.py",),
    ),
    Mutation(
        "lease_during_transfer",
        "a leader handing over leadership still answers lease reads (issue 15)",
        "src/copycat/raft/_raft.py",
        "        if self.lead_transferee != NONE or self.timeout_now_sent:",
        "        if False:",
        ("tests/raft/paper/test_lease_read.py",),
    ),
    Mutation(
        "lease_promise_forgotten",
        "a follower forgets the lease it granted on restart or on a stale higher term (issue 15)",
        "src/copycat/raft/_raft.py",
        "                        self.config.read_only == ReadOnlyOption.LEASE_BASED\n"
        "                        and self.lease_elapsed < election_ticks",
        "                        False\n                        and self.lease_elapsed < election_ticks",
        ("tests/raft/paper/test_lease_read.py",),
    ),
    Mutation(
        "dialer_ignores_cluster_name",
        "the dialer accepts a handshake reply from another cluster",
        "src/copycat/transport/_endpoint.py",
        "        elif cluster != ep.config.cluster_name:\n"
        '            problem = ("cluster_name", f"peer is in cluster {cluster[:128]!r}")',
        "        elif False:\n"
        '            problem = ("cluster_name", f"peer is in cluster {cluster[:128]!r}")',
        ("tests/transport/test_dialer_handshake.py",),
    ),
    Mutation(
        "hostile_log_unlimited",
        "every refusal of hostile input is logged (no rate limit)",
        "src/copycat/transport/_endpoint.py",
        "        if last is not None and now - last < self._interval:",
        "        if False:",
        ("tests/transport/test_hostile_log.py",),
    ),
    Mutation(
        "dialer_cert_none",
        "the dialer does not verify the server's certificate",
        "src/copycat/transport/_endpoint.py",
        "    client.verify_mode = ssl.CERT_REQUIRED",
        "    client.verify_mode = ssl.CERT_NONE",
        ("tests/transport/test_dialer_tls.py",),
    ),
    Mutation(
        "feed_keeps_buffer_on_snapshot",
        "entries buffered before a snapshot overtook the feed are delivered after it",
        "src/copycat/host/_host.py",
        # Since the feed drains its buffer before it looks for an overtaking snapshot,
        # dropping the `_buffer.clear()` there changes nothing: the bug is brought back
        # as a feed that starts over from the snapshot first, buffer kept.
        "            if self._buffer:\n                yield self._buffer.popleft()",
        "            if self._group.restored_at > self.position:\n"
        "                self._start_from_snapshot()\n"
        "                continue\n"
        "            if self._buffer:\n                yield self._buffer.popleft()",
        ("tests/host/test_snapshot_overtakes_feed.py",),
    ),
    Mutation(
        "snapshot_position_after_await",
        "an awaiting provider's snapshot claims what was consumed meanwhile (bug 5)",
        "src/copycat/host/_host.py",
        "        self._host.take_snapshot(self._group, position, table, bytes(user))",
        "        self._host.take_snapshot(self._group, self.position, self.table.encode(), bytes(user))",
        ("tests/host/test_snapshot_consistency.py",),
    ),
    Mutation(
        "offer_compacts_past_feed",
        "an offered snapshot compacts the log under a slow subscriber (bug 6)",
        "src/copycat/host/_host.py",
        "            compact_to = min(compact_to, feed.position)",
        "            compact_to = compact_to",
        ("tests/host/test_snapshot_consistency.py",),
    ),
    Mutation(
        "session_limits_from_node",
        "members deduplicate with their own limits, not the group's (bug 7c)",
        "src/copycat/host/_host.py",
        "            ttl_entries=(rule and rule.session_ttl_entries) or host.config.session_ttl_entries,",
        "            ttl_entries=host.config.session_ttl_entries,",
        ("tests/host/test_group_rule.py",),
    ),
    Mutation(
        "repair_removes_first",
        "repair removes a failed voter before its replacement is caught up",
        "src/copycat/host/_repair.py",
        "        if newcomers:\n            log.info(",
        "        if newcomers:\n            await self.host.remove_member(gid, victim)\n            log.info(",
        ("tests/host/test_repair_rules.py",),
    ),
    Mutation(
        "repair_shrinks_without_replacement",
        "a failure alone shrinks a group below its rule",
        "src/copycat/host/_repair.py",
        "        elif not shrink:\n",
        "        elif False:\n",
        ("tests/host/test_repair_rules.py",),
    ),
    Mutation(
        "repair_on_gossip_alone",
        "gossip alone (no raft silence) replaces a voter (bug 7b)",
        "src/copycat/host/_repair.py",
        "if now - self._missing_since[v] >= grace and host.unheard_for(gid, v) >= grace",
        "if now - self._missing_since[v] >= grace",
        ("tests/host/test_repair_rules.py",),
    ),
    Mutation(
        "own_removal_without_proof",
        "a member deletes itself on applying its own removal, its return still on the way",
        "src/copycat/host/_repair.py",
        "        if gid in self._confirming:\n            return\n",
        "        if True:\n            self._on_removed(gid, 'it applied its own removal')\n            return\n",
        ("tests/host/test_repair_rules.py",),
    ),
    Mutation(
        "proof_from_older_term",
        "a member drops its copy on the word of a leader of an older term (bug 3)",
        "src/copycat/host/_repair.py",
        "            if proof is None or proof.term < my_term:",
        "            if proof is None:",
        ("tests/host/test_repair_rules.py",),
    ),
    Mutation(
        "create_without_cluster",
        "a node that reached nobody creates groups (bug 2)",
        "src/copycat/host/_creation.py",
        "        self.cluster_seen = not config.peers_to_contact",
        "        self.cluster_seen = True",
        ("tests/integration/test_one_group_per_id.py",),
    ),
    Mutation(
        "split_younger_keeps_writing",
        "the younger of two groups under one id keeps taking writes",
        "src/copycat/_node.py",
        "            host.refuse_proposals(gid, error)",
        "            pass",
        ("tests/integration/test_one_group_per_id.py",),
    ),
    Mutation(
        "feed_position_off_by_one",
        "the feed restarts one entry early after LOAD_SNAPSHOT (a re-delivery or a hang)",
        "src/copycat/host/_host.py",
        "        self.position = meta.index\n        self._pending_load = user",
        "        self.position = meta.index - 1\n        self._pending_load = user",
        ("tests/host", "tests/sync"),
    ),
    Mutation(
        "feed_waits_with_items_buffered",
        "what an awaiting provider let the cycle offer stays buffered until the next write",
        "src/copycat/host/_host.py",
        "            if self._buffer or self._fill():",
        "            if self._fill():",
        ("tests/host/test_snapshot_consistency.py", SIM_SEEDS),
    ),
    Mutation(
        "create_past_missing_directories",
        "a subscriber's node creates an id's group without the directory of every live node",
        "src/copycat/host/_creation.py",
        "        if behind:\n            # A live member whose directory is missing",
        "        if self._majority(complete):\n            return\n"
        "        if behind:\n            # A live member whose directory is missing",
        ("tests/host/test_creation_rules.py", SIM_SEEDS),
    ),
    Mutation(
        "create_an_id_seen_hosted",
        "an id a directory listed is created again when its hosts are out of sight",
        "src/copycat/host/_creation.py",
        "        if need_quorum and not hosts and gid not in self.host.groups and listed:",
        "        if False:",
        ("tests/host/test_creation_rules.py", SIM_SEEDS),
    ),
    Mutation(
        "member_forgets_deleted_self",
        "a member opened again under a deleted member's node id forgets its term, vote and log",
        "src/copycat/host/_host.py",
        "        retired = self._recall(gid) if self._recall is not None else None",
        "        retired = None",
        (SIM_SEEDS,),
    ),
    Mutation(
        "known_nodes_not_durable",
        "creation's quorum counts only the nodes seen since this run started",
        "src/copycat/_node.py",
        '            known=KnownNodes(cfg.node_id_file.parent / "known_nodes", self.node_id),',
        "            known=None,",
        (SIM_SEEDS,),
    ),
    Mutation(
        "lookup_ignores_known_nodes",
        "a lookup answer's known nodes are not added to the asker's quorum",
        "src/copycat/host/_creation.py",
        "            for other in known:\n                self.known.add(other)",
        "            for other in ():\n                self.known.add(other)",
        (SIM_SEEDS,),
    ),
    Mutation(
        "gossip_never_reconnects",
        "halves of a cluster that started apart never join each other",
        "src/copycat/membership/_membership.py",
        '            self._spawn(self._reconnect_loop(peers), "membership-reconnect")',
        "            pass",
        ("tests/membership/test_mismatch_logs.py", SIM_SEEDS),
    ),
)


def run(mutation: Mutation, scratch: Path) -> tuple[bool, float, str]:
    """Apply `mutation` in `scratch`, run its tests, restore; (killed, seconds, tail)."""
    target = scratch / mutation.path
    original = target.read_text()
    target.write_text(apply(mutation, original))
    env = {**os.environ, "PYTHONPATH": str(scratch / "src")}
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                "-n",
                "2",
                *mutation.tests,
            ],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        tail = (proc.stdout.strip().splitlines() or [""])[-1]
        # Only failing tests kill: exit 2 is also a collection error (or `-x` stopping
        # after a failure), 3 to 5 internal and usage errors and no tests.
        killed = proc.returncode == 1 or (proc.returncode == 2 and " failed" in tail)
        if proc.returncode not in (0, 1) and not killed:
            tail = f"pytest exit {proc.returncode}, the tests did not run: {tail}"
    except subprocess.TimeoutExpired:
        killed, tail = True, f"timed out after {TIMEOUT_S} s"
    finally:
        target.write_text(original)
    return killed, time.monotonic() - start, tail


def first_catching_seed(scratch: Path, seeds: int, *, first: int = 1) -> tuple[int | None, str]:
    """Run the simulator from `scratch`'s src on seeds `first`.. (`seeds` of them),
    stopping at the first with a violation: (that seed or None, its first violation)."""
    env = {**os.environ, "PYTHONPATH": str(scratch / "src")}
    command = [sys.executable, "-m", "copycat.testing.sim", "--first", str(first)]
    command += ["--seeds", str(seeds), "--stop"]
    proc = subprocess.run(
        command,
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=180 + seeds * 60,  # a spinning seed runs its 2,000,000 callbacks first
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return None, proc.stderr.strip()[-300:]
    failing = json.loads(lines[-1])["failing_seeds"]
    said = next((line.strip() for line in lines if line.startswith("  ")), "")
    return (failing[0] if failing else None), said


def run_sim(mutation: Mutation, scratch: Path, seeds: int) -> tuple[bool, float, str]:
    """Apply `mutation` in `scratch`, run the simulator until a seed catches it, restore;
    (caught, seconds, "seed K: first violation")."""
    target = scratch / mutation.path
    original = target.read_text()
    target.write_text(apply(mutation, original))
    start = time.monotonic()
    try:
        seed, said = first_catching_seed(scratch, seeds)
    finally:
        target.write_text(original)
    tail = f"seed {seed}: {said[:160]}" if seed is not None else f"not in {seeds} seeds"
    return seed is not None, time.monotonic() - start, tail


def apply(mutation: Mutation, text: str) -> str:
    """`text` with `mutation` applied; exits when its text does not occur exactly once."""
    if text.count(mutation.old) != 1:
        raise SystemExit(
            f"{mutation.name}: the text to mutate occurs {text.count(mutation.old)} "
            f"times in {mutation.path}, not once: update the mutation"
        )
    return text.replace(mutation.old, mutation.new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument(
        "--sim-seeds",
        type=int,
        metavar="N",
        help="instead of the tests, run the whole-cluster simulator on up to N seeds and "
        "print the first that catches each mutation (for tests/sim/test_sim_catches_bugs.py)",
    )
    args = parser.parse_args()
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:36} {m.why}  [{' '.join(m.tests)}]")
        return 0
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        raise SystemExit(f"unknown mutations: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="copycat-mutate-") as tmp:
        scratch = Path(tmp)
        for part in ("src", "tests", "tools"):
            shutil.copytree(
                ROOT / part, scratch / part, ignore=shutil.ignore_patterns("__pycache__")
            )
        shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
        survived = []
        for m in chosen:
            if args.sim_seeds:
                killed, seconds, tail = run_sim(m, scratch, args.sim_seeds)
            else:
                killed, seconds, tail = run(m, scratch)
            print(
                f"{'killed  ' if killed else 'SURVIVED'} {m.name:36} {seconds:6.1f} s  {tail}",
                flush=True,
            )
            if not killed:
                survived.append(m.name)
    killed_count = len(chosen) - len(survived)
    print(
        json.dumps(
            {
                "mutations": len(chosen),
                "killed": killed_count,
                "survived": survived,
                "kill_rate": round(killed_count / len(chosen), 3) if chosen else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

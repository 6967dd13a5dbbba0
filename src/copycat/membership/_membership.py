# `Membership`: one node's view of the cluster and of the directory, kept up to date.
#
# What lives here: the policy. The member table built from gossip events; this node's
# directory log and metadata; the pull of peers' directory deltas (request/response over
# gossip direct messages, chunked, retried with timeouts); anti-entropy; lookups; views;
# event subscriptions; counters; the warnings that tell a peer of another cluster or with
# other gossip keys from a dead one, on the joining and on the receiving side.
#
# What must not: kinship imports (they live in `_gossip.py`), blocking calls, or unbounded
# structures. Remote input is refused, counted and logged here, never raised to the host.
"""`Membership`: start a gossip node, publish this node's directory, look up the others'."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
from typing import TYPE_CHECKING, Final, Self, final

from copycat.errors import ClosedError, ProtocolError
from copycat.membership._config import MAX_USER_MESSAGE_BYTES, MembershipConfig, gossip_name
from copycat.membership._directory import (
    Change,
    Delta,
    DirectoryEntry,
    DirectoryLog,
    DirectoryMismatchError,
    EntryKey,
    PeerDirectory,
    Role,
    Snapshot,
)
from copycat.membership._gossip import (
    Gossip,
    GossipEvent,
    GossipEventKind,
    GossipMember,
    GossipState,
    KinshipGossip,
    PeerGoneError,
    Reachability,
)
from copycat.membership._meta import NodeMeta, decode_meta
from copycat.membership._view import (
    DirectoryChanged,
    EventsLost,
    MemberFailed,
    MemberInfo,
    MemberJoined,
    MemberLeft,
    MemberRecovered,
    MembershipCounters,
    MembershipEvent,
    MemberState,
    MemberSuspect,
    MemberUpdated,
    Replica,
    View,
)
from copycat.membership._wire import (
    ChunkKind,
    SyncChunk,
    SyncRequest,
    decode,
    encode_chunks,
    encode_request,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
    from types import TracebackType

log = logging.getLogger("copycat.membership")

_LOG_INTERVAL_S: Final = 10.0
_MAX_SYNC_ROUNDS: Final = 8

DRIFT_CHECK_ENTRIES: Final = 20_000
"""About how many directory entries an anti-entropy round re-hashes from scratch, on
average, to check that no digest drifted from its entries (see `_anti_entropy_round`)."""
"""Pulls in a row for one peer before the sync task yields to anti-entropy."""
_CLOSE_WAIT_S: Final = 5.0
_MAX_MISSING: Final = 4096
"""Most chunk indexes one retry asks for; the rest are asked for by the next retry."""
_RESPONSE_CACHE_BYTES: Final = 16 << 20
"""Bytes of recent responses kept to resend lost chunks without rebuilding them."""
_RESPONSE_CACHE_ENTRIES: Final = 256
_REJOIN_INITIAL_S: Final = 0.5
_REJOIN_MAX_S: Final = 30.0
_PROBE_TIMEOUT_S: Final = 1.0
"""How long the probe of a peer that did not answer a join waits for a connection."""
_MAX_PROBED_PEERS: Final = 16
"""Peers to contact probed (and named in the log) after a failed join; the rest are not."""
_MISMATCH_LOG_INTERVAL_S: Final = 60.0
"""Least time between two warnings about one unanswered peer, or about refused packets."""


class _Counts:
    __slots__ = (
        "anti_entropy_repairs",
        "anti_entropy_runs",
        "deltas_applied",
        "digest_mismatches",
        "full_syncs",
        "internal_errors",
        "members_ignored",
        "messages_refused",
        "meta_updates",
        "name_conflicts",
        "requests_dropped",
        "requests_served",
        "stale_chunks",
        "sync_bytes_received",
        "sync_bytes_sent",
        "sync_failures",
        "sync_requests_sent",
        "sync_retries",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    anti_entropy_repairs: int
    anti_entropy_runs: int
    deltas_applied: int
    digest_mismatches: int
    full_syncs: int
    internal_errors: int
    members_ignored: int
    messages_refused: int
    meta_updates: int
    name_conflicts: int
    requests_dropped: int
    requests_served: int
    stale_chunks: int
    sync_bytes_received: int
    sync_bytes_sent: int
    sync_failures: int
    sync_requests_sent: int
    sync_retries: int


class _Peer:
    """One run of a live peer and this node's copy of its directory."""

    __slots__ = ("address", "directory", "epoch", "meta", "name", "state", "sync_again", "syncing")

    def __init__(self, member: GossipMember, meta: NodeMeta, state: MemberState) -> None:
        self.name = member.name
        self.epoch = member.epoch
        self.address = member.address
        self.meta = meta
        self.state = state
        self.directory: PeerDirectory | None = None
        self.syncing = False
        self.sync_again = False

    @property
    def node_id(self) -> int:
        return self.meta.node_id

    def info(self) -> MemberInfo:
        return MemberInfo(
            node_id=self.meta.node_id,
            transport_address=self.meta.transport_address,
            data_center=self.meta.data_center,
            rack=self.meta.rack,
            state=self.state,
            epoch=self.epoch,
            gossip_address=self.address,
            directory_version=self.meta.directory_version,
            name=self.meta.display_name,
        )

    def wants_sync(self) -> bool:
        """Whether this node's copy is behind what the peer advertises, or diverged."""
        d = self.directory
        if d is None or d.needs_full:
            return True
        advertised = self.meta.directory_version
        if d.version < advertised:
            return True
        return d.version == advertised and d.digest != self.meta.directory_digest


class _Pending:
    """A pull request waiting for its response chunks."""

    __slots__ = ("chunks", "entries", "epoch", "failed", "header", "name", "progress")

    def __init__(self, name: str, epoch: int) -> None:
        self.name = name
        self.epoch = epoch
        self.chunks: dict[int, SyncChunk] = {}
        self.header: tuple[ChunkKind, int, int, int, int] | None = None
        self.entries = 0
        self.failed = False
        self.progress = asyncio.Event()

    @property
    def complete(self) -> bool:
        return self.header is not None and len(self.chunks) == self.header[4]

    def missing(self) -> tuple[int, ...]:
        """Chunk indexes still to come (empty when none arrived yet: ask for all)."""
        if self.header is None:
            return ()
        return tuple(i for i in range(self.header[4]) if i not in self.chunks)[:_MAX_MISSING]

    def reset(self, header: tuple[ChunkKind, int, int, int, int]) -> None:
        """A new response under the same id (the peer no longer held the old one)."""
        self.chunks.clear()
        self.entries = 0
        self.header = header


@final
class MembershipEvents:
    """One subscription to membership events, as an async iterator (`Membership.events()`).

    It buffers up to `event_buffer` events; when the subscriber falls behind, the oldest
    are dropped and the next read is `EventsLost(count)`. It ends when the membership
    closes or `close()` is called."""

    __slots__ = ("_buffer", "_capacity", "_closed", "_lost", "_owner", "_wake")

    def __init__(self, owner: Membership, capacity: int) -> None:
        self._owner = owner
        self._capacity = capacity
        self._buffer: collections.deque[MembershipEvent] = collections.deque()
        self._lost = 0
        self._closed = False
        self._wake = asyncio.Event()

    def _push(self, event: MembershipEvent) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self._lost += 1
        self._buffer.append(event)
        self._wake.set()

    def close(self) -> None:
        """Ends this subscription; reads after the buffered events stop."""
        self._closed = True
        self._owner._unsubscribe(self)
        self._wake.set()

    def __aiter__(self) -> MembershipEvents:
        return self

    async def __anext__(self) -> MembershipEvent:
        while True:
            if self._lost:
                lost, self._lost = self._lost, 0
                return EventsLost(count=lost)
            if self._buffer:
                return self._buffer.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()


@final
class Membership:
    """One node's membership in the cluster and its copy of the cluster directory.

    Start and stop it with `async with Membership(config) as m:` (or `await start()` and
    `await close()`). The host's contract:

    1. Call `publish()` whenever a replica starts, stops or changes role on this node. It
       is synchronous and cheap; the change reaches other nodes by metadata gossip and a
       delta pull.
    2. Read `view()`, `locate()`, `address_of()` at any time; they never wait and never
       change what they returned earlier.
    3. Read `events()` promptly, or expect `EventsLost` and re-read `view()`.
    4. To rotate the gossip key, run `install_key`, then `use_key`, then `remove_key` on
       every node, each step finished everywhere before the next.
    """

    def __init__(
        self,
        config: MembershipConfig,
        *,
        gossip_factory: Callable[[MembershipConfig, Mapping[str, str]], Gossip] | None = None,
        seed: bytes | None = None,
    ) -> None:
        """`gossip_factory` builds the gossip layer from the config and the initial node
        metadata; None (the default) runs kinship. Tests pass an in-memory one. `seed` seeds the
        layer's own choices (request ids, jitter); None: from the OS."""
        self._config = config
        self._log = DirectoryLog(config.max_history_changes)
        factory = KinshipGossip if gossip_factory is None else gossip_factory
        self._gossip: Gossip = factory(config, self._own_meta().encode())
        self._epoch = 0
        self._gossip_address = ""
        self._started = False
        self._closed = False
        self._peers: dict[int, _Peer] = {}
        self._seen: set[str] = set()
        """Every data structure id a directory listed since start, hosts gone or not."""
        self._by_name: dict[str, _Peer] = {}
        self._index: dict[str, dict[tuple[int, int, int], Role]] = {}
        self._pending: dict[int, _Pending] = {}
        self._subscribers: set[MembershipEvents] = set()
        self._generation = 0
        self._drift_check_in = 0
        """Anti-entropy rounds until the next drift check (0: the next round)."""
        self._view: View | None = None
        self._counts = _Counts()
        self._rng = random.Random(os.urandom(16) if seed is None else seed)
        self._next_request = self._rng.getrandbits(62)
        self._serving = 0
        self._responses: collections.OrderedDict[tuple[str, int, int], list[bytes]] = (
            collections.OrderedDict()
        )
        self._responses_bytes = 0
        self._sync_slots = asyncio.Semaphore(config.max_concurrent_syncs)
        self._meta_dirty = asyncio.Event()
        self._published_meta: dict[str, str] = self._own_meta().encode()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ignored: set[tuple[str, int]] = set()
        self._last_log: dict[tuple[str, str], float] = {}
        # Per refused-packet counter: its value when last reported (or at start), and when.
        self._refused_seen: dict[str, tuple[int, float]] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Self:
        """Binds the gossip endpoint and joins `peers_to_contact` (when none answers, the
        node runs alone and keeps retrying in the background)."""
        if self._started:
            raise RuntimeError("membership already started")
        self._started = True
        await self._gossip.start()
        local = self._gossip.local()
        self._epoch = local.epoch
        self._gossip_address = local.address
        stream = self._gossip.events()  # subscribe before joining: nothing is missed
        now = asyncio.get_running_loop().time()
        self._refused_seen = {name: (n, now) for name, n in self._refused_counts().items()}
        peers = list(self._config.peers_to_contact)
        if peers and not await self._gossip.join(peers):
            log.warning(
                "no peer to contact answered; running alone in cluster %r and retrying",
                self._config.cluster_name,
            )
            self._spawn(self._rejoin_loop(peers), "membership-rejoin")
        if peers:
            self._spawn(self._reconnect_loop(peers), "membership-reconnect")
        for member in self._gossip.members():
            if member.name != local.name:
                self._on_member(GossipEventKind.JOINED, member)
        self._spawn(self._pump(stream), "membership-events")
        self._spawn(self._meta_loop(), "membership-meta")
        self._spawn(self._anti_entropy_loop(), "membership-anti-entropy")
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, *, leave: bool = True) -> None:
        """Stops background work, leaves the cluster (unless `leave` is False, which peers
        see as a crash) and closes the gossip endpoint. Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT_S)
        for subscriber in list(self._subscribers):
            subscriber.close()
        if self._started:
            try:
                if leave:
                    await self._gossip.leave(self._config.leave_timeout_s)
            finally:
                await self._gossip.close()

    # -- this node --------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        return self._config.node_id

    @property
    def epoch(self) -> int:
        """This run's epoch (0 before `start()`)."""
        return self._epoch

    @property
    def gossip_address(self) -> str:
        """The gossip address this node is reachable at (the OS-picked port included)."""
        return self._gossip_address

    @property
    def directory_version(self) -> int:
        return self._log.version

    def directory(self) -> tuple[DirectoryEntry, ...]:
        """This node's own directory entries."""
        return tuple(
            DirectoryEntry(data_structure_id=ds, group_id=g, replica_id=r, role=role)
            for (ds, g, r), role in self._log.entries().items()
        )

    def publish(
        self,
        *,
        upsert: Iterable[DirectoryEntry] = (),
        remove: Iterable[DirectoryEntry | EntryKey] = (),
    ) -> int:
        """Records replicas this node starts hosting or whose role changed (`upsert`), and
        replicas it stopped hosting (`remove`), as one new directory version; returns the
        version. Upserts apply before removals. Raises ValueError on a malformed key, with
        nothing changed. Other nodes learn of it within a few gossip rounds."""
        self._check_open()
        changes: list[Change] = [(entry.key, entry.role) for entry in upsert]
        for item in remove:
            key = item.key if isinstance(item, DirectoryEntry) else item
            changes.append((key, None))
        before = {key: self._log.entries().get(key) for key, _ in changes}
        count = self._log.apply(changes)
        if count:
            node = self.node_id
            for key, old in before.items():
                new = self._log.entries().get(key)
                if new != old:
                    self._index_change(node, key, new)
            self._meta_dirty.set()
            self._emit(
                DirectoryChanged(node_id=node, version=self._log.version, changes=count, full=False)
            )
        return self._log.version

    # -- lookups ----------------------------------------------------------------------

    def view(self) -> View:
        """The live members now, this node included, as an immutable snapshot."""
        view = self._view
        if view is None or view.generation != self._generation:
            members = [self._local_info(), *(p.info() for p in self._peers.values())]
            members.sort(key=lambda m: m.node_id)
            view = View(
                local_node_id=self.node_id, generation=self._generation, members=tuple(members)
            )
            self._view = view
        return view

    def address_of(self, node_id: int) -> str | None:
        """The CopyCat transport address of live node `node_id`, or None."""
        if node_id == self.node_id:
            return self._config.transport_address
        peer = self._peers.get(node_id)
        return None if peer is None else peer.meta.transport_address

    def locate(self, data_structure_id: str) -> tuple[Replica, ...]:
        """The replicas of a data structure on live nodes (this one included) that this node
        knows of, sorted by node id; empty when none is known."""
        placed = self._index.get(data_structure_id)
        if not placed:
            return ()
        return tuple(
            Replica(node_id=node, group_id=group, replica_id=replica, role=role)
            for (node, group, replica), role in sorted(placed.items())
        )

    def ever_listed(self, data_structure_id: str) -> bool:
        """Whether any directory, this node's or a peer's, listed a replica of the data
        structure since this node started, even if its hosts are gone since: then it
        exists, out of sight maybe, and must not be created again."""
        return data_structure_id in self._seen

    def group_of(self, data_structure_id: str) -> int | None:
        """The raft group of a data structure (the one most of its known replicas name),
        or None when no live node hosts it."""
        placed = self._index.get(data_structure_id)
        if not placed:
            return None
        votes = collections.Counter(group for (_, group, _) in placed)
        return min(votes, key=lambda g: (-votes[g], g))

    def peer_directory_version(self, node_id: int) -> tuple[int, int] | None:
        """(held, advertised) directory versions of live peer `node_id`, or None."""
        peer = self._peers.get(node_id)
        if peer is None:
            return None
        held = -1 if peer.directory is None else peer.directory.version
        return held, peer.meta.directory_version

    def events(self) -> MembershipEvents:
        """A new subscription to membership and directory events, starting now."""
        self._check_open()
        subscriber = MembershipEvents(self, self._config.event_buffer)
        self._subscribers.add(subscriber)
        return subscriber

    def counters(self) -> MembershipCounters:
        """Gossip counters (from kinship) and directory sync counters, since start."""
        c = self._counts
        stats = self._gossip.stats() if self._started and not self._closed else None
        return MembershipCounters(
            decrypt_failures=0 if stats is None else stats.decrypt_failures,
            decode_errors=0 if stats is None else stats.decode_errors,
            replays_dropped=0 if stats is None else stats.replays_dropped,
            deltas_applied=c.deltas_applied,
            full_syncs=c.full_syncs,
            sync_requests_sent=c.sync_requests_sent,
            sync_retries=c.sync_retries,
            sync_failures=c.sync_failures,
            sync_bytes_sent=c.sync_bytes_sent,
            sync_bytes_received=c.sync_bytes_received,
            requests_served=c.requests_served,
            requests_dropped=c.requests_dropped,
            messages_refused=c.messages_refused,
            stale_chunks=c.stale_chunks,
            digest_mismatches=c.digest_mismatches,
            anti_entropy_runs=c.anti_entropy_runs,
            anti_entropy_repairs=c.anti_entropy_repairs,
            members_ignored=c.members_ignored,
            internal_errors=c.internal_errors,
            name_conflicts=c.name_conflicts,
            meta_updates=c.meta_updates,
        )

    # -- keys -------------------------------------------------------------------------

    async def install_key(self, key: str | bytes) -> None:
        """Step 1 of a key rotation: this node can now decrypt with `key`."""
        self._check_open()
        await self._gossip.install_key(key)

    async def use_key(self, key: str | bytes) -> None:
        """Step 2: this node encrypts with the installed `key`."""
        self._check_open()
        await self._gossip.use_key(key)

    async def remove_key(self, key: str | bytes) -> None:
        """Step 3: this node forgets `key` (not the one in use, nor the last)."""
        self._check_open()
        await self._gossip.remove_key(key)

    def key_ids(self) -> list[str]:
        """Ids of the installed keys, the one in use first; safe to log."""
        return self._gossip.key_ids()

    # -- internals: helpers -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the membership is closed")

    def _own_meta(self) -> NodeMeta:
        return NodeMeta(
            node_id=self._config.node_id,
            transport_address=self._config.transport_address,
            data_center=self._config.data_center,
            rack=self._config.rack,
            directory_version=self._log.version,
            directory_digest=self._log.digest,
            name=self._config.node_name or "",
        )

    def _local_info(self) -> MemberInfo:
        return MemberInfo(
            node_id=self.node_id,
            transport_address=self._config.transport_address,
            data_center=self._config.data_center,
            rack=self._config.rack,
            state=MemberState.ALIVE,
            epoch=self._epoch,
            gossip_address=self._gossip_address,
            directory_version=self._log.version,
            name=self._config.node_name or self._config.transport_address,
        )

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self._closed:
            log.error("membership task %s failed", task.get_name(), exc_info=exc)

    def _log_limited(
        self,
        peer: str,
        reason: str,
        message: str,
        *args: object,
        interval_s: float = _LOG_INTERVAL_S,
    ) -> bool:
        """Logs at most once per peer and reason per `interval_s` (hostile input stays
        quiet); returns whether it logged."""
        now = asyncio.get_running_loop().time()
        key = (peer, reason)
        last = self._last_log.get(key)
        if last is not None and now - last < interval_s:
            return False
        if len(self._last_log) > 4096:
            self._last_log.clear()
        self._last_log[key] = now
        log.warning(message, *args)
        return True

    def _emit(self, event: MembershipEvent) -> None:
        for subscriber in self._subscribers:
            subscriber._push(event)

    def _unsubscribe(self, subscriber: MembershipEvents) -> None:
        self._subscribers.discard(subscriber)

    def _changed_membership(self) -> None:
        self._generation += 1

    def _index_change(self, node_id: int, key: EntryKey, role: Role | None) -> None:
        ds, group, replica = key
        slot = (node_id, group, replica)
        if role is None:
            placed = self._index.get(ds)
            if placed is not None:
                placed.pop(slot, None)
                if not placed:
                    del self._index[ds]
        else:
            self._index.setdefault(ds, {})[slot] = role
            self._seen.add(ds)

    # -- internals: gossip events -------------------------------------------------------

    async def _pump(self, stream: AsyncIterator[GossipEvent]) -> None:
        async for event in stream:
            try:
                self._dispatch(event)
            except Exception:  # a bug: keep serving the other events, loudly
                self._counts.internal_errors += 1
                log.exception("membership failed to handle %s; continuing", event.kind.value)

    def _dispatch(self, event: GossipEvent) -> None:
        if event.kind is GossipEventKind.MESSAGE and event.member is not None:
            self._on_message(event.member, event.data)
        elif event.kind is GossipEventKind.LOST:
            log.warning("gossip events were lost (%d); resyncing members", event.count)
            self._reconcile()
        elif event.kind is GossipEventKind.CONFLICT and event.member is not None:
            self._counts.name_conflicts += 1
            self._log_limited(
                event.member.name,
                "conflict",
                "two nodes claim the gossip name %s; the newer one is ignored",
                event.member.name,
            )
        elif event.member is not None:
            self._on_member(event.kind, event.member)

    def _reconcile(self) -> None:
        """Brings the member table in line with the gossip layer's member list."""
        local = gossip_name(self.node_id)
        current = {m.name: m for m in self._gossip.members() if m.name != local}
        for peer in list(self._peers.values()):
            member = current.get(peer.name)
            if member is None or member.epoch != peer.epoch:
                tomb = self._gossip.member(peer.name)
                failed = tomb is not None and tomb.state is GossipState.DEAD
                self._remove_peer(peer, failed=failed)
        for member in current.values():
            self._on_member(GossipEventKind.UPDATED, member)

    def _on_member(self, kind: GossipEventKind, member: GossipMember) -> None:
        if kind in (GossipEventKind.DEAD, GossipEventKind.LEFT):
            gone = self._by_name.get(member.name)
            if gone is not None and gone.epoch <= member.epoch:
                self._remove_peer(gone, failed=kind is GossipEventKind.DEAD)
            return
        meta = decode_meta(member.meta)
        if meta is None or gossip_name(meta.node_id) != member.name or meta.node_id == self.node_id:
            if (member.name, member.epoch) not in self._ignored:
                if len(self._ignored) > 4096:
                    self._ignored.clear()
                self._ignored.add((member.name, member.epoch))
                self._counts.members_ignored += 1
                self._log_limited(
                    member.name,
                    "meta",
                    "member %s (epoch %d) has no valid CopyCat metadata; ignored",
                    member.name,
                    member.epoch,
                )
            stale = self._by_name.get(member.name)
            if stale is not None:
                self._remove_peer(stale, failed=False)
            return
        state = (
            MemberState.SUSPECT
            if kind is GossipEventKind.SUSPECT or member.state is GossipState.SUSPECT
            else MemberState.ALIVE
        )
        peer = self._peers.get(meta.node_id)
        if peer is not None and peer.epoch != member.epoch:
            if member.epoch < peer.epoch:
                return  # news about an older run
            self._remove_peer(peer, failed=False)
            peer = None
        if peer is None:
            peer = _Peer(member, meta, state)
            self._peers[meta.node_id] = peer
            self._by_name[peer.name] = peer
            self._changed_membership()
            self._emit(MemberJoined(member=peer.info()))
            self._schedule_sync(peer)
            return
        previous = peer.info()
        peer.meta = meta
        peer.address = member.address
        peer.state = state
        if kind is GossipEventKind.SUSPECT:
            self._changed_membership()
            self._emit(MemberSuspect(member=peer.info()))
        elif kind is GossipEventKind.RECOVERED:
            self._changed_membership()
            self._emit(MemberRecovered(member=peer.info()))
        else:
            current = peer.info()
            if (
                current.transport_address,
                current.data_center,
                current.rack,
                current.gossip_address,
                current.state,
            ) != (
                previous.transport_address,
                previous.data_center,
                previous.rack,
                previous.gossip_address,
                previous.state,
            ):
                self._changed_membership()
                self._emit(MemberUpdated(member=current, previous=previous))
            elif current.directory_version != previous.directory_version:
                self._changed_membership()
        if peer.wants_sync():
            self._schedule_sync(peer)

    def _remove_peer(self, peer: _Peer, *, failed: bool) -> None:
        if self._peers.get(peer.node_id) is not peer:
            return
        del self._peers[peer.node_id]
        if self._by_name.get(peer.name) is peer:
            del self._by_name[peer.name]
        if peer.directory is not None:
            for key, _ in peer.directory:
                self._index_change(peer.node_id, key, None)
        for pending in self._pending.values():
            if pending.name == peer.name and pending.epoch == peer.epoch:
                pending.failed = True
                pending.progress.set()
        self._changed_membership()
        info = peer.info()
        self._emit(MemberFailed(member=info) if failed else MemberLeft(member=info))

    # -- internals: metadata and anti-entropy ------------------------------------------

    async def _rejoin_loop(self, peers: list[str]) -> None:
        """Retries the join while this node is alone (no peer answered at start), saying
        why each peer did not answer before every retry (logged once per peer a minute)."""
        delay = _REJOIN_INITIAL_S
        while len(self._gossip.members()) <= 1:
            await self._explain_unanswered(peers)
            await asyncio.sleep(delay)
            if len(self._gossip.members()) > 1 or await self._gossip.join(peers):
                return
            delay = min(delay * 2, _REJOIN_MAX_S)

    async def _reconnect_loop(self, peers: list[str]) -> None:
        """Joins again, every `reconnect_interval_s`, the peers to contact that are not live
        members here. SWIM only probes the members it knows: nodes that came up on two
        sides of a partition (every node restarted during it) form two clusters that
        never meet once it heals, and their groups stay apart (sim seed 64). A join to a
        peer already in the cluster is one push-pull exchange."""
        while True:
            await asyncio.sleep(self._config.reconnect_interval_s)
            live = {
                m.address
                for m in self._gossip.members()
                if m.state in (GossipState.ALIVE, GossipState.SUSPECT)
            }
            missing = [peer for peer in peers if peer not in live]
            if missing and await self._gossip.join(missing):
                log.debug("joined again peers to contact not seen live: %s", ", ".join(missing))

    async def _explain_unanswered(self, peers: list[str]) -> None:
        """Warns, per peer to contact, why it did not answer: a node that refused or
        ignored us (another cluster name or other gossip keys), or no answer at all. kinship
        drops a mismatched join without a reply, so the peer's cluster name is never seen."""
        probed = peers[:_MAX_PROBED_PEERS]
        found = await asyncio.gather(
            *(self._gossip.reachability(peer, _PROBE_TIMEOUT_S) for peer in probed)
        )
        for peer, reach in zip(probed, found, strict=True):
            if reach is Reachability.LISTENING:
                self._log_limited(
                    peer,
                    "join",
                    "peer %s refused or ignored our join: its cluster name or gossip keys "
                    "most likely differ from ours (cluster %r, %s); compare cluster_name "
                    "and key_ids() on both nodes",
                    peer,
                    self._config.cluster_name,
                    self._keys_text(),
                    interval_s=_MISMATCH_LOG_INTERVAL_S,
                )
            elif reach is Reachability.SILENT:
                self._log_limited(
                    peer,
                    "join",
                    "no answer from peer %s (down or unreachable); cluster %r keeps retrying",
                    peer,
                    self._config.cluster_name,
                    interval_s=_MISMATCH_LOG_INTERVAL_S,
                )
            elif reach is Reachability.UNRESOLVED:
                self._log_limited(
                    peer,
                    "join",
                    "peer %s does not resolve to an address; cluster %r keeps retrying",
                    peer,
                    self._config.cluster_name,
                    interval_s=_MISMATCH_LOG_INTERVAL_S,
                )

    def _check_refused_packets(self) -> None:
        """Warns when the gossip layer refused packets since the last warning: a node of
        another cluster, or with other gossip keys, is sending to this one. kinship does not
        say who sent them, so the warning names the counter (once per counter a minute)."""
        now = asyncio.get_running_loop().time()
        for name, value in self._refused_counts().items():
            seen, since = self._refused_seen.get(name, (0, now))
            if value <= seen:
                continue
            if name == "decrypt_failures":
                what = "decrypted"
                who = "a node with other gossip keys, or of another cluster,"
            else:
                what = "decoded"
                who = (
                    "a node of another cluster, one that encrypts where this one does not "
                    "(or the reverse), or a program that does not speak gossip"
                )
            if self._log_limited(
                "gossip",
                name,
                "%d gossip packet(s) could not be %s in the last %.0f s (%s): %s is sending "
                "to this one (cluster %r, %s); kinship does not name the sender",
                value - seen,
                what,
                now - since,
                name,
                who,
                self._config.cluster_name,
                self._keys_text(),
                interval_s=_MISMATCH_LOG_INTERVAL_S,
            ):
                self._refused_seen[name] = (value, now)

    def _refused_counts(self) -> dict[str, int]:
        """The gossip counters of packets refused for another key, cluster name or format."""
        stats = self._gossip.stats()
        return {"decrypt_failures": stats.decrypt_failures, "decode_errors": stats.decode_errors}

    def _keys_text(self) -> str:
        """This node's gossip key ids (kinship's 8-hex fingerprints, safe to log)."""
        ids = self._gossip.key_ids()
        return f"gossip key ids {', '.join(ids)}" if ids else "no gossip keys"

    async def _meta_loop(self) -> None:
        while True:
            await self._meta_dirty.wait()
            self._meta_dirty.clear()
            meta = self._own_meta().encode()
            if meta != self._published_meta:
                await self._gossip.set_meta(meta)
                self._published_meta = meta
                self._counts.meta_updates += 1
            await asyncio.sleep(self._config.meta_flush_interval_s)

    async def _anti_entropy_loop(self) -> None:
        interval = self._config.anti_entropy_interval_s
        while True:
            await asyncio.sleep(interval * self._rng.uniform(0.8, 1.2))
            self._anti_entropy_round()

    def _anti_entropy_round(self) -> None:
        """Compares every held copy's digest with what its peer advertises and pulls again
        what differs; also catches up on membership changes whose events were lost, and
        warns of gossip packets refused since the last round.

        It also re-hashes the directories from scratch, to catch a digest that drifted
        from its entries (a bug): every round while this node holds at most
        `DRIFT_CHECK_ENTRIES` entries in all, else once every so many rounds that a round
        re-hashes about that many on average (100,000 groups on 3 nodes: every 15th
        round), so the check's CPU stays bounded however large the directory grows."""
        self._counts.anti_entropy_runs += 1
        self._check_refused_packets()
        self._drift_check_in -= 1
        check_drift = self._drift_check_in <= 0
        if check_drift:
            held = len(self._log) + sum(
                len(p.directory) for p in self._peers.values() if p.directory is not None
            )
            self._drift_check_in = max(1, -(-held // DRIFT_CHECK_ENTRIES))
            if self._log.recompute_digest() != self._log.digest:
                log.error("this node's directory digest drifted from its entries: a bug")
        self._reconcile()
        for peer in list(self._peers.values()):
            d = peer.directory
            if (
                check_drift
                and d is not None
                and not d.needs_full
                and d.recompute_digest() != d.digest
            ):
                log.error("copy of node %d's directory drifted from its digest", peer.node_id)
                d.needs_full = True
            if peer.wants_sync() and not peer.syncing:
                self._counts.anti_entropy_repairs += 1
                if d is not None and d.version == peer.meta.directory_version:
                    d.needs_full = True  # same version, other digest: only a full pull repairs
                self._schedule_sync(peer)

    # -- internals: directory pull (requester side) ----------------------------------------

    def _schedule_sync(self, peer: _Peer) -> None:
        if self._closed:
            return
        if peer.syncing:
            peer.sync_again = True
            return
        peer.syncing = True
        self._spawn(self._sync_loop(peer), f"membership-sync-{peer.node_id}")

    def _is_current(self, peer: _Peer) -> bool:
        return self._peers.get(peer.node_id) is peer

    async def _sync_loop(self, peer: _Peer) -> None:
        try:
            for _ in range(_MAX_SYNC_ROUNDS):
                peer.sync_again = False
                if not self._is_current(peer) or not peer.wants_sync():
                    return
                async with self._sync_slots:
                    ok = await self._pull(peer)
                if not ok:
                    return
                if not peer.sync_again and not peer.wants_sync():
                    return
        finally:
            peer.syncing = False

    def _request_id(self) -> int:
        self._next_request = (self._next_request + 1) % (1 << 63)
        return self._next_request

    async def _pull(self, peer: _Peer) -> bool:
        """One pull of `peer`'s directory, retried on timeouts; True once a response was
        applied (or showed the copy needs a full pull next), False when abandoned."""
        directory = peer.directory
        full = directory is None or directory.needs_full
        from_version = 0 if full or directory is None else directory.version
        timeout = self._config.sync_timeout_s
        request_id = self._request_id()
        pending = _Pending(peer.name, peer.epoch)
        self._pending[request_id] = pending
        try:
            for attempt in range(self._config.sync_max_retries + 1):
                if not self._is_current(peer) or pending.failed:
                    return False
                if attempt:
                    self._counts.sync_retries += 1
                data = encode_request(
                    SyncRequest(
                        request_id=request_id,
                        target_epoch=peer.epoch,
                        from_version=from_version,
                        full=full,
                        missing=pending.missing(),
                    )
                )
                try:
                    await self._gossip.send(peer.name, peer.epoch, data)
                except PeerGoneError:
                    return False
                self._counts.sync_requests_sent += 1
                self._counts.sync_bytes_sent += len(data)
                if await self._await_response(pending, timeout):
                    return self._apply_response(peer, pending)
                timeout *= 2
        finally:
            del self._pending[request_id]
        self._counts.sync_failures += 1
        self._log_limited(
            peer.name,
            "sync",
            "pull of node %d's directory got no complete response after %d attempts",
            peer.node_id,
            self._config.sync_max_retries + 1,
        )
        return False

    async def _await_response(self, pending: _Pending, wait_s: float) -> bool:
        """Waits for all chunks; the timeout restarts with every chunk that arrives."""
        while not pending.complete:
            if pending.failed:
                return False
            pending.progress.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await pending.progress.wait()
            except TimeoutError:
                return False
        return not pending.failed

    def _apply_response(self, peer: _Peer, pending: _Pending) -> bool:
        if not self._is_current(peer) or pending.header is None:
            return False
        kind, from_version, to_version, digest, count = pending.header
        changes: list[Change] = []
        for index in range(count):
            changes.extend(pending.chunks[index].changes)
        if peer.directory is None:
            peer.directory = PeerDirectory(peer.epoch)
        directory = peer.directory
        try:
            if kind is ChunkKind.SNAPSHOT:
                applied = directory.replace(
                    Snapshot(version=to_version, entries=_upserts(changes), digest=digest)
                )
                self._counts.full_syncs += 1
            else:
                applied = directory.apply_delta(
                    Delta(
                        from_version=from_version,
                        to_version=to_version,
                        changes=tuple(changes),
                        digest=digest,
                    )
                )
                self._counts.deltas_applied += 1
        except DirectoryMismatchError as exc:
            self._counts.digest_mismatches += 1
            directory.needs_full = True
            for key, role in exc.applied:
                self._index_change(peer.node_id, key, role)
            self._log_limited(
                peer.name, "digest", "directory of node %d does not match: %s", peer.node_id, exc
            )
            # A full pull follows, unless the snapshot itself was wrong: then wait for
            # anti-entropy instead of hammering a peer that sends bad snapshots.
            return kind is ChunkKind.DELTA
        for key, role in applied:
            self._index_change(peer.node_id, key, role)
        if applied or kind is ChunkKind.SNAPSHOT:
            self._emit(
                DirectoryChanged(
                    node_id=peer.node_id,
                    version=directory.version,
                    changes=len(applied),
                    full=kind is ChunkKind.SNAPSHOT,
                )
            )
        return True

    def _on_chunk(self, sender: GossipMember, chunk: SyncChunk) -> None:
        pending = self._pending.get(chunk.request_id)
        if pending is None or pending.name != sender.name or pending.failed:
            self._counts.stale_chunks += 1
            return
        if chunk.epoch != pending.epoch or sender.epoch != pending.epoch:
            self._refuse(sender.name, "epoch", "a chunk from another run")
            return
        header = (chunk.kind, chunk.from_version, chunk.to_version, chunk.digest, chunk.chunk_count)
        if pending.header is None:
            pending.header = header
        elif pending.header != header:
            # The peer rebuilt the response (it no longer held the old one): start over.
            pending.reset(header)
        if chunk.chunk_index in pending.chunks:
            self._counts.stale_chunks += 1
            return
        pending.entries += len(chunk.changes)
        if pending.entries > self._config.max_entries_per_node:
            self._refuse(sender.name, "too_many", "a response above max_entries_per_node")
            pending.failed = True
        else:
            pending.chunks[chunk.chunk_index] = chunk
        pending.progress.set()

    def _refuse(self, peer: str, reason: str, what: str) -> None:
        self._counts.messages_refused += 1
        self._log_limited(peer, reason, "refused a directory message from %s: %s", peer, what)

    # -- internals: directory pull (responder side) ----------------------------------------

    def _on_message(self, sender: GossipMember, data: bytes) -> None:
        self._counts.sync_bytes_received += len(data)
        try:
            message = decode(data, max_bytes=MAX_USER_MESSAGE_BYTES)
        except ProtocolError as exc:
            self._refuse(sender.name, exc.reason, str(exc))
            return
        if isinstance(message, SyncChunk):
            self._on_chunk(sender, message)
            return
        if sender.name not in self._by_name and decode_meta(sender.meta) is None:
            self._refuse(sender.name, "unknown", "a request from a member that is not CopyCat")
            return
        if self._serving >= self._config.max_concurrent_syncs:
            self._counts.requests_dropped += 1
            return
        self._serving += 1
        self._spawn(self._serve(sender, message), "membership-serve")

    async def _serve(self, sender: GossipMember, request: SyncRequest) -> None:
        try:
            cache_key = (sender.name, sender.epoch, request.request_id)
            chunks = self._responses.get(cache_key)
            if chunks is None:
                chunks = self._build_response(request)
                self._remember_response(cache_key, chunks)
                wanted: Iterable[int] = range(len(chunks))
            elif request.missing:
                wanted = (i for i in request.missing if i < len(chunks))
            else:
                wanted = range(len(chunks))
            for index in wanted:
                await self._gossip.send(sender.name, sender.epoch, chunks[index])
                self._counts.sync_bytes_sent += len(chunks[index])
            self._counts.requests_served += 1
        except PeerGoneError:
            log.debug("requester %s left before its response was sent", sender.name)
        finally:
            self._serving -= 1

    def _build_response(self, request: SyncRequest) -> list[bytes]:
        delta = None
        if not request.full and request.target_epoch == self._epoch:
            delta = self._log.delta_since(request.from_version)
        if delta is None:
            snapshot = self._log.snapshot()
            return encode_chunks(
                request_id=request.request_id,
                epoch=self._epoch,
                kind=ChunkKind.SNAPSHOT,
                from_version=0,
                to_version=snapshot.version,
                digest=snapshot.digest,
                changes=snapshot.entries,
                max_bytes=self._config.max_chunk_bytes,
            )
        return encode_chunks(
            request_id=request.request_id,
            epoch=self._epoch,
            kind=ChunkKind.DELTA,
            from_version=delta.from_version,
            to_version=delta.to_version,
            digest=delta.digest,
            changes=delta.changes,
            max_bytes=self._config.max_chunk_bytes,
        )

    def _remember_response(self, key: tuple[str, int, int], chunks: list[bytes]) -> None:
        size = sum(len(c) for c in chunks)
        if size > _RESPONSE_CACHE_BYTES // 2:
            return  # too large to keep: a retry rebuilds it
        self._responses[key] = chunks
        self._responses_bytes += size
        while (
            self._responses_bytes > _RESPONSE_CACHE_BYTES
            or len(self._responses) > _RESPONSE_CACHE_ENTRIES
        ):
            _, old = self._responses.popitem(last=False)
            self._responses_bytes -= sum(len(c) for c in old)


def _upserts(changes: list[Change]) -> tuple[tuple[EntryKey, Role], ...]:
    out: list[tuple[EntryKey, Role]] = []
    for key, role in changes:
        if role is None:  # the decoder refuses removals in snapshots; keep mypy honest
            raise DirectoryMismatchError("a snapshot cannot remove entries")
        out.append((key, role))
    return tuple(out)

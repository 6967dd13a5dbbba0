# The gossip layer behind our own interface: the `Gossip` protocol, its plain data types,
# and `KinshipGossip`, the implementation on kinship (SWIM with Lifeguard).
#
# What lives here: the only imports of kinship in CopyCat. kinship's members, events,
# errors and config are translated at this boundary, so nothing above sees a kinship type
# and kinship could be replaced by another SWIM implementation of the same protocol.
#
# What must not: directory logic, metadata layout, or anything public. `Membership` owns
# policy; this module only translates.
"""The `Gossip` protocol (our interface to a SWIM implementation) and `KinshipGossip`."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, final

import kinship

from copycat._net import is_loopback
from copycat.errors import AddressInUseError, BrokenError, ConfigError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from copycat.membership._config import MembershipConfig


KINSHIP_CLOSE_GRACE_S: Final = 0.1
"""How long `KinshipGossip.close()` waits after kinship's close for kinship's threads to
release their Python objects (see `close`)."""


class GossipState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


class GossipEventKind(enum.Enum):
    JOINED = "joined"
    SUSPECT = "suspect"
    RECOVERED = "recovered"
    DEAD = "dead"
    LEFT = "left"
    UPDATED = "updated"
    MESSAGE = "message"
    LOST = "lost"
    CONFLICT = "conflict"


class Reachability(enum.Enum):
    """What a peer address that did not answer a join shows when probed (`reachability`)."""

    SELF = "self"
    """The address is this node's own: skipped, as the join skips it."""
    UNRESOLVED = "unresolved"
    """The host name does not resolve to an address."""
    SILENT = "silent"
    """Nothing accepts a connection there: the node is down or the address unreachable."""
    LISTENING = "listening"
    """Something accepts connections there but did not answer the join: a node of another
    cluster or with other gossip keys (kinship drops such packets without a reply), or a
    program that does not speak gossip."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipMember:
    """One run of a member as the gossip layer sees it."""

    name: str
    address: str
    state: GossipState
    epoch: int
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipEvent:
    """A membership event, a direct message (`data`), or lost events (`count`)."""

    kind: GossipEventKind
    member: GossipMember | None = None
    data: bytes = b""
    count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipStats:
    decrypt_failures: int
    decode_errors: int
    replays_dropped: int
    messages_sent: int
    messages_received: int
    messages_dropped: int


class PeerGoneError(Exception):
    """The peer's run is not a live member any more; a message to it was not sent."""


class Gossip(Protocol):
    """What `Membership` needs from a SWIM implementation.

    The contract:
    1. `start()` binds and runs the node alone; `join(peers)` then contacts the peers and
       returns how many answered (0 when none did; the caller retries). Starting and
       joining in two steps lets the caller subscribe to events in between, so no message
       a peer sends right after the join is missed.
    2. `events()` called before any other await after `start()` misses nothing; events
       never describe the local node; the stream ends at `close()`.
    3. `send()` is best effort: it may be lost and is never acknowledged. It raises
       `PeerGoneError` when the run (name, epoch) is not a live member.
    4. `members()` lists alive and suspect members, the local node included, and never waits.
    5. `reachability(address, timeout_s)` says why a peer that `join()` did not reach was
       silent, as far as the implementation can tell, within `timeout_s` and without
       moving the peer's counters. A join names no peer when it fails, so the caller asks.
    6. `stats().decrypt_failures` and `stats().decode_errors` count packets this node
       refused; the gossip layer does not say who sent them.
    """

    async def start(self) -> None: ...
    async def join(self, peers: list[str]) -> int: ...
    async def reachability(self, address: str, timeout_s: float) -> Reachability: ...
    def local(self) -> GossipMember: ...
    def members(self) -> list[GossipMember]: ...
    def member(self, name: str) -> GossipMember | None: ...
    def events(self) -> AsyncIterator[GossipEvent]: ...
    async def set_meta(self, meta: Mapping[str, str]) -> None: ...
    async def send(self, name: str, epoch: int, data: bytes) -> None: ...
    async def install_key(self, key: str | bytes) -> None: ...
    async def use_key(self, key: str | bytes) -> None: ...
    async def remove_key(self, key: str | bytes) -> None: ...
    def key_ids(self) -> list[str]: ...
    def stats(self) -> GossipStats: ...
    async def leave(self, timeout_s: float) -> None: ...
    async def close(self) -> None: ...


_STATES: dict[kinship.State, GossipState] = {
    kinship.State.ALIVE: GossipState.ALIVE,
    kinship.State.SUSPECT: GossipState.SUSPECT,
    kinship.State.DEAD: GossipState.DEAD,
    kinship.State.LEFT: GossipState.LEFT,
}


def _member(m: kinship.Member) -> GossipMember:
    return GossipMember(
        name=m.name, address=m.addr, state=_STATES[m.state], epoch=m.epoch, meta=dict(m.meta)
    )


def _event(e: kinship.Event) -> GossipEvent | None:
    match e:
        case kinship.MemberJoined(member=m):
            return GossipEvent(kind=GossipEventKind.JOINED, member=_member(m))
        case kinship.MemberSuspect(member=m):
            return GossipEvent(kind=GossipEventKind.SUSPECT, member=_member(m))
        case kinship.MemberRecovered(member=m):
            return GossipEvent(kind=GossipEventKind.RECOVERED, member=_member(m))
        case kinship.MemberDead(member=m):
            return GossipEvent(kind=GossipEventKind.DEAD, member=_member(m))
        case kinship.MemberLeft(member=m):
            return GossipEvent(kind=GossipEventKind.LEFT, member=_member(m))
        case kinship.MemberUpdated(member=m):
            return GossipEvent(kind=GossipEventKind.UPDATED, member=_member(m))
        case kinship.UserMessage(sender=m, data=data, broadcast=False):
            return GossipEvent(kind=GossipEventKind.MESSAGE, member=_member(m), data=bytes(data))
        case kinship.EventsLost(count=n):
            return GossipEvent(kind=GossipEventKind.LOST, count=n)
        case kinship.NameConflict(member=m):
            return GossipEvent(kind=GossipEventKind.CONFLICT, member=_member(m))
    return None  # broadcasts: CopyCat sends none, so one is ignored


def _unbracket(host: str) -> str:
    return host.removeprefix("[").removesuffix("]")


async def _translate(stream: kinship.EventStream) -> AsyncIterator[GossipEvent]:
    async for raw in stream:
        event = _event(raw)
        if event is not None:
            yield event


_KINSHIP_FIELDS: dict[str, str] = {"bind": "gossip_host", "advertise": "gossip_advertise"}
"""kinship's config field -> ours, where the names differ (for the errors it raises)."""


def kinship_config(config: MembershipConfig, meta: Mapping[str, str]) -> kinship.Config:
    """kinship's config for `config`: the preset, then our fields by name. kinship binds
    `bind` and publishes `advertise` (None: what it bound), so `gossip_advertise` passes
    through as it is."""
    presets = {
        "local": kinship.Config.local,
        "lan": kinship.Config.lan,
        "wan": kinship.Config.wan,
    }
    host = config.gossip_host
    bind = f"[{host}]:{config.gossip_port}" if ":" in host else f"{host}:{config.gossip_port}"
    try:
        return presets[config.preset](
            name=config.gossip_name,
            bind=bind,
            advertise=config.gossip_advertise,
            seeds=[],  # joined by `join()` once Membership has subscribed to events
            cluster=config.cluster_name,
            keys=list(config.encryption_keys),
            meta=dict(meta),
            insecure_plaintext=config.insecure_plaintext,
        )
    except kinship.ConfigError as exc:
        field = _KINSHIP_FIELDS.get(exc.field, exc.field) if exc.field else "gossip"
        raise ConfigError(field, str(exc)) from None


@final
class KinshipGossip:
    """`Gossip` on kinship: one kinship node, started from a `MembershipConfig`."""

    __slots__ = ("_cluster", "_config")

    def __init__(self, config: MembershipConfig, meta: Mapping[str, str]) -> None:
        self._config = kinship_config(config, meta)
        self._cluster = kinship.Cluster(self._config)

    async def start(self) -> None:
        try:
            await self._cluster.start()
        except kinship.KinshipError as exc:
            raise BrokenError(f"the gossip node did not start: {exc}") from exc
        except OSError as exc:
            # kinship's OSError carries no errno, only the OS's text ("... (os error 98)")
            text = str(exc)
            if exc.errno == errno.EADDRINUSE or "in use" in text or "os error 98)" in text:
                raise AddressInUseError(
                    "gossip endpoint", self._config.bind, "UDP or TCP port"
                ) from exc
            raise BrokenError(f"the gossip node could not bind {self._config.bind}: {exc}") from exc

    async def join(self, peers: list[str]) -> int:
        if not peers:
            return 0
        try:
            return await self._cluster.join(peers)
        except kinship.JoinError:  # "no seed answered": names no seed; see `reachability`
            return 0

    async def reachability(self, address: str, timeout_s: float) -> Reachability:
        # kinship listens on TCP at its gossip port (push-pull), and drops a connection whose
        # frames carry another cluster label or key (plaintext: `decode_errors`; encrypted:
        # `decrypt_failures`, the label being bound to the key) without answering, and without
        # naming either side. A bare connect that sends nothing moves no counter there, so
        # "accepts a connection" tells a misconfigured peer from a dead one.
        host, _, port_text = address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        try:
            port = int(port_text)
            async with asyncio.timeout(timeout_s):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError, ValueError):
            return Reachability.UNRESOLVED
        if self._is_own(port, {str(info[4][0]) for info in infos}):
            return Reachability.SELF
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return Reachability.SILENT
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(timeout_s):
                await writer.wait_closed()
        return Reachability.LISTENING

    def _is_own(self, port: int, ips: set[str]) -> bool:
        """Whether (one of `ips`, `port`) is this node's gossip endpoint: the address it
        publishes (kinship's `local.addr`: `advertise` when set, else what it bound), or
        the address it bound (the bind host itself, or a loopback address under a wildcard
        bind) at the bound port. The bound port is `bind`'s, or the published one when
        kinship publishes what it bound; with `advertise` set and `bind` at port 0 it is
        unknown here (kinship does not report it) and only the published address counts."""
        published_host, _, published_port = self._cluster.local.addr.rpartition(":")
        if str(port) == published_port and _unbracket(published_host) in ips:
            return True
        bind_host, _, bind_port = self._config.bind.rpartition(":")
        bound_port = int(bind_port)
        if bound_port == 0 and self._config.advertise is None:
            bound_port = int(published_port)
        if bound_port == 0 or port != bound_port:
            return False
        bind_host = _unbracket(bind_host)
        if bind_host in ips:
            return True
        return bind_host in ("0.0.0.0", "::") and any(is_loopback(ip) for ip in ips)

    def local(self) -> GossipMember:
        return _member(self._cluster.local)

    def members(self) -> list[GossipMember]:
        return [_member(m) for m in self._cluster.members()]

    def member(self, name: str) -> GossipMember | None:
        m = self._cluster.member(name)
        return None if m is None else _member(m)

    def events(self) -> AsyncIterator[GossipEvent]:
        # Subscribe now, not at the first `anext`: kinship's subscription starts at the call.
        return _translate(self._cluster.events())

    async def set_meta(self, meta: Mapping[str, str]) -> None:
        await self._cluster.set_meta(meta)

    async def send(self, name: str, epoch: int, data: bytes) -> None:
        target = self._cluster.member(name)
        if (
            target is None
            or target.epoch != epoch
            or target.state
            not in (
                kinship.State.ALIVE,
                kinship.State.SUSPECT,
            )
        ):
            raise PeerGoneError(name)
        try:
            await self._cluster.send(target, data)
        except kinship.NotAMember:
            raise PeerGoneError(name) from None

    async def install_key(self, key: str | bytes) -> None:
        try:
            await self._cluster.keyring.install(key)
        except (kinship.KeyringError, ValueError) as exc:
            raise ConfigError("key", str(exc)) from None

    async def use_key(self, key: str | bytes) -> None:
        try:
            await self._cluster.keyring.use(key)
        except (kinship.KeyringError, ValueError) as exc:
            raise ConfigError("key", str(exc)) from None

    async def remove_key(self, key: str | bytes) -> None:
        try:
            await self._cluster.keyring.remove(key)
        except (kinship.KeyringError, ValueError) as exc:
            raise ConfigError("key", str(exc)) from None

    def key_ids(self) -> list[str]:
        return self._cluster.keyring.key_ids()

    def stats(self) -> GossipStats:
        s = self._cluster.stats()
        return GossipStats(
            decrypt_failures=s.decrypt_failures,
            decode_errors=s.decode_errors,
            replays_dropped=s.replays_dropped,
            messages_sent=s.user_messages_sent,
            messages_received=s.user_messages_received,
            messages_dropped=s.user_messages_dropped,
        )

    async def leave(self, timeout_s: float) -> None:
        await self._cluster.leave(timeout_s)

    async def close(self) -> None:
        await self._cluster.close()
        # kinship 0.4 returns from close() while its runtime threads still drop the
        # Python objects of its last calls (pyo3-async-runtimes' task locals: the event
        # loop and a contextvars.Context). A process that finalizes in that window
        # crashes (SIGSEGV in context_tp_dealloc, or SIGABRT), about one run in four
        # for two nodes closed right after joining. Waiting here lets them finish;
        # docs/membership.md has the details and the report for kinship.
        await asyncio.sleep(KINSHIP_CLOSE_GRACE_S)

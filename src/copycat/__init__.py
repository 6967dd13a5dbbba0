"""CopyCat: replicate a program's own data structures across nodes and data centers,
in order and exactly once.

    async with copycat.CopyCat(copycat.Config.default()) as cc:
        ds = await cc.allocate_data_structure(replicas=3)
        sub = await cc.subscribe(ds, snapshot_provider=my_map.snapshot)
        await sub.propose(b"put k v")
        async for item in sub.commits():
            ...

Every exception it raises on purpose is a `copycat.CopyCatError` (the tree is in
`copycat.errors`; each class is exported here too).

Run it with `copycat.run(main())` (uvloop when installed, else asyncio's loop) or any
asyncio runner. `copycat.sync` offers the same with threads and blocking channels.
"""

from __future__ import annotations

from copycat._config import Config as Config
from copycat._ids import DataStructureId as DataStructureId
from copycat._ids import new_data_structure_id as new_data_structure_id
from copycat._logs import NodeNameFilter as NodeNameFilter
from copycat._node import CopyCat as CopyCat
from copycat._node import GroupInfo as GroupInfo
from copycat._node import Subscription as Subscription
from copycat._snapshot import LOAD_SNAPSHOT as LOAD_SNAPSHOT
from copycat._snapshot import LoadSnapshot as LoadSnapshot
from copycat._version import __version__ as __version__
from copycat.errors import AddressInUseError as AddressInUseError
from copycat.errors import ArgumentError as ArgumentError
from copycat.errors import BrokenError as BrokenError
from copycat.errors import ClosedError as ClosedError
from copycat.errors import ClusterUnreachableError as ClusterUnreachableError
from copycat.errors import CompactedError as CompactedError
from copycat.errors import ConfChangeError as ConfChangeError
from copycat.errors import ConfigError as ConfigError
from copycat.errors import CopyCatError as CopyCatError
from copycat.errors import CorruptLogError as CorruptLogError
from copycat.errors import FormatVersionError as FormatVersionError
from copycat.errors import GroupNotFoundError as GroupNotFoundError
from copycat.errors import HandshakeError as HandshakeError
from copycat.errors import InternalError as InternalError
from copycat.errors import InvalidIdError as InvalidIdError
from copycat.errors import MayHaveCommittedError as MayHaveCommittedError
from copycat.errors import MessageTooLargeError as MessageTooLargeError
from copycat.errors import NotEnoughNodesError as NotEnoughNodesError
from copycat.errors import NotLeaderError as NotLeaderError
from copycat.errors import PeerUnreachableError as PeerUnreachableError
from copycat.errors import ProposalDroppedError as ProposalDroppedError
from copycat.errors import ProposalError as ProposalError
from copycat.errors import ProposalTimeoutError as ProposalTimeoutError
from copycat.errors import ProtocolError as ProtocolError
from copycat.errors import ReadTimeoutError as ReadTimeoutError
from copycat.errors import RecoveryRefusedError as RecoveryRefusedError
from copycat.errors import RemoteError as RemoteError
from copycat.errors import RequestTimeoutError as RequestTimeoutError
from copycat.errors import SnapshotStreamError as SnapshotStreamError
from copycat.errors import (
    SnapshotTemporarilyUnavailableError as SnapshotTemporarilyUnavailableError,
)
from copycat.errors import SplitGroupError as SplitGroupError
from copycat.errors import StorageError as StorageError
from copycat.errors import TransportError as TransportError
from copycat.errors import UnavailableError as UnavailableError
from copycat.host import RecoveryReport as RecoveryReport
from copycat.membership import MemberInfo as MemberInfo
from copycat.transport import run as run

__all__ = [
    "LOAD_SNAPSHOT",
    "AddressInUseError",
    "ArgumentError",
    "BrokenError",
    "ClosedError",
    "ClusterUnreachableError",
    "CompactedError",
    "ConfChangeError",
    "Config",
    "ConfigError",
    "CopyCat",
    "CopyCatError",
    "CorruptLogError",
    "DataStructureId",
    "FormatVersionError",
    "GroupInfo",
    "GroupNotFoundError",
    "HandshakeError",
    "InternalError",
    "InvalidIdError",
    "LoadSnapshot",
    "MayHaveCommittedError",
    "MemberInfo",
    "MessageTooLargeError",
    "NotEnoughNodesError",
    "NotLeaderError",
    "PeerUnreachableError",
    "ProposalDroppedError",
    "ProposalError",
    "ProposalTimeoutError",
    "ProtocolError",
    "ReadTimeoutError",
    "RecoveryRefusedError",
    "RecoveryReport",
    "RemoteError",
    "RequestTimeoutError",
    "SnapshotStreamError",
    "SnapshotTemporarilyUnavailableError",
    "SplitGroupError",
    "StorageError",
    "Subscription",
    "TransportError",
    "UnavailableError",
    "__version__",
    "new_data_structure_id",
    "run",
]

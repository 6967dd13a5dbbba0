"""The multi-raft host: every raft group of a node over one log store and one transport
endpoint (see `Host`)."""

from __future__ import annotations

from copycat.host._config import HostConfig as HostConfig
from copycat.host._host import LOAD_SNAPSHOT as LOAD_SNAPSHOT
from copycat.host._host import Feed as Feed
from copycat.host._host import Host as Host
from copycat.host._host import LoadSnapshot as LoadSnapshot
from copycat.host._host import Session as Session
from copycat.host._host import SnapshotProvider as SnapshotProvider
from copycat.host._host import decode_ints as decode_ints
from copycat.host._host import encode_ints as encode_ints

__all__ = [
    "LOAD_SNAPSHOT",
    "Feed",
    "Host",
    "HostConfig",
    "LoadSnapshot",
    "Session",
    "SnapshotProvider",
    "decode_ints",
    "encode_ints",
]

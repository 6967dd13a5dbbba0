"""Node-to-node transport: asyncio TCP (uvloop when installed), one connection per
pair of nodes carrying the raft messages of every group, framed and versioned
(docs/wire.md), batched per event-loop turn, with optional compression, mutual TLS,
chunked snapshot streaming with credits, a request/response channel, fault hooks and
counters.

What lives here: re-exports only. What must not: raft logic, storage, membership.
Start with `Endpoint` and `TransportConfig`.
"""

from __future__ import annotations

from copycat.transport._api import Transport as Transport
from copycat.transport._codec import Envelope as Envelope
from copycat.transport._codec import decode_messages as decode_messages
from copycat.transport._codec import encode_message as encode_message
from copycat.transport._config import COMPRESSION_CODECS as COMPRESSION_CODECS
from copycat.transport._config import TLSConfig as TLSConfig
from copycat.transport._config import TransportConfig as TransportConfig
from copycat.transport._devcerts import DevCerts as DevCerts
from copycat.transport._devcerts import make_dev_certs as make_dev_certs
from copycat.transport._endpoint import Endpoint as Endpoint
from copycat.transport._endpoint import MessageHandler as MessageHandler
from copycat.transport._endpoint import PeerStatus as PeerStatus
from copycat.transport._endpoint import RequestHandler as RequestHandler
from copycat.transport._endpoint import SnapshotHandler as SnapshotHandler
from copycat.transport._endpoint import UnreachableHandler as UnreachableHandler
from copycat.transport._endpoint import new_event_loop as new_event_loop
from copycat.transport._endpoint import read_file_chunks as read_file_chunks
from copycat.transport._endpoint import run as run
from copycat.transport._faults import FaultHooks as FaultHooks
from copycat.transport._frames import PROTOCOL_VERSION as PROTOCOL_VERSION
from copycat.transport._frames import FrameReader as FrameReader
from copycat.transport._stats import TransportStats as TransportStats

__all__ = [
    "COMPRESSION_CODECS",
    "PROTOCOL_VERSION",
    "DevCerts",
    "Endpoint",
    "Envelope",
    "FaultHooks",
    "FrameReader",
    "MessageHandler",
    "PeerStatus",
    "RequestHandler",
    "SnapshotHandler",
    "TLSConfig",
    "Transport",
    "TransportConfig",
    "TransportStats",
    "UnreachableHandler",
    "decode_messages",
    "encode_message",
    "make_dev_certs",
    "new_event_loop",
    "read_file_chunks",
    "run",
]

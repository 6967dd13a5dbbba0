# Node metadata: what every node gossips about itself, as kinship's string tags.
#
# What lives here: the tag layout (docs/membership.md, "Metadata"), its encoding, and its
# strict decoding. Decoding returns None for a member that is not a compatible CopyCat node;
# the caller counts and ignores it.
#
# What must not: kinship imports, I/O, or state.
"""The metadata a node publishes: id, transport address, data center, rack, protocol
version, the version and digest of its directory, and its name (optional)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from copycat.membership._config import MAX_ADDRESS_BYTES, MAX_LABEL_BYTES, MAX_NODE_ID
from copycat.membership._directory import digest_hex, parse_digest_hex

if TYPE_CHECKING:
    from collections.abc import Mapping

PROTOCOL_VERSION: Final = 1
"""Version of the membership protocol (metadata layout and directory wire format). Members
that publish another version are ignored: they are not counted in views or lookups."""

KEY_PROTOCOL: Final = "cc"
KEY_NODE_ID: Final = "id"
KEY_TRANSPORT: Final = "ta"
KEY_DATA_CENTER: Final = "dc"
KEY_RACK: Final = "rk"
KEY_NAME: Final = "nm"
KEY_DIR_VERSION: Final = "dv"
KEY_DIR_DIGEST: Final = "dd"

_MAX_VERSION_DIGITS: Final = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeMeta:
    """A node's metadata, decoded."""

    node_id: int
    transport_address: str
    data_center: str
    rack: str
    directory_version: int
    directory_digest: int
    name: str = ""
    """The node's name for people; "" (also when a node publishes none): its transport
    address."""

    @property
    def display_name(self) -> str:
        return self.name or self.transport_address

    def encode(self) -> dict[str, str]:
        return {
            KEY_PROTOCOL: str(PROTOCOL_VERSION),
            KEY_NODE_ID: str(self.node_id),
            KEY_TRANSPORT: self.transport_address,
            KEY_DATA_CENTER: self.data_center,
            KEY_RACK: self.rack,
            KEY_DIR_VERSION: str(self.directory_version),
            KEY_DIR_DIGEST: digest_hex(self.directory_digest),
            **({KEY_NAME: self.name} if self.name else {}),
        }


def _decimal(text: str | None, high: int) -> int | None:
    if text is None or not 0 < len(text) <= _MAX_VERSION_DIGITS or not text.isascii():
        return None
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= high else None


def _label(text: str | None, limit: int) -> str | None:
    if text is None or not text or len(text.encode("utf-8", "surrogatepass")) > limit:
        return None
    return text


def decode_meta(meta: Mapping[str, str]) -> NodeMeta | None:
    """The metadata of a compatible CopyCat node, or None (another protocol version, a
    missing or malformed tag, or not a CopyCat node at all)."""
    if meta.get(KEY_PROTOCOL) != str(PROTOCOL_VERSION):
        return None
    node_id = _decimal(meta.get(KEY_NODE_ID), MAX_NODE_ID)
    version = _decimal(meta.get(KEY_DIR_VERSION), (1 << 64) - 1)
    digest_text = meta.get(KEY_DIR_DIGEST)
    digest = None if digest_text is None else parse_digest_hex(digest_text)
    transport = _label(meta.get(KEY_TRANSPORT), MAX_ADDRESS_BYTES)
    data_center = _label(meta.get(KEY_DATA_CENTER), MAX_LABEL_BYTES)
    rack = _label(meta.get(KEY_RACK), MAX_LABEL_BYTES)
    name_text = meta.get(KEY_NAME)
    name = "" if name_text is None else _label(name_text, MAX_LABEL_BYTES)
    if (
        node_id is None
        or node_id == 0
        or version is None
        or digest is None
        or transport is None
        or data_center is None
        or rack is None
        or name is None
    ):
        return None
    return NodeMeta(
        node_id=node_id,
        transport_address=transport,
        data_center=data_center,
        rack=rack,
        directory_version=version,
        directory_digest=digest,
        name=name,
    )

"""TransportConfig: every rule is checked at construction and names its field."""

from __future__ import annotations

import base64
import dataclasses
import importlib.metadata

import pytest

import copycat.transport._endpoint as endpoint_module
from copycat import Config
from copycat.errors import ConfigError
from copycat.transport import Endpoint, TLSConfig, TransportConfig
from copycat.transport._frames import available_codecs


def test_defaults_are_valid_and_frozen() -> None:
    cfg = TransportConfig(node_id=1)
    assert cfg.host == "127.0.0.1"
    assert cfg.tls is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node_id", 0),
        ("node_id", 1 << 64),
        ("cluster_name", ""),
        ("port", 70000),
        ("max_frame_bytes", 1000),
        ("compression", ("gzip",)),
        ("compression", ("lz4", "lz4")),
        ("compression_level", 0),
        ("send_queue_max_msgs", 0),
        ("send_queue_max_bytes", 10),
        ("handshake_timeout_s", 0),
        ("frame_timeout_s", float("inf")),
        ("keepalive_interval_s", 20.0),
        ("reconnect_max_s", 0.01),
        ("reconnect_jitter", 2.0),
        ("snapshot_chunk_bytes", 16 << 20),
        ("snapshot_window_chunks", 0),
        ("max_pending_handshakes", 0),
    ],
)
def test_invalid_values_name_their_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        TransportConfig(**{"node_id": 1, field: value})  # type: ignore[arg-type]
    assert err.value.field == field


def test_tls_needs_all_three_files() -> None:
    with pytest.raises(ConfigError) as err:
        TLSConfig(ca_file="ca.pem", cert_file="", key_file="k.pem")
    assert err.value.field == "tls.cert_file"


def test_every_field_is_documented() -> None:
    import ast
    import inspect

    from copycat.transport import _config

    tree = ast.parse(inspect.getsource(_config))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in ("TransportConfig", "TLSConfig"):
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign):
                    doc = body[i + 1]
                    name = f"{node.name}.{ast.unparse(stmt.target)}"
                    assert isinstance(doc, ast.Expr), f"{name} has no docstring"
                    assert isinstance(doc.value, ast.Constant), f"{name} has no docstring"
                    text = doc.value.value
                    assert isinstance(text, str)
                    if stmt.value is not None and node.name == "TransportConfig":
                        assert "Default" in text, f"{ast.unparse(stmt.target)}: no default stated"


def test_the_wan_presets_compression_comes_with_the_package() -> None:
    """`pip install copycat-replication` brings zstandard (no extra): the codec
    `Config.wan()` prefers is there, not silently off."""
    requirements = importlib.metadata.requires("copycat-replication") or []
    plain = [r for r in requirements if "extra ==" not in r]
    assert any(r.startswith("zstandard") for r in plain), requirements
    wan = Config.wan(hostname="10.0.0.1", gossip_keys=[base64.b64encode(bytes(32)).decode()])
    assert available_codecs(tuple(wan.compression))[0] == "zstd"


def test_compression_asked_for_with_no_codec_installed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asking for compression that no installed package provides is a `ConfigError`
    naming the field, not a warning and a node running uncompressed."""
    monkeypatch.setattr(endpoint_module, "available_codecs", lambda preferred: ())
    with pytest.raises(ConfigError, match="compression: asks for lz4 but none is installed"):
        Endpoint(TransportConfig(node_id=1, compression=("lz4",)))

"""`copycat.Config` (src/copycat/_config.py): the defaults, one test per validation rule
(each names its field), the presets as diffs from the default, `from_env`, and the
sub-configs it builds for the transport, membership and host layers."""

from __future__ import annotations

import ast
import base64
import dataclasses
import inspect
import math
import typing

import pytest

from copycat import _config
from copycat._config import Config
from copycat.errors import ConfigError
from copycat.host import HostConfig
from copycat.membership import MembershipConfig
from copycat.transport import COMPRESSION_CODECS, TLSConfig, TransportConfig

if typing.TYPE_CHECKING:
    import pathlib

KEY = base64.b64encode(bytes(range(32))).decode()
KEY2 = base64.b64encode(bytes(range(1, 33))).decode()
SHORT_KEY = base64.b64encode(b"x" * 16).decode()

FIELD_NAMES = [f.name for f in dataclasses.fields(Config)]


# -- defaults and documentation -------------------------------------------------------------


def test_defaults_mirror_the_original_go_config() -> None:
    c = Config()
    assert (c.hostname, c.port, c.gossip_port) == ("127.0.0.1", 7458, 7459)
    assert c.data_dir == "./copy-cat-db"
    assert c.peers_to_contact == ()
    assert (c.data_center, c.rack) == ("dc1", "rack1")
    assert c.cluster_name == "copycat"
    assert c.node_id is None
    assert (c.tls_ca_file, c.tls_cert_file, c.tls_key_file) == (None, None, None)
    assert c.gossip_keys == ()
    assert c.insecure_plaintext_gossip is False
    assert c.durable is True
    assert c.tick_interval_s == 0.1
    assert c.election_ticks == 10
    assert c.snapshot_every_entries == 10_000
    assert c.proposal_timeout_s == 30.0
    assert c.replicas == 3
    assert c.gossip_preset == "local"
    assert c.compression == ()


def field_docstrings() -> dict[str, str]:
    """{field: docstring} read from the source: the string right below each field."""
    tree = ast.parse(inspect.getsource(_config))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config")
    docs: dict[str, str] = {}
    for node, following in zip(cls.body, [*cls.body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = following.value.value
            else:
                docs[node.target.id] = ""
    return docs


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_every_field_documents_its_default(name: str) -> None:
    doc = field_docstrings()[name]
    assert len(doc) > 80, f"{name} needs a docstring with meaning, default and trade-off"
    assert "Default" in doc, f"{name}'s docstring must state its default"


def test_preset_override_type_lists_every_field() -> None:
    hints = typing.get_type_hints(_config._ConfigKwargs)
    assert list(hints) == FIELD_NAMES


def test_config_is_frozen_slotted_and_keyword_only() -> None:
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.port = 1  # type: ignore[misc]
    assert not hasattr(c, "__dict__")
    with pytest.raises(TypeError):
        Config("127.0.0.1")  # type: ignore[call-arg]


def test_sequences_are_stored_as_tuples_and_the_config_is_hashable() -> None:
    c = Config(peers_to_contact=["127.0.0.1:7459", "[::1]:7460"], compression=["lz4"])
    assert c.peers_to_contact == ("127.0.0.1:7459", "[::1]:7460")
    assert c.compression == ("lz4",)
    assert c == Config(peers_to_contact=("127.0.0.1:7459", "[::1]:7460"), compression=("lz4",))
    assert hash(c) == hash(
        Config(peers_to_contact=("127.0.0.1:7459", "[::1]:7460"), compression=("lz4",))
    )


def test_a_path_is_accepted_as_data_dir(tmp_path: pathlib.Path) -> None:
    c = Config(data_dir=tmp_path)  # type: ignore[arg-type]
    assert c.data_dir == str(tmp_path)
    assert c.node_id_file == tmp_path / "node_id"


def test_repr_hides_the_gossip_keys() -> None:
    c = Config(gossip_keys=[KEY])
    assert KEY not in repr(c)
    assert "gossip_keys" not in repr(c)


def test_localhost_and_ipv6_loopback_count_as_loopback() -> None:
    assert Config(hostname="localhost").gossip_preset == "local"
    assert Config(hostname="::1").membership_config(1).transport_address == "[::1]:7458"


def test_compression_codecs_match_the_transport() -> None:
    assert _config.COMPRESSION_CODECS == COMPRESSION_CODECS


# -- validation: every rule names its field -------------------------------------------------

INVALID: list[tuple[str, dict[str, object]]] = [
    ("http_port", {"http_port": 70000}),
    ("log_format", {"log_format": "xml"}),
    ("http_port", {"http_port": 7458}),
    ("leader_follows_writers", {"leader_follows_writers": "yes"}),
    ("leader_follow_after_s", {"leader_follow_after_s": -1.0}),
    ("hostname", {"hostname": ""}),
    ("hostname", {"hostname": "0.0.0.0"}),
    ("hostname", {"hostname": "::"}),
    ("hostname", {"hostname": "bad host"}),
    ("hostname", {"hostname": "[::1]"}),
    ("hostname", {"hostname": "a" * 191}),
    ("hostname", {"hostname": 127}),
    ("port", {"port": -1}),
    ("port", {"port": 65536}),
    ("port", {"port": "7458"}),
    ("port", {"port": True}),
    ("gossip_port", {"gossip_port": 70000}),
    ("gossip_port", {"port": 7000, "gossip_port": 7000}),
    ("bind_host", {"bind_host": ""}),
    ("bind_host", {"bind_host": "bad host"}),
    ("bind_host", {"bind_host": "[::1]"}),
    ("bind_host", {"bind_host": "b" * 191}),
    ("bind_host", {"bind_host": 127}),
    ("advertise_port", {"advertise_port": 0}),
    ("advertise_port", {"advertise_port": 65536}),
    ("advertise_port", {"advertise_port": "7458"}),
    ("advertise_port", {"advertise_port": True}),
    ("advertise_gossip_port", {"advertise_gossip_port": 0}),
    ("advertise_gossip_port", {"advertise_gossip_port": 70000}),
    ("advertise_gossip_port", {"advertise_gossip_port": 7459.0}),
    # kinship publishes before it binds: it cannot publish a port the OS picks
    ("advertise_gossip_port", {"bind_host": "127.0.0.2", "gossip_port": 0}),
    # the two published ports collide on `hostname`
    ("advertise_gossip_port", {"advertise_port": 7459}),
    ("advertise_gossip_port", {"advertise_gossip_port": 7458}),
    ("advertise_gossip_port", {"advertise_port": 9000, "advertise_gossip_port": 9000}),
    ("data_dir", {"data_dir": ""}),
    ("peers_to_contact", {"peers_to_contact": "127.0.0.1:7459"}),
    ("peers_to_contact", {"peers_to_contact": ["127.0.0.1"]}),
    ("peers_to_contact", {"peers_to_contact": ["127.0.0.1:0"]}),
    ("peers_to_contact", {"peers_to_contact": ["127.0.0.1:http"]}),
    ("peers_to_contact", {"peers_to_contact": [":7459"]}),
    ("peers_to_contact", {"peers_to_contact": ["::1:7459"]}),
    ("peers_to_contact", {"peers_to_contact": [7459]}),
    ("data_center", {"data_center": ""}),
    ("data_center", {"data_center": "d" * 65}),
    ("rack", {"rack": "r\n1"}),
    ("node_name", {"node_name": ""}),
    ("node_name", {"node_name": "n" * 65}),
    ("node_name", {"node_name": "a\tb"}),
    ("cluster_name", {"cluster_name": ""}),
    ("node_id", {"node_id": 0}),
    ("node_id", {"node_id": -3}),
    ("node_id", {"node_id": 1 << 63}),
    ("node_id", {"node_id": True}),
    ("node_id", {"node_id": "7"}),
    ("tls_ca_file", {"tls_ca_file": ""}),
    ("tls_key_file", {"tls_ca_file": "ca.pem", "tls_cert_file": "n.pem"}),
    ("tls_ca_file", {"tls_cert_file": "n.pem", "tls_key_file": "n.key"}),
    ("tls_cert_file", {"tls_ca_file": "ca.pem", "tls_cert_file": 5, "tls_key_file": "n.key"}),
    ("gossip_keys", {"gossip_keys": KEY}),
    ("gossip_keys", {"gossip_keys": ["not base64!"]}),
    ("gossip_keys", {"gossip_keys": [SHORT_KEY]}),
    ("gossip_keys", {"gossip_keys": [KEY, KEY]}),
    ("gossip_keys", {"gossip_keys": [bytes(32)]}),
    ("gossip_keys", {"hostname": "10.0.0.1", "gossip_preset": "lan"}),
    ("gossip_keys", {"gossip_preset": "wan"}),
    ("insecure_plaintext_gossip", {"insecure_plaintext_gossip": 1}),
    ("tls_bind_node_id", {"tls_bind_node_id": 1}),
    ("tls_bind_node_id", {"tls_bind_node_id": True}),  # without the TLS files
    ("gossip_preset", {"gossip_preset": "fast"}),
    ("gossip_preset", {"hostname": "10.0.0.1", "gossip_keys": [KEY]}),
    # the loopback rule judges the bind address too: a wildcard is not loopback ...
    ("gossip_preset", {"bind_host": "0.0.0.0", "gossip_keys": [KEY]}),
    ("gossip_preset", {"bind_host": "::", "hostname": "::1", "gossip_keys": [KEY]}),
    ("gossip_keys", {"bind_host": "0.0.0.0", "gossip_preset": "lan"}),
    # ... nor a loopback bind that publishes another address (peers reach it from elsewhere)
    ("gossip_preset", {"bind_host": "127.0.0.1", "hostname": "10.0.0.5", "gossip_keys": [KEY]}),
    ("gossip_keys", {"bind_host": "127.0.0.1", "hostname": "10.0.0.5", "gossip_preset": "lan"}),
    ("durable", {"durable": "yes"}),
    ("tick_interval_s", {"tick_interval_s": 0}),
    ("tick_interval_s", {"tick_interval_s": -0.1}),
    ("tick_interval_s", {"tick_interval_s": math.nan}),
    ("tick_interval_s", {"tick_interval_s": math.inf}),
    ("tick_interval_s", {"tick_interval_s": "0.1"}),
    ("election_ticks", {"election_ticks": 1}),
    ("election_ticks", {"election_ticks": 10.0}),
    ("snapshot_every_entries", {"snapshot_every_entries": 0}),
    ("snapshot_keep_entries", {"snapshot_keep_entries": -1}),
    ("repair_grace_s", {"repair_grace_s": 0}),
    ("proposal_timeout_s", {"proposal_timeout_s": 0}),
    ("proposal_timeout_s", {"proposal_timeout_s": 1.9}),
    ("proposal_timeout_s", {"tick_interval_s": 1.0, "proposal_timeout_s": 19.0}),
    ("replicas", {"replicas": 0}),
    ("replicas", {"replicas": None}),
    ("compression", {"compression": ["gzip"]}),
    ("compression", {"compression": ["zstd", "zstd"]}),
    ("compression", {"compression": "zstd"}),
]


@pytest.mark.parametrize(
    ("field", "kwargs"), INVALID, ids=[f"{f}-{i}" for i, (f, _) in enumerate(INVALID)]
)
def test_invalid_value_raises_config_error_naming_the_field(
    field: str, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_every_field_has_at_least_one_rule_tested() -> None:
    """A field whose rules nobody tests is a field whose rules may be missing."""
    untested = set(FIELD_NAMES) - {field for field, _ in INVALID}
    assert untested == set()


VALID: list[dict[str, object]] = [
    {"port": 0, "gossip_port": 0},
    {"port": 0},
    {"port": 65535, "gossip_port": 1},
    {"hostname": "localhost"},
    {"hostname": "node-1.example.internal", "gossip_keys": [KEY], "gossip_preset": "lan"},
    {"hostname": "my_container", "insecure_plaintext_gossip": True, "gossip_preset": "lan"},
    {"hostname": "10.0.0.5", "gossip_keys": [KEY, KEY2], "gossip_preset": "wan"},
    {"hostname": "fe80::1", "gossip_keys": [KEY], "gossip_preset": "lan"},
    {"peers_to_contact": ["10.0.0.1:7459", "[fe80::1]:7459", "node-2:7459"]},
    {"bind_host": "0.0.0.0", "hostname": "10.0.0.5", "gossip_keys": [KEY], "gossip_preset": "lan"},
    {"bind_host": "::", "hostname": "fe80::1", "gossip_keys": [KEY], "gossip_preset": "wan"},
    {"bind_host": "0.0.0.0", "insecure_plaintext_gossip": True, "gossip_preset": "lan"},
    {"bind_host": "node-1.internal", "gossip_keys": [KEY], "gossip_preset": "lan"},
    {"bind_host": "127.0.0.2", "hostname": "localhost"},  # both loopback: "local" is fine
    {"bind_host": "127.0.0.1", "gossip_port": 0},  # the same address: nothing published apart
    {"bind_host": "127.0.0.2", "gossip_port": 0, "advertise_gossip_port": 17459},
    {"port": 0, "advertise_port": 17458},
    {"advertise_port": 17458, "advertise_gossip_port": 17459},
    {"advertise_gossip_port": 7459},
    {"port": 0, "gossip_port": 0, "advertise_port": 65535, "advertise_gossip_port": 1},
    {"node_id": 1},
    {"node_id": (1 << 63) - 1},
    {"tls_ca_file": "ca.pem", "tls_cert_file": "n.pem", "tls_key_file": "n.key"},
    {
        "tls_ca_file": "ca.pem",
        "tls_cert_file": "n.pem",
        "tls_key_file": "n.key",
        "tls_bind_node_id": True,
    },
    {"election_ticks": 2, "tick_interval_s": 0.01, "proposal_timeout_s": 0.04},
    {"replicas": 1},
    {"data_center": "eu-west-1 ☁", "rack": "r" * 64},
    {"compression": ["lz4", "zstd"]},
]


@pytest.mark.parametrize("kwargs", VALID)
def test_valid_values_are_accepted(kwargs: dict[str, object]) -> None:
    Config(**kwargs)  # type: ignore[arg-type]


# -- presets --------------------------------------------------------------------------------


def diff(config: Config) -> dict[str, object]:
    base = Config.default()
    return {
        name: getattr(config, name)
        for name in FIELD_NAMES
        if getattr(config, name) != getattr(base, name)
    }


def test_default_is_the_plain_constructor() -> None:
    assert Config.default() == Config()


def test_local_preset_is_a_small_documented_diff() -> None:
    assert diff(Config.local()) == {
        "port": 0,
        "gossip_port": 0,
        "durable": False,
        "tick_interval_s": 0.05,
        "repair_grace_s": 10.0,
    }


def test_lan_preset_needs_keys_and_changes_only_the_gossip_timing() -> None:
    with pytest.raises(ConfigError) as info:
        Config.lan()
    assert info.value.field == "gossip_keys"
    lan = Config.lan(hostname="10.0.0.5", gossip_keys=[KEY])
    assert diff(lan) == {"hostname": "10.0.0.5", "gossip_keys": (KEY,), "gossip_preset": "lan"}


def test_wan_preset_compresses_follows_the_writers_and_scales_the_ticks() -> None:
    wan = Config.wan(hostname="203.0.113.7", gossip_keys=[KEY])
    assert diff(wan) == {
        "hostname": "203.0.113.7",
        "gossip_keys": (KEY,),
        "gossip_preset": "wan",
        "compression": ("zstd", "lz4"),
        "tick_interval_s": 0.2,
        "proposal_timeout_s": 60.0,
        "leader_follows_writers": True,
    }


@pytest.mark.parametrize(
    ("max_rtt_s", "tick", "proposal_timeout"),
    [(0.03, 0.2, 60.0), (0.15, 0.2, 60.0), (0.2, 0.2, 60.0), (0.5, 0.5, 60.0), (2.0, 2.0, 80.0)],
)
def test_wan_timing_is_scaled_to_the_declared_round_trip(
    max_rtt_s: float, tick: float, proposal_timeout: float
) -> None:
    wan = Config.wan(max_rtt_s=max_rtt_s, hostname="203.0.113.7", gossip_keys=[KEY])
    assert wan.tick_interval_s == pytest.approx(tick)
    election_timeout = wan.election_ticks * wan.tick_interval_s
    assert election_timeout >= 10 * max_rtt_s  # heartbeats every tick, 10 to miss
    assert wan.proposal_timeout_s == pytest.approx(proposal_timeout)


@pytest.mark.parametrize("bad", [0, -0.1, 11.0, True, "0.1", float("nan")])
def test_wan_refuses_a_round_trip_that_is_not_one(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        Config.wan(max_rtt_s=bad, hostname="203.0.113.7", gossip_keys=[KEY])  # type: ignore[arg-type]
    assert info.value.field == "max_rtt_s"


def test_leader_following_settings_are_validated() -> None:
    for name, value in (
        ("leader_follows_writers", 1),
        ("leader_follow_after_s", 0),
        ("leader_follow_after_s", float("inf")),
    ):
        with pytest.raises(ConfigError) as info:
            Config(**{name: value})  # type: ignore[arg-type]
        assert info.value.field == name
    env = {"COPYCAT_LEADER_FOLLOWS_WRITERS": "yes", "COPYCAT_LEADER_FOLLOW_AFTER_S": "2.5"}
    config = Config.from_env(environ=env)
    assert (config.leader_follows_writers, config.leader_follow_after_s) == (True, 2.5)


def test_preset_overrides_win_and_are_validated(tmp_path: pathlib.Path) -> None:
    local = Config.local(data_dir=str(tmp_path), durable=True, port=17458)
    assert (local.data_dir, local.durable, local.port, local.gossip_port) == (
        str(tmp_path),
        True,
        17458,
        0,
    )
    with pytest.raises(ConfigError) as info:
        Config.local(hostname="10.0.0.5")
    assert info.value.field == "gossip_preset"
    with pytest.raises(TypeError):
        Config.local(no_such_field=1)  # type: ignore[call-arg]


def test_preset_docstrings_give_a_reason_per_changed_value() -> None:
    for preset, config in (
        (Config.local, Config.local()),
        (Config.lan, Config.lan(hostname="10.0.0.5", gossip_keys=[KEY])),
        (Config.wan, Config.wan(hostname="10.0.0.5", gossip_keys=[KEY])),
    ):
        doc = preset.__doc__ or ""
        for name in diff(config).keys() - {"hostname", "gossip_keys"}:
            assert f"`{name}=" in doc, f"{preset.__name__} does not explain {name}"


@pytest.mark.parametrize(
    "config",
    [
        Config.default(),
        Config.local(port=7000, gossip_port=7001),
        Config.lan(hostname="10.0.0.5", gossip_keys=[KEY]),
        Config.lan(hostname="10.0.0.5", insecure_plaintext_gossip=True),
        Config.wan(
            hostname="203.0.113.7",
            gossip_keys=[KEY],
            tls_ca_file="ca",
            tls_cert_file="c",
            tls_key_file="k",
        ),
    ],
    ids=["default", "local", "lan", "lan-plaintext", "wan-tls"],
)
def test_every_preset_builds_valid_sub_configs(config: Config) -> None:
    assert isinstance(config.transport_config(7), TransportConfig)
    assert isinstance(config.membership_config(7), MembershipConfig)
    assert isinstance(config.host_config(7), HostConfig)


# -- environment ----------------------------------------------------------------------------


def test_from_env_without_variables_is_the_default() -> None:
    assert Config.from_env(environ={"PATH": "/bin", "COPYCATX": "1"}) == Config()


def test_from_env_reads_every_field() -> None:
    env = {
        "COPYCAT_HOSTNAME": "10.0.0.5",
        "COPYCAT_PORT": "17458",
        "COPYCAT_GOSSIP_PORT": "17459",
        "COPYCAT_BIND_HOST": "0.0.0.0",
        "COPYCAT_ADVERTISE_PORT": "27458",
        "COPYCAT_ADVERTISE_GOSSIP_PORT": "27459",
        "COPYCAT_DATA_DIR": "/var/lib/copycat",
        "COPYCAT_PEERS_TO_CONTACT": "10.0.0.1:7459 10.0.0.2:7459,[fe80::1]:7459",
        "COPYCAT_DATA_CENTER": "eu-1",
        "COPYCAT_RACK": "r7",
        "COPYCAT_NODE_NAME": "eu-1a",
        "COPYCAT_CLUSTER_NAME": "prod",
        "COPYCAT_NODE_ID": "42",
        "COPYCAT_TLS_CA_FILE": "ca.pem",
        "COPYCAT_TLS_CERT_FILE": "n.pem",
        "COPYCAT_TLS_KEY_FILE": "n.key",
        "COPYCAT_TLS_BIND_NODE_ID": "yes",
        "COPYCAT_GOSSIP_KEYS": f"{KEY},{KEY2}",
        "COPYCAT_INSECURE_PLAINTEXT_GOSSIP": "no",
        "COPYCAT_DURABLE": "False",
        "COPYCAT_TICK_INTERVAL_S": "0.2",
        "COPYCAT_ELECTION_TICKS": "12",
        "COPYCAT_SNAPSHOT_EVERY_ENTRIES": "500",
        "COPYCAT_SNAPSHOT_KEEP_ENTRIES": "20",
        "COPYCAT_REPAIR_GRACE_S": "4.5",
        "COPYCAT_PROPOSAL_TIMEOUT_S": "45.5",
        "COPYCAT_REPLICAS": "5",
        "COPYCAT_GOSSIP_PRESET": "lan",
        "COPYCAT_COMPRESSION": " lz4 ",
        "COPYCAT_LEADER_FOLLOWS_WRITERS": "on",
        "COPYCAT_LEADER_FOLLOW_AFTER_S": "7.5",
        "COPYCAT_HTTP_PORT": "17460",
        "COPYCAT_LOG_FORMAT": "json",
    }
    assert {name.removeprefix("COPYCAT_").lower() for name in env} == set(FIELD_NAMES)
    c = Config.from_env(environ=env)
    assert c == Config(
        hostname="10.0.0.5",
        port=17458,
        gossip_port=17459,
        bind_host="0.0.0.0",
        advertise_port=27458,
        advertise_gossip_port=27459,
        data_dir="/var/lib/copycat",
        peers_to_contact=("10.0.0.1:7459", "10.0.0.2:7459", "[fe80::1]:7459"),
        data_center="eu-1",
        rack="r7",
        node_name="eu-1a",
        cluster_name="prod",
        node_id=42,
        tls_ca_file="ca.pem",
        tls_cert_file="n.pem",
        tls_key_file="n.key",
        tls_bind_node_id=True,
        gossip_keys=(KEY, KEY2),
        insecure_plaintext_gossip=False,
        durable=False,
        tick_interval_s=0.2,
        election_ticks=12,
        snapshot_every_entries=500,
        snapshot_keep_entries=20,
        repair_grace_s=4.5,
        proposal_timeout_s=45.5,
        replicas=5,
        gossip_preset="lan",
        compression=("lz4",),
        leader_follows_writers=True,
        leader_follow_after_s=7.5,
        http_port=17460,
        log_format="json",
    )


def test_from_env_empty_optional_values_keep_the_base() -> None:
    c = Config.from_env(environ={"COPYCAT_NODE_ID": "", "COPYCAT_TLS_CA_FILE": " "})
    assert c.node_id is None
    assert c.tls_ca_file is None
    empty = {
        "COPYCAT_BIND_HOST": "",
        "COPYCAT_ADVERTISE_PORT": " ",
        "COPYCAT_ADVERTISE_GOSSIP_PORT": "",
    }
    c = Config.from_env(environ=empty)
    assert (c.bind_host, c.advertise_port, c.advertise_gossip_port) == (None, None, None)
    base = Config(advertise_port=17458)
    assert Config.from_env(environ=empty, base=base) == base


def test_from_env_starts_from_a_base_and_takes_a_prefix() -> None:
    base = Config.lan(hostname="10.0.0.5", gossip_keys=[KEY])
    c = Config.from_env("NODE_", environ={"NODE_PORT": "9000", "COPYCAT_PORT": "1"}, base=base)
    assert c == dataclasses.replace(base, port=9000)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"COPYCAT_PORT": "seven"}, "port"),
        ({"COPYCAT_PORT": "70000"}, "port"),
        ({"COPYCAT_NODE_ID": "0x10"}, "node_id"),
        ({"COPYCAT_TICK_INTERVAL_S": "fast"}, "tick_interval_s"),
        ({"COPYCAT_DURABLE": "maybe"}, "durable"),
        ({"COPYCAT_ADVERTISE_PORT": "http"}, "advertise_port"),
        ({"COPYCAT_ADVERTISE_PORT": "0"}, "advertise_port"),
        ({"COPYCAT_ADVERTISE_GOSSIP_PORT": "-1"}, "advertise_gossip_port"),
        ({"COPYCAT_BIND_HOST": "not a host"}, "bind_host"),
        ({"COPYCAT_BIND_HOST": "0.0.0.0"}, "gossip_preset"),  # a wildcard is not loopback
        ({"COPYCAT_GOSSIP_PRESET": "lan"}, "gossip_keys"),
        ({"COPYCAT_GOSIP_PORT": "7459"}, "COPYCAT_GOSIP_PORT"),
    ],
)
def test_from_env_refuses_bad_values_and_unknown_variables(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env(environ=env)
    assert info.value.field == field


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYCAT_RACK", "r9")
    assert Config.from_env().rack == "r9"


# -- sub-configs ----------------------------------------------------------------------------


def test_transport_config_maps_address_cluster_tls_and_compression() -> None:
    c = Config(
        hostname="localhost",
        port=17458,
        cluster_name="prod",
        tls_ca_file="ca.pem",
        tls_cert_file="n.pem",
        tls_key_file="n.key",
        compression=["zstd"],
    )
    t = c.transport_config(9)
    assert (t.node_id, t.host, t.port, t.cluster_name, t.compression) == (
        9,
        "localhost",
        17458,
        "prod",
        ("zstd",),
    )
    assert t.tls == TLSConfig(ca_file="ca.pem", cert_file="n.pem", key_file="n.key")
    assert Config().transport_config(9).tls is None
    assert Config(bind_host="127.0.0.2").transport_config(9).host == "127.0.0.2"


def test_membership_config_maps_gossip_identity_and_placement_labels() -> None:
    c = Config(
        hostname="10.0.0.5",
        port=17458,
        gossip_port=17459,
        peers_to_contact=["10.0.0.1:7459"],
        gossip_keys=[KEY],
        gossip_preset="wan",
        data_center="eu-1",
        rack="r7",
        cluster_name="prod",
    )
    m = c.membership_config(9)
    assert (m.node_id, m.gossip_host, m.gossip_port) == (9, "10.0.0.5", 17459)
    assert m.peers_to_contact == ("10.0.0.1:7459",)
    assert m.encryption_keys == (KEY,)
    assert (m.preset, m.cluster_name, m.data_center, m.rack) == ("wan", "prod", "eu-1", "r7")
    assert m.transport_address == "10.0.0.5:17458"
    assert m.insecure_plaintext is False
    plain = Config(hostname="10.0.0.5", gossip_preset="lan", insecure_plaintext_gossip=True)
    assert plain.membership_config(9).insecure_plaintext is True


def test_bind_host_is_bound_and_hostname_published_with_the_advertised_ports() -> None:
    c = Config.lan(
        hostname="10.0.0.5",
        bind_host="0.0.0.0",
        port=7458,
        gossip_port=7459,
        advertise_port=30458,
        advertise_gossip_port=30459,
        gossip_keys=[KEY],
    )
    t = c.transport_config(9)
    assert (t.host, t.port) == ("0.0.0.0", 7458)  # what the transport listens on
    m = c.membership_config(9)
    assert (m.gossip_host, m.gossip_port) == ("0.0.0.0", 7459)  # what gossip binds
    assert m.gossip_advertise == "10.0.0.5:30459"  # what gossip publishes
    assert m.transport_address == "10.0.0.5:30458"  # what raft peers dial
    assert c.membership_config(9, transport_port=7458).transport_address == "10.0.0.5:30458"


def test_published_ports_default_to_the_bound_ones() -> None:
    c = Config.lan(hostname="10.0.0.5", bind_host="0.0.0.0", gossip_keys=[KEY])
    m = c.membership_config(9)
    assert (m.gossip_host, m.gossip_port, m.gossip_advertise) == ("0.0.0.0", 7459, "10.0.0.5:7459")
    assert m.transport_address == "10.0.0.5:7458"
    # The port the OS picked for the transport is published when none is advertised.
    picked = Config.lan(hostname="10.0.0.5", bind_host="0.0.0.0", port=0, gossip_keys=[KEY])
    assert picked.transport_config(9).port == 0
    assert picked.membership_config(9, transport_port=40123).transport_address == "10.0.0.5:40123"
    # An advertised transport port needs no bound port: it is what is published.
    fixed = Config(port=0, advertise_port=17458)
    assert fixed.membership_config(9).transport_address == "127.0.0.1:17458"


def test_gossip_is_advertised_apart_only_when_the_address_differs() -> None:
    assert Config().membership_config(9).gossip_advertise is None
    same = Config(hostname="127.0.0.1", bind_host="127.0.0.1", gossip_port=0)
    assert same.membership_config(9, transport_port=1).gossip_advertise is None
    assert Config(advertise_gossip_port=7459).membership_config(9).gossip_advertise is None
    moved = Config(advertise_gossip_port=17459).membership_config(9)
    assert (moved.gossip_host, moved.gossip_port) == ("127.0.0.1", 7459)
    assert moved.gossip_advertise == "127.0.0.1:17459"
    picked = Config(bind_host="127.0.0.2", gossip_port=0, advertise_gossip_port=17459)
    assert picked.membership_config(9).gossip_advertise == "127.0.0.1:17459"
    six = Config.lan(hostname="fe80::1", bind_host="::", gossip_keys=[KEY])
    m = six.membership_config(9)
    assert (m.gossip_host, m.gossip_advertise, m.transport_address) == (
        "::",
        "[fe80::1]:7459",
        "[fe80::1]:7458",
    )


def test_gossip_port_0_apart_from_the_bind_is_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigError) as info:
        Config.local(hostname="127.0.0.11", bind_host="127.0.0.1")
    assert info.value.field == "advertise_gossip_port"
    assert "cannot publish a port the OS picks" in str(info.value)
    assert "gossip_port" in str(info.value)


LOOPBACK_RULE = [
    # (hostname, bind_host, on loopback)
    ("127.0.0.1", None, True),
    ("localhost", None, True),
    ("::1", None, True),
    ("127.0.0.11", "127.0.0.1", True),
    ("localhost", "::1", True),
    ("10.0.0.5", None, False),
    ("127.0.0.11", "0.0.0.0", False),  # a wildcard bind takes packets from every network
    ("::1", "::", False),
    ("127.0.0.1", "10.0.0.5", False),  # bound off loopback
    ("10.0.0.5", "127.0.0.1", False),  # published off loopback: peers are elsewhere
]


@pytest.mark.parametrize(("hostname", "bind_host", "loopback"), LOOPBACK_RULE)
def test_loopback_rule_judges_the_published_and_the_bound_address(
    hostname: str, bind_host: str | None, loopback: bool
) -> None:
    """Plaintext gossip with the "local" preset is allowed exactly on loopback, and the
    membership layer, judging its own bind and published address, agrees."""
    if loopback:
        c = Config(hostname=hostname, bind_host=bind_host)
        assert c.gossip_preset == "local"
        assert c.membership_config(9).preset == "local"
    else:
        with pytest.raises(ConfigError) as info:
            Config(hostname=hostname, bind_host=bind_host)
        assert info.value.field == "gossip_preset"
        with pytest.raises(ConfigError) as info:
            Config(hostname=hostname, bind_host=bind_host, gossip_preset="lan")
        assert info.value.field == "gossip_keys"
        c = Config.lan(hostname=hostname, bind_host=bind_host, gossip_keys=[KEY])
        m = c.membership_config(9)
        with pytest.raises(ConfigError) as info:
            dataclasses.replace(m, preset="local", encryption_keys=())
        assert info.value.field == "preset"


def test_membership_config_needs_the_bound_port_when_the_os_picks_it() -> None:
    c = Config(port=0)
    with pytest.raises(ConfigError) as info:
        c.membership_config(9)
    assert info.value.field == "port"
    assert c.membership_config(9, transport_port=40123).transport_address == "127.0.0.1:40123"
    with pytest.raises(ConfigError):
        c.membership_config(9, transport_port=70000)


def test_host_config_maps_tuning_and_derives_the_retry_interval() -> None:
    h = Config(
        tick_interval_s=0.05, election_ticks=20, snapshot_every_entries=77, proposal_timeout_s=9
    ).host_config(9)
    assert (h.node_id, h.tick_interval_s, h.election_ticks) == (9, 0.05, 20)
    assert (h.snapshot_every_entries, h.proposal_timeout_s) == (77, 9)
    assert h.proposal_retry_s == 1.0  # max(1 s, one election timeout of 1 s)
    wan = Config.wan(hostname="10.0.0.5", gossip_keys=[KEY]).host_config(9)
    assert wan.proposal_retry_s == pytest.approx(2.0)  # one election timeout: 10 x 0.2 s
    quick = Config(tick_interval_s=0.01, election_ticks=2, proposal_timeout_s=0.5).host_config(9)
    assert quick.proposal_retry_s == 0.5  # never beyond the proposal timeout
    assert quick.quiesce_after_ticks == 1  # the host wants quiescence before an election


def test_node_id_resolution() -> None:
    with pytest.raises(ConfigError) as info:
        Config().host_config()
    assert info.value.field == "node_id"
    assert "node_id" in str(info.value)
    assert Config(node_id=5).host_config().node_id == 5
    assert Config(node_id=5).transport_config(5).node_id == 5
    with pytest.raises(ConfigError):
        Config(node_id=5).membership_config(6)
    with pytest.raises(ConfigError):
        Config().transport_config(0)


def test_open_log_store_opens_under_data_dir(tmp_path: pathlib.Path) -> None:
    config = Config(data_dir=str(tmp_path / "node"), durable=False)
    assert config.log_store_dir == tmp_path / "node" / "raft"
    store = config.open_log_store()
    try:
        assert (tmp_path / "node" / "raft").is_dir()
    finally:
        store.close()

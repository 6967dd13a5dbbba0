# The deployment files of deploy/, checked without a cluster and without starting a
# node: every Kubernetes document against the Kubernetes schemas (kubernetes-validate,
# strict), the `copycat node` flags of the StatefulSet and of the systemd unit through
# the real parser and `Config` (so they cannot drift from the command line), and the
# wiring between the pieces: probes, selectors, ports, secret files, grace periods, the
# image's user and entrypoint, and the README's secret and certificate commands.
from __future__ import annotations

import argparse
import configparser
import re
import shlex
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import kubernetes_validate
import pytest
import yaml

from copycat import Config
from copycat._node import DEFAULT_LEAVE_TIMEOUT_S
from copycat.cli import main
from copycat.cli._node_cmd import add_arguments, build_config
from copycat.cli._runtime import SHUTDOWN_TIMEOUT_S
from copycat.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

pytestmark = pytest.mark.timeout(60)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFEST = DEPLOY / "kubernetes" / "copycat.yaml"
UNIT = DEPLOY / "systemd" / "copycat.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "env.example"

KUBERNETES_VERSION = "1.33"
"""A recent release that kubernetes-validate ships schemas for."""

KEY = "A" * 43 + "="  # base64 of 32 bytes
MARGIN_S = 5.0
"""Slack between the end of a clean shutdown and the SIGKILL that ends the grace."""

# What the downward API gives the pod, by field path: sample values.
SAMPLE_FIELDS = {
    "status.podIP": "10.244.1.7",
    "metadata.namespace": "prod",
    "spec.nodeName": "worker-2",
    "metadata.name": "copycat-1",
}


# -- helpers ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """The `copycat node` flags, failing the test (instead of exiting) on a bad flag."""

    def error(self, message: str) -> NoReturn:
        raise AssertionError(f"copycat node refuses these flags: {message}")


def parse_node_flags(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="copycat node")
    add_arguments(parser)
    return parser.parse_args(argv)


def documents() -> list[dict[str, Any]]:
    with MANIFEST.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def only(kind: str) -> dict[str, Any]:
    found = [doc for doc in documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in {MANIFEST.name}, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = only("StatefulSet")["spec"]["template"]["spec"]
    return spec


def node_container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert [c["name"] for c in containers] == ["copycat"]
    container: dict[str, Any] = containers[0]
    return container


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's variables as the kubelet sets them, downward API values from
    `SAMPLE_FIELDS`."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert path in SAMPLE_FIELDS, f"{var['name']}: no sample value for {path}"
            env[var["name"]] = SAMPLE_FIELDS[path]
    return env


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in `args` and `env` values (`$$` escapes), with the
    difference that a reference to an undefined variable fails here: the kubelet would
    pass it on literally, which is never what the manifest means."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        assert name in env, f"$({name}) is not a variable of the container"
        return env[name]

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def container_ports(container: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["containerPort"], p.get("protocol", "TCP")) for p in container["ports"]}


def mounted_files(spec: Mapping[str, Any], container: Mapping[str, Any]) -> set[str]:
    """The paths of the files that the container's secret volumes provide."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    files = set()
    for mount in container["volumeMounts"]:
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is not None:
            assert "items" in secret, f"volume {mount['name']}: list the files it provides"
            files |= {f"{mount['mountPath']}/{item['path']}" for item in secret["items"]}
    return files


def statefulset_node(tmp_path: Path) -> tuple[argparse.Namespace, Config]:
    """The StatefulSet's `copycat node` flags with the variables expanded, parsed, and
    the `Config` they build in the container's environment (the gossip keys file read
    from a stand-in holding `KEY`)."""
    container = node_container()
    env = container_env(container)
    argv = [expand(arg, env) for arg in container["args"]]
    args = parse_node_flags(argv)
    assert args.gossip_keys_file is not None
    assert str(args.gossip_keys_file) in mounted_files(pod_spec(), container)
    keys = tmp_path / "gossip.keys"
    keys.write_text(f"# stand-in for the copycat-gossip Secret\n{KEY}\n", encoding="utf-8")
    args.gossip_keys_file = keys
    return args, build_config(args, env)


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNIT, encoding="utf-8")
    return parser


def unit_node_flags() -> list[str]:
    argv = shlex.split(unit()["Service"]["ExecStart"])
    assert argv[:2] == ["/usr/local/bin/copycat", "node"]
    return argv[2:]


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """The variables env.example sets, and those it shows commented out."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for number, raw in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if match := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=(.*)", line):
            target = commented
        elif match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            target = active
        else:
            assert line.startswith("#"), f"env.example line {number} is no setting: {raw!r}"
            continue
        name, value = match.groups()
        assert name not in active, f"{name} listed twice"
        assert name not in commented, f"{name} listed twice"
        target[name] = value
    return active, commented


def field_variables() -> set[str]:
    return {f"COPYCAT_{f.name.upper()}" for f in fields(Config)}


# -- Kubernetes: schemas ----------------------------------------------------------------


def test_the_manifest_holds_the_service_statefulset_and_budget() -> None:
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds == ["PodDisruptionBudget", "Service", "StatefulSet"]


@pytest.mark.parametrize("kind", ["Service", "StatefulSet", "PodDisruptionBudget"])
def test_every_document_is_valid_against_the_kubernetes_schemas(kind: str) -> None:
    # strict: a field the schema does not know (a typo) fails too.
    assert kubernetes_validate.validate(only(kind), KUBERNETES_VERSION, strict=True) == (
        KUBERNETES_VERSION
    )


def test_the_schema_check_catches_a_misspelt_field() -> None:
    statefulset = only("StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


# -- Kubernetes: the node's flags -------------------------------------------------------


def test_statefulset_flags_build_a_valid_config(tmp_path: Path) -> None:
    args, config = statefulset_node(tmp_path)
    statefulset, service = only("StatefulSet"), only("Service")
    ports = container_ports(node_container())
    pod_ip = SAMPLE_FIELDS["status.podIP"]
    # Bind everything, publish the pod IP (kinship takes IP addresses only).
    assert (config.hostname, config.bind_host) == (pod_ip, "0.0.0.0")
    assert config.membership_config(1).transport_address == f"{pod_ip}:{config.port}"
    assert (config.gossip_preset, config.gossip_keys) == ("lan", (KEY,))
    assert config.insecure_plaintext_gossip is False
    # The seeds are the pods' DNS names under the headless Service, at the gossip port.
    namespace = SAMPLE_FIELDS["metadata.namespace"]
    name, service_name = statefulset["metadata"]["name"], service["metadata"]["name"]
    assert statefulset["spec"]["serviceName"] == service_name
    assert tuple(config.peers_to_contact) == tuple(
        f"{name}-{i}.{service_name}.{namespace}.svc.cluster.local:{config.gossip_port}"
        for i in range(statefulset["spec"]["replicas"])
    )
    # Failure domains from the environment; the id is generated and kept in the data dir.
    assert (config.data_center, config.rack) == ("dc1", SAMPLE_FIELDS["spec.nodeName"])
    assert config.node_id is None
    data_mounts = [m for m in node_container()["volumeMounts"] if m["name"] == "data"]
    assert [m["mountPath"] for m in data_mounts] == [config.data_dir]
    assert config.durable is True
    # Mutual TLS from the Secret volume.
    mounted = mounted_files(pod_spec(), node_container())
    tls = (config.tls_ca_file, config.tls_cert_file, config.tls_key_file)
    assert all(path in mounted for path in tls), tls
    # The ports the node listens on are the container's.
    assert ports["transport"] == (config.port, "TCP")
    assert ports["gossip-tcp"] == (config.gossip_port, "TCP")
    assert ports["gossip-udp"] == (config.gossip_port, "UDP")
    assert ports["http"] == (config.http_port, "TCP")
    assert config.log_format == "json"
    assert args.leave_on_exit is True


def test_termination_grace_covers_the_leave_and_the_clean_shutdown(tmp_path: Path) -> None:
    args, _ = statefulset_node(tmp_path)
    leave_s = DEFAULT_LEAVE_TIMEOUT_S if args.leave_timeout_s is None else args.leave_timeout_s
    grace_s = pod_spec()["terminationGracePeriodSeconds"]
    assert grace_s >= leave_s + SHUTDOWN_TIMEOUT_S + MARGIN_S
    # No preStop hook: the SIGTERM starts the leave (the manifest says why).
    assert "lifecycle" not in node_container()


def test_probes_point_at_the_http_port_and_health_paths(tmp_path: Path) -> None:
    _, config = statefulset_node(tmp_path)
    container = node_container()
    ports = container_ports(container)
    expected = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        port = get["port"]
        number = ports[port][0] if isinstance(port, str) else port
        assert (get["path"], number, get.get("scheme", "HTTP")) == (path, config.http_port, "HTTP")


def test_the_service_is_headless_and_selects_the_pods() -> None:
    service, statefulset = only("Service"), only("StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    spec = service["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert spec["selector"].items() <= labels.items()
    # Each port reaches a container port of the same number and protocol.
    ports = container_ports(node_container())
    for port in spec["ports"]:
        number, protocol = ports[port["targetPort"]]
        assert (port["port"], port.get("protocol", "TCP")) == (number, protocol)
    assert {(p["port"], p["protocol"]) for p in spec["ports"]} == {
        (7458, "TCP"),
        (7459, "TCP"),
        (7459, "UDP"),
        (7460, "TCP"),
    }


def test_the_disruption_budget_selects_the_statefulset_pods() -> None:
    budget, statefulset = only("PodDisruptionBudget"), only("StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == statefulset["spec"]["selector"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_pods_are_hardened_spread_and_scraped() -> None:
    statefulset = only("StatefulSet")
    spec, container = pod_spec(), node_container()
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    # Service links would inject COPYCAT_*_SERVICE_HOST and the like, which the node
    # refuses as unknown settings.
    assert spec["enableServiceLinks"] is False
    assert set(container["resources"]) == {"requests", "limits"}
    terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    keys = {term["podAffinityTerm"]["topologyKey"] for term in terms}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for term in terms:
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    http_port = container_ports(container)["http"][0]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(http_port),
        "prometheus.io/path": "/metrics",
    }


def test_the_dockerfile_runs_copycat_node_as_the_pods_user() -> None:
    lines = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
    instructions = [line.split(None, 1) for line in lines if line and not line[0].isspace()]
    instructions = [i for i in instructions if not i[0].startswith("#")]
    by_name: dict[str, list[str]] = {}
    for name, rest in instructions:
        by_name.setdefault(name, []).append(rest.strip())
    assert by_name["FROM"] == ["python:3.11-slim"]
    assert by_name["ENTRYPOINT"] == ['["copycat", "node"]']
    user, _, group = by_name["USER"][-1].partition(":")
    security = pod_spec()["securityContext"]
    assert (int(user), int(group)) == (security["runAsUser"], security["runAsGroup"])
    exposed = {tuple(p.split("/")) for rest in by_name["EXPOSE"] for p in rest.split()}
    ports = {(str(n), proto.lower()) for n, proto in container_ports(node_container()).values()}
    assert exposed == ports
    # The container keeps the image's ENTRYPOINT: its args are the node's flags.
    container = node_container()
    assert "command" not in container
    assert container["image"] == "copycat:latest"


# -- the README's commands --------------------------------------------------------------


def test_the_readme_makes_the_secrets_the_pods_mount() -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    made: dict[str, set[str]] = {}
    for line in text.splitlines():
        if match := re.search(r"create secret generic (\S+)(.*)", line):
            made[match.group(1)] = set(re.findall(r"--from-file=([^=\s]+)=", match.group(2)))
    for volume in pod_spec()["volumes"]:
        if "secret" in volume:
            secret = volume["secret"]
            keys = {item["key"] for item in secret["items"]}
            assert made.get(secret["secretName"]) == keys, secret["secretName"]


def test_the_readme_certificate_commands_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^(copycat certs node .*)$", text, flags=re.MULTILINE)
    assert len(commands) == 2  # Kubernetes and systemd
    for number, command in enumerate(commands):
        workdir = tmp_path / str(number)
        workdir.mkdir()
        monkeypatch.chdir(workdir)
        assert main(["certs", "ca", "--out", "pki"]) == 0
        assert main(shlex.split(command)[1:]) == 0, capsys.readouterr().err
        assert (workdir / "pki" / "node-1.pem").is_file()
        assert (workdir / "pki" / "node-1.key").is_file()


# -- systemd ------------------------------------------------------------------------------


def test_the_systemd_unit_has_the_service_settings() -> None:
    service = unit()["Service"]
    expected = {
        "Type": "exec",
        "User": "copycat",
        "EnvironmentFile": "/etc/copycat/env",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "150",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/copycat",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "--leave-on-exit" in unit_node_flags()
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_systemd_stop_timeout_covers_the_leave_and_the_clean_shutdown() -> None:
    args = parse_node_flags(unit_node_flags())
    assert args.leave_on_exit is True
    leave_s = DEFAULT_LEAVE_TIMEOUT_S if args.leave_timeout_s is None else args.leave_timeout_s
    assert float(unit()["Service"]["TimeoutStopSec"]) >= leave_s + SHUTDOWN_TIMEOUT_S + MARGIN_S


def test_every_env_example_variable_is_a_config_field() -> None:
    active, commented = env_example()
    assert set(active) | set(commented) <= field_variables()
    # The commented-out ones are valid values too: switched on together, with the
    # gossip key filled in, they still make a valid Config.
    env = {**active, **commented, "COPYCAT_GOSSIP_KEYS": KEY}
    config = Config.from_env(environ=env, base=Config.lan(gossip_keys=[KEY]))
    assert config.bind_host == commented["COPYCAT_BIND_HOST"]


def test_the_unit_and_env_example_build_a_valid_config() -> None:
    active, _ = env_example()
    args = parse_node_flags(unit_node_flags())
    config = build_config(args, {**active, "COPYCAT_GOSSIP_KEYS": KEY})
    service = unit()["Service"]
    assert config.data_dir == service["ReadWritePaths"] == "/var/lib/" + service["StateDirectory"]
    assert config.gossip_preset == "lan"
    assert config.hostname == active["COPYCAT_HOSTNAME"]
    assert (config.node_id, config.tls_bind_node_id) == (1, True)
    assert config.tls_cert_file is not None
    assert config.tls_cert_file.endswith(f"node-{config.node_id}.pem")
    assert config.http_port == 7460


def test_an_unedited_env_example_refuses_to_start_without_a_gossip_key() -> None:
    active, _ = env_example()
    assert active["COPYCAT_GOSSIP_KEYS"] == ""
    with pytest.raises(ConfigError, match="gossip keys are required"):
        build_config(parse_node_flags(unit_node_flags()), active)

# `copycat certs ca | node`, run in-process through `main()`: the files it writes, the
# certificates' contents checked with cryptography's own verifier, every refusal, and
# two transport endpoints whose mutual TLS (with `bind_node_id`) runs on its output.
from __future__ import annotations

import asyncio
import ipaddress
import stat
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from copycat.cli import main
from copycat.transport import TLSConfig, TransportConfig
from tests.transport.conftest import Collector, append, endpoints, eventually

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)


def certs(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `copycat certs ARGV...`: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["certs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def make_ca(capsys: pytest.CaptureFixture[str], ca_dir: Path, *extra: str) -> None:
    code, _, err = certs(capsys, "ca", "--out", str(ca_dir), *extra)
    assert (code, err) == (0, "")


def make_node(
    capsys: pytest.CaptureFixture[str], ca_dir: Path, out: Path, node_id: int, *hosts: str
) -> None:
    host_flags = [f for h in hosts or ("127.0.0.1",) for f in ("--host", h)]
    code, _, err = certs(
        capsys,
        "node",
        "--ca",
        str(ca_dir),
        "--out",
        str(out),
        "--node-id",
        str(node_id),
        *host_flags,
    )
    assert (code, err) == (0, "")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_refused(code: int, out: str, err: str, *words: str) -> None:
    """Exit 2, nothing written to stdout, one line on stderr naming the problem."""
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


# -- the CA ----------------------------------------------------------------------------------


def test_ca_is_a_self_signed_p256_ca_that_signs_certificates_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = certs(capsys, "ca", "--out", str(tmp_path / "ca"), "--days", "30")
    assert (code, err) == (0, "")
    ca_pem, ca_key = tmp_path / "ca" / "ca.pem", tmp_path / "ca" / "ca.key"
    assert f"wrote {ca_pem}" in out
    assert f"wrote {ca_key}" in out
    assert "copycat certs node --ca" in out
    assert mode(ca_key) == 0o600
    ca = load(ca_pem)
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CopyCat cluster CA"
    ca.verify_directly_issued_by(ca)
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.key_cert_sign, usage.crl_sign, usage.digital_signature) == (True, True, False)
    assert 29 <= (ca.not_valid_after_utc - ca.not_valid_before_utc).days <= 30


def test_ca_takes_its_name_from_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ca(capsys, tmp_path, "--name", "Acme replication CA")
    ca = load(tmp_path / "ca.pem")
    assert ca.subject.rfc4514_string() == "CN=Acme replication CA"


# -- node certificates ------------------------------------------------------------------------


def test_node_certificate_names_the_node_and_its_hosts_and_verifies_against_the_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir, out_dir = tmp_path / "ca", tmp_path / "node"
    make_ca(capsys, ca_dir)
    code, out, err = certs(
        capsys,
        "node",
        "--ca",
        str(ca_dir),
        "--out",
        str(out_dir),
        "--node-id",
        "7",
        "--host",
        "203.0.113.7",
        "--host",
        "n7.dc2.example",
        "--host",
        "2001:db8::7",
        "--host",
        "n7.dc2.example",  # given twice, listed once
    )
    assert (code, err) == (0, "")
    pem, key = out_dir / "node-7.pem", out_dir / "node-7.key"
    assert mode(key) == 0o600
    for flag in ("--tls-ca-file", "--tls-cert-file", "--tls-key-file", "--tls-bind-node-id"):
        assert flag in out
    assert f"wrote {pem}" in out
    assert f"wrote {key}" in out
    assert "--node-id 7" in out

    ca, cert = load(ca_dir / "ca.pem"), load(pem)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["node-7"]
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME) == []
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [
        x509.IPAddress(ipaddress.ip_address("203.0.113.7")),
        x509.DNSName("n7.dc2.example"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False

    # The node is a TLS server by each of its hosts and a TLS client, under this CA only.
    store = Store([ca])
    for host in (
        x509.IPAddress(ipaddress.ip_address("203.0.113.7")),
        x509.DNSName("n7.dc2.example"),
    ):
        PolicyBuilder().store(store).build_server_verifier(host).verify(cert, [])
    client = PolicyBuilder().store(store).build_client_verifier().verify(cert, [])
    assert client.chain[-1] == ca
    make_ca(capsys, tmp_path / "other")
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(
            Store([load(tmp_path / "other" / "ca.pem")])
        ).build_client_verifier().verify(cert, [])


def test_node_name_is_the_subjects_organizational_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ca(capsys, tmp_path)
    code, _, err = certs(
        capsys,
        *("node", "--ca", str(tmp_path), "--out", str(tmp_path), "--node-id", "3"),
        *("--host", "10.0.0.3", "--name", "frankfurt-1"),
    )
    assert (code, err) == (0, "")
    cert = load(tmp_path / "node-3.pem")
    assert cert.subject.rfc4514_string() == "OU=frankfurt-1,CN=node-3"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []  # the name is not a host


# -- refusals ---------------------------------------------------------------------------------


def test_ca_files_are_not_overwritten_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ca(capsys, tmp_path)
    before = (tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca.key").read_bytes()
    assert_refused(*certs(capsys, "ca", "--out", str(tmp_path)), "ca.pem", "--force")
    assert ((tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca.key").read_bytes()) == before
    make_ca(capsys, tmp_path, "--force")
    assert (tmp_path / "ca.pem").read_bytes() != before[0]
    assert mode(tmp_path / "ca.key") == 0o600


def test_node_files_are_not_overwritten_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ca(capsys, tmp_path)
    make_node(capsys, tmp_path, tmp_path, 5)
    before = (tmp_path / "node-5.pem").read_bytes()
    (tmp_path / "node-5.pem").unlink()  # only the key is left: still refused
    argv = (
        "node",
        "--ca",
        str(tmp_path),
        "--out",
        str(tmp_path),
        "--node-id",
        "5",
        "--host",
        "::1",
    )
    assert_refused(*certs(capsys, *argv), "node-5.key", "--force")
    assert not (tmp_path / "node-5.pem").exists()
    code, _, err = certs(capsys, *argv, "--force")
    assert (code, err) == (0, "")
    assert (tmp_path / "node-5.pem").read_bytes() != before
    assert mode(tmp_path / "node-5.key") == 0o600


def test_a_missing_ca_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("node", "--ca", str(tmp_path), "--out", str(tmp_path / "n"), "--node-id", "1")
    assert_refused(*certs(capsys, *argv, "--host", "10.0.0.1"), "no CA in", "ca.pem", "ca.key")
    make_ca(capsys, tmp_path)
    (tmp_path / "ca.key").unlink()
    assert_refused(*certs(capsys, *argv, "--host", "10.0.0.1"), "ca.key missing")
    assert not (tmp_path / "n").exists()


def test_a_certificate_that_is_no_ca_or_a_key_that_is_not_its_own_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ca(capsys, tmp_path / "ca")
    make_ca(capsys, tmp_path / "other")
    make_node(capsys, tmp_path / "ca", tmp_path / "ca", 1)
    argv = ("node", "--out", str(tmp_path / "n"), "--node-id", "2", "--host", "10.0.0.2")

    wrong_key = tmp_path / "wrong-key"
    wrong_key.mkdir()
    (wrong_key / "ca.pem").write_bytes((tmp_path / "ca" / "ca.pem").read_bytes())
    (wrong_key / "ca.key").write_bytes((tmp_path / "other" / "ca.key").read_bytes())
    assert_refused(*certs(capsys, *argv, "--ca", str(wrong_key)), "is not the key of")

    not_a_ca = tmp_path / "not-a-ca"
    not_a_ca.mkdir()
    (not_a_ca / "ca.pem").write_bytes((tmp_path / "ca" / "node-1.pem").read_bytes())
    (not_a_ca / "ca.key").write_bytes((tmp_path / "ca" / "node-1.key").read_bytes())
    assert_refused(*certs(capsys, *argv, "--ca", str(not_a_ca)), "not a CA certificate")

    (not_a_ca / "ca.pem").write_text("not a certificate\n")
    assert_refused(*certs(capsys, *argv, "--ca", str(not_a_ca)), "not a PEM certificate")


@pytest.mark.parametrize("node_id", ["0", "-3", str(1 << 63)])
def test_a_node_id_out_of_range_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node_id: str
) -> None:
    make_ca(capsys, tmp_path)
    argv = ("node", "--ca", str(tmp_path), "--out", str(tmp_path), "--node-id", node_id)
    assert_refused(*certs(capsys, *argv, "--host", "10.0.0.1"), "--node-id", "2**63 - 1", node_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem"]


def test_the_largest_node_id_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ca(capsys, tmp_path)
    make_node(capsys, tmp_path, tmp_path, (1 << 63) - 1)
    cert = load(tmp_path / f"node-{(1 << 63) - 1}.pem")
    assert cert.subject.rfc4514_string() == f"CN=node-{(1 << 63) - 1}"


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("10.0.0.7:7458", "without a port"),
        ("[2001:db8::1]:7458", "without a port"),
        ("under_score.example", ""),
        ("-dash.example", ""),
        ("a..example", ""),
        ("10.0.0.256", ""),
        ("fe80::1%eth0", ""),
        ("bücher.example", "xn--"),
        ("", ""),
    ],
)
def test_an_invalid_host_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str, hint: str
) -> None:
    make_ca(capsys, tmp_path)
    argv = ("node", "--ca", str(tmp_path), "--out", str(tmp_path), "--node-id", "4")
    assert_refused(
        *certs(capsys, *argv, "--host", "10.0.0.4", f"--host={host}"), f"--host {host!r}", hint
    )
    assert not (tmp_path / "node-4.key").exists()


def test_days_out_of_range_or_beyond_the_ca_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_refused(*certs(capsys, "ca", "--out", str(tmp_path), "--days", "0"), "--days")
    assert not tmp_path.joinpath("ca.pem").exists()
    make_ca(capsys, tmp_path, "--days", "10")
    argv = ("node", "--ca", str(tmp_path), "--out", str(tmp_path), "--node-id", "1")
    assert_refused(*certs(capsys, *argv, "--host", "10.0.0.1", "--days", "11"), "expires", "--days")


# -- the transport on `copycat certs` output ---------------------------------------------------


def _tls(directory: Path, cert_of: int, **extra: bool) -> TLSConfig:
    return TLSConfig(
        ca_file=str(directory / "ca.pem"),
        cert_file=str(directory / f"node-{cert_of}.pem"),
        key_file=str(directory / f"node-{cert_of}.key"),
        bind_node_id=True,
        **extra,
    )


@pytest.mark.asyncio
async def test_endpoints_with_these_certificates_handshake_and_exchange_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ca(capsys, tmp_path)
    for node_id in (1, 2):
        make_node(capsys, tmp_path, tmp_path, node_id, "127.0.0.1", "localhost")
    inbox = Collector()
    # check_hostname as well: the dialer finds 127.0.0.1 among the certificate's hosts.
    cfgs = [
        TransportConfig(node_id=n, cluster_name="test", tls=_tls(tmp_path, n, check_hostname=True))
        for n in (1, 2)
    ]
    async with endpoints(*cfgs) as (a, b):
        b.set_message_handler(inbox)
        a.send(1, append(1, 2, 0))
        await inbox.wait(1)
        assert [(p, g) for p, g, _ in inbox.items] == [(1, 1)]
        for ep in (a, b):
            assert ep.stats().refused_total == 0
            for conn in ep.connections:
                assert conn.transport is not None
                assert conn.transport.get_extra_info("ssl_object") is not None


@pytest.mark.asyncio
async def test_a_node_presenting_another_nodes_certificate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ca(capsys, tmp_path)
    for node_id in (2, 3):
        make_node(capsys, tmp_path, tmp_path, node_id)
    inbox = Collector()
    good = TransportConfig(node_id=2, cluster_name="test", tls=_tls(tmp_path, 2))
    posing = TransportConfig(
        node_id=1, cluster_name="test", tls=_tls(tmp_path, 3), reconnect_initial_s=5.0
    )
    async with endpoints(good, posing) as (b, impostor):
        b.set_message_handler(inbox)
        impostor.set_message_handler(inbox)
        impostor.send(1, append(1, 2, 0))
        await eventually(lambda: b.stats().refused.get("certificate", 0) >= 1)
        b.send(1, append(2, 1, 0))
        await eventually(lambda: b.stats().refused.get("certificate", 0) >= 2)
        await asyncio.sleep(0.05)
        assert inbox.items == []

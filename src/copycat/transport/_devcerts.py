"""Development certificates: a throwaway cluster CA and node certificates signed by
it, for tests, benchmarks and local clusters.

What lives here: `make_dev_certs`, which writes PEM files with the `cryptography`
package (imported lazily: it is a test/dev dependency, not a runtime one).

What must not: anything production relies on. Real clusters bring certificates from
their own PKI; these keys are unencrypted and the CA key sits next to them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from copycat.transport._config import TLSConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class DevCerts:
    """Paths of the PEM files written by `make_dev_certs`."""

    ca_file: str
    ca_key_file: str
    nodes: dict[int, tuple[str, str]]
    """node id -> (cert_file, key_file)."""

    def tls(self, node_id: int) -> TLSConfig:
        cert, key = self.nodes[node_id]
        return TLSConfig(ca_file=self.ca_file, cert_file=cert, key_file=key)


def make_dev_certs(
    directory: str | Path, node_ids: list[int], *, ca_name: str = "CopyCat dev CA"
) -> DevCerts:
    """Write a new CA and one certificate per node id (CN "node-<id>", SAN 127.0.0.1
    and localhost) under `directory`; EC P-256 keys, valid for one day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = out / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    ca_key_file = out / "ca.key"
    write_key(ca_key, ca_key_file)

    import ipaddress

    nodes: dict[int, tuple[str, str]] = {}
    for node_id in node_ids:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"node-{node_id}")]))
            .issuer_name(ca_subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_file = out / f"node-{node_id}.pem"
        key_file = out / f"node-{node_id}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, key_file)
        nodes[node_id] = (str(cert_file), str(key_file))
    return DevCerts(ca_file=str(ca_file), ca_key_file=str(ca_key_file), nodes=nodes)

# `copycat certs ca | node`: a cluster CA and node certificates for mutual TLS between
# nodes (`Config.tls_*`, `copycat node --tls-*`).
#
# What lives here: the two subcommands' flags, the checks of their values, the
# certificates (EC P-256 keys, SHA-256 signatures) and the files they go to. Errors a
# user can fix are a `CertsError`: one line on stderr, exit 2.
#
# What must not: be imported by the library's layers, or import `cryptography` at module
# load (every `copycat` command parses these flags; only `copycat certs` needs it).
# Nothing is shared with `copycat.transport._devcerts`: that writes throwaway one-day
# loopback certificates for tests, in one fixed shape, and is not the place for
# checked user input or files that must not be overwritten.
"""The `copycat certs` command."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from copycat._config import MAX_NODE_ID

if TYPE_CHECKING:
    import argparse

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificateIssuerPrivateKeyTypes,
    )

__all__: Final = ["CertsError", "add_arguments", "run"]

CA_CERT_FILE: Final = "ca.pem"
CA_KEY_FILE: Final = "ca.key"
DEFAULT_CA_NAME: Final = "CopyCat cluster CA"
DEFAULT_CA_DAYS: Final = 3650
DEFAULT_NODE_DAYS: Final = 365
MAX_DAYS: Final = 36500
MAX_NAME_CHARS: Final = 64
"""X.509's upper bound on a common name and on an organizational unit name."""

KEY_MODE: Final = 0o600
CERT_MODE: Final = 0o644
BACKDATE: Final = datetime.timedelta(minutes=5)
"""Certificates start this long before they are made, so that a peer whose clock is a
little behind does not refuse a certificate made a moment ago."""

_DNS_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class CertsError(Exception):
    """A value or a file `copycat certs` cannot use; the message says which and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Written:
    cert_file: Path
    key_file: Path
    not_after: datetime.datetime
    hosts: tuple[str, ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `copycat certs ca` and `copycat certs node` under `parser`."""
    commands = parser.add_subparsers(dest="certs_command", metavar="WHAT", required=True)
    ca = commands.add_parser(
        "ca",
        help="make the cluster CA (once per cluster)",
        description="Make a cluster CA: an EC P-256 key and a self-signed CA certificate "
        f"that may sign node certificates only. Writes DIR/{CA_CERT_FILE} (give it to "
        f"every node) and DIR/{CA_KEY_FILE} (mode 0600; keep it off the nodes).",
    )
    ca.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    ca.add_argument(
        "--name",
        default=DEFAULT_CA_NAME,
        help=f"the CA's common name (default {DEFAULT_CA_NAME!r})",
    )
    ca.add_argument(
        "--days",
        type=int,
        default=DEFAULT_CA_DAYS,
        help=f"days the CA is valid (default {DEFAULT_CA_DAYS}); node certificates "
        "cannot outlive it",
    )
    ca.add_argument("--force", action="store_true", help="overwrite existing files")

    node = commands.add_parser(
        "node",
        help="make one node's certificate, signed by the CA",
        description="Make a node certificate signed by the CA in --ca: subject CN "
        "node-<id> (what --tls-bind-node-id checks), the --host addresses as subject "
        "alternative names, for TLS servers and clients. Writes DIR/node-<id>.pem and "
        "DIR/node-<id>.key (mode 0600).",
    )
    node.add_argument(
        "--ca",
        type=Path,
        required=True,
        metavar="DIR",
        help=f"directory holding {CA_CERT_FILE} and {CA_KEY_FILE} (from `copycat certs ca`)",
    )
    node.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    node.add_argument(
        "--node-id",
        type=int,
        required=True,
        help="the node's id, 1 to 2**63 - 1: run the node with the same --node-id",
    )
    node.add_argument(
        "--host",
        action="append",
        required=True,
        metavar="H",
        help="an IP address or DNS name the node is dialed by (repeatable)",
    )
    node.add_argument(
        "--name",
        help="the node's human name, recorded as the subject's organizational unit (OU); "
        "not a host name and not checked by peers",
    )
    node.add_argument(
        "--days",
        type=int,
        default=DEFAULT_NODE_DAYS,
        help=f"days the certificate is valid (default {DEFAULT_NODE_DAYS})",
    )
    node.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace) -> int:
    """`copycat certs ca|node`: 0 once the files are written, 2 for a value or file it
    cannot use, 1 when reading or writing a file fails."""
    prog = f"copycat certs {args.certs_command}"
    try:
        if args.certs_command == "ca":
            written = _run_ca(args)
            _print_ca(written)
        else:
            written = _run_node(args)
            _print_node(written, args)
    except CertsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a directory or file that cannot be read or written
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- checks ---------------------------------------------------------------------------------


def _check_days(days: int) -> datetime.timedelta:
    if not 1 <= days <= MAX_DAYS:
        raise CertsError(f"--days must be from 1 to {MAX_DAYS}, not {days}")
    return datetime.timedelta(days=days)


def _check_name(name: str, flag: str) -> str:
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise CertsError(f"{flag} must be 1 to {MAX_NAME_CHARS} printable characters")
    return name


def _check_node_id(node_id: int) -> int:
    if not 1 <= node_id <= MAX_NODE_ID:
        raise CertsError(f"--node-id must be from 1 to 2**63 - 1, not {node_id}")
    return node_id


def _parse_host(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """`text` as an IP address (IPv6 optionally in brackets), else as a DNS name (labels
    of letters, digits and inner hyphens, the last not all digits; a final dot is
    dropped). Raises `CertsError` naming the value otherwise."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if "%" not in bare:  # a scoped IPv6 address names an interface, not a host
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(bare)
    name = text.removesuffix(".")
    labels = name.split(".")
    if (
        len(name) <= 253
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    ):
        return name
    hint = ""
    if re.fullmatch(r"[^:]+:\d+|\[.*\]:\d+", text):
        hint = " (give it without a port)"
    elif not text.isascii():
        hint = " (give an internationalized name in its xn-- form)"
    raise CertsError(f"--host {text!r} is neither an IP address nor a DNS name{hint}")


def _refuse_existing(paths: tuple[Path, ...], *, force: bool, why: str) -> None:
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise CertsError(
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: "
            f"pass --force to overwrite ({why})"
        )


# -- certificates ---------------------------------------------------------------------------


def _run_ca(args: argparse.Namespace) -> _Written:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    name = _check_name(str(args.name), "--name")
    lifetime = _check_days(int(args.days))
    out: Path = args.out
    cert_file, key_file = out / CA_CERT_FILE, out / CA_KEY_FILE
    _refuse_existing(
        (cert_file, key_file),
        force=bool(args.force),
        why="nodes that trust the old CA refuse certificates the new one signs",
    )
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        # pathlen 0: it signs node certificates, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(out, cert, key, cert_file=cert_file, key_file=key_file)
    return _Written(cert_file=cert_file, key_file=key_file, not_after=cert.not_valid_after_utc)


def _run_node(args: argparse.Namespace) -> _Written:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    node_id = _check_node_id(int(args.node_id))
    lifetime = _check_days(int(args.days))
    unit = None if args.name is None else _check_name(str(args.name), "--name")
    hosts = list(dict.fromkeys(_parse_host(h) for h in args.host))
    out: Path = args.out
    cert_file, key_file = out / f"node-{node_id}.pem", out / f"node-{node_id}.key"
    ca_cert, ca_key = _load_ca(args.ca)
    _refuse_existing(
        (cert_file, key_file),
        force=bool(args.force),
        why="a node running with them must then be given the new ones",
    )
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + lifetime
    if not_after > ca_cert.not_valid_after_utc:
        raise CertsError(
            f"the CA in {args.ca} expires on {ca_cert.not_valid_after_utc:%Y-%m-%d}, before "
            f"a certificate valid for {args.days} days would: give fewer --days"
        )
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, f"node-{node_id}")]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(h) if isinstance(h, str) else x509.IPAddress(h) for h in hosts]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(
            ca_key,
            None
            if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
            else hashes.SHA256(),
        )
    )
    _write_pair(out, cert, key, cert_file=cert_file, key_file=key_file)
    return _Written(
        cert_file=cert_file,
        key_file=key_file,
        not_after=cert.not_valid_after_utc,
        hosts=tuple(str(h) for h in hosts),
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """A CA signs certificates (and revocation lists); a node signs its TLS handshakes."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The CA certificate and key in `ca_dir`, checked to be a CA and to belong together."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    cert_file, key_file = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
    missing = [str(p) for p in (cert_file, key_file) if not p.is_file()]
    if missing:
        raise CertsError(
            f"no CA in {ca_dir}: {' and '.join(missing)} missing (make one with "
            f"`copycat certs ca --out {ca_dir}`)"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except ValueError:
        raise CertsError(f"{cert_file} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        raise CertsError(f"{key_file} is encrypted: give an unencrypted CA key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertsError(f"{key_file} is not a PEM private key") from None
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertsError(f"{key_file} holds a key that cannot sign certificates")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertsError(f"{cert_file} is not a CA certificate (basic constraints CA:true)")
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise CertsError(f"{key_file} is not the key of {cert_file}")
    if cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        raise CertsError(f"the CA in {ca_dir} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert, key


# -- files ----------------------------------------------------------------------------------


def _write_pair(
    out: Path,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    *,
    cert_file: Path,
    key_file: Path,
) -> None:
    from cryptography.hazmat.primitives import serialization

    if not out.exists():
        out.mkdir(mode=0o700, parents=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(key_file, key_pem, mode=KEY_MODE)
    _write_file(cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=CERT_MODE)


def _write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Write `data` to `path` with permission bits `mode`, whole or not at all: into a
    temporary file of the same directory (created 0600), fsynced, then renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- output ---------------------------------------------------------------------------------


def _print_ca(written: _Written) -> None:
    out = written.cert_file.parent
    print(f"wrote {written.cert_file} (the cluster CA's certificate: every node needs it)")
    print(
        f"wrote {written.key_file} (its private key, mode 0600: it signs node "
        "certificates; keep it off the nodes)"
    )
    print(f"valid until {written.not_after:%Y-%m-%d}")
    print(
        f"next, once per node: copycat certs node --ca {out} --out DIR --node-id ID --host ADDRESS"
    )


def _print_node(written: _Written, args: argparse.Namespace) -> None:
    ca_file = Path(args.ca) / CA_CERT_FILE
    print(
        f"wrote {written.cert_file} (node {args.node_id}'s certificate: CN node-{args.node_id}, "
        f"hosts {', '.join(written.hosts)}, valid until {written.not_after:%Y-%m-%d})"
    )
    print(f"wrote {written.key_file} (its private key, mode 0600)")
    print(
        f"next: copy {ca_file}, {written.cert_file.name} and {written.key_file.name} to "
        f"node {args.node_id}, and run it with the same id (and the paths it has there):"
    )
    print(
        f"  copycat node --node-id {args.node_id} --tls-ca-file {ca_file} "
        f"--tls-cert-file {written.cert_file} --tls-key-file {written.key_file} "
        "--tls-bind-node-id ..."
    )
    print(
        "  (in Python: Config(node_id=..., tls_ca_file=..., tls_cert_file=..., "
        "tls_key_file=..., tls_bind_node_id=True))"
    )

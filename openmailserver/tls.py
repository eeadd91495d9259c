"""TLS material: a self-signed certificate when none is configured, and SSL contexts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SELF_SIGNED_DAYS = 825


def write_self_signed(cert_path: Path, key_path: Path, hostname: str) -> None:
    """Create an ECDSA P-256 certificate for `hostname` (plus localhost/127.0.0.1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        alt_names.append(x509.DNSName("localhost"))
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def certificate_expiry(cert_path: Path) -> dt.datetime:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.not_valid_after_utc


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


def certificate_status(cert_path: Path, warn_days: int = 14) -> dict:
    """ok / warn (expires within `warn_days`) / fail (expired or unreadable), with the dates."""
    try:
        expires = certificate_expiry(cert_path)
    except (OSError, ValueError) as exc:
        return {"status": "fail", "error": str(exc), "path": str(cert_path)}
    days = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400
    status = "fail" if days <= 0 else "warn" if days < warn_days else "ok"
    return {"status": status, "expires_at": expires.isoformat().replace("+00:00", "Z"), "days_left": int(days),
            "path": str(cert_path)}

# A certificate authority of the test bench's own: the CA, and server or client
# certificates it signs for loopback names. Tests, the demo and the benchmarks make one in a
# temporary folder; a site uses its own CA (docs/security.md says what each part needs).
from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 30


@dataclass(frozen=True)
class Pair:
    cert: str   # PEM file
    key: str    # PEM file, 0600


@dataclass(frozen=True)
class Authority:
    cert: str
    key: str

    def issue(self, folder: str, name: str, hosts=LOOPBACK_NAMES, client: bool = False) -> Pair:
        """A certificate for `name` signed by this CA, valid for `hosts` (DNS names or IPs)."""
        with open(self.cert, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        with open(self.key, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [_san(h) for h in hosts]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (_builder(name, key, ca_cert.subject)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _write(folder, name, builder.sign(ca_key, hashes.SHA256()), key)


def make_ca(folder: str, name: str = "citynet test CA") -> Authority:
    """A fresh self-signed CA in `folder` (ca.pem, ca.key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (_builder(name, key, subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    pair = _write(folder, "ca", cert, key)
    return Authority(pair.cert, pair.key)


def _builder(name, key, issuer):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))


def _san(host):
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(folder, stem, cert, key) -> Pair:
    os.makedirs(folder, exist_ok=True)
    cert_path = os.path.join(folder, stem + ".pem")
    key_path = os.path.join(folder, stem + ".key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return Pair(cert_path, key_path)

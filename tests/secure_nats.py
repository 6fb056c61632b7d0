"""A nats-server as ops run it: the shipped deploy/nats/nats-server.conf, TLS with client certificates
(a throwaway CA made here), one password per service user in the server's environment.

    secure = SecureNats(tmp_path)
    await secure.server.start()
    settings = secure.settings_for(base_settings, "gateway")   # tls://, user, password, CA, client cert
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from helpdesk.natsauth import password_variable, permissions
from shared.natsserver import EmbeddedNats
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONF = ROOT / "deploy" / "nats" / "nats-server.conf"
SHIPPED_TLS_DIR = "/etc/nats/tls/"
SHIPPED_STORE_DIR = "/data/jetstream"
USERS = tuple(permissions())


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("helpdesk test CA"))
        .issuer_name(_name("helpdesk test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, cert sign, CRL sign
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key

    pki = Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "tls.crt",
        server_key=directory / "tls.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_pem, server_key = leaf(
        "nats",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    pki.server_cert.write_bytes(server_pem)
    _write_key(server_key, pki.server_key)
    client_pem, client_key = leaf("helpdesk", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    pki.client_cert.write_bytes(client_pem)
    _write_key(client_key, pki.client_key)
    return pki


class SecureNats:
    """The shipped config with its TLS paths pointed at a throwaway PKI; a store that survives restarts."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.pki = make_pki(directory / "tls")
        # Letters and digits, starting with a letter: the server reads them from its environment.
        self.passwords = {user: "p" + secrets.token_hex(16) for user in USERS}
        conf = directory / "nats-server.conf"
        text = SHIPPED_CONF.read_text().replace(SHIPPED_TLS_DIR, f"{directory / 'tls'}/")
        conf.write_text(text.replace(f'"{SHIPPED_STORE_DIR}"', f'"{directory / "store"}"'))
        self.log_file = directory / "nats-server.log"
        self.server = EmbeddedNats(
            store_dir=directory / "store",
            config_file=conf,
            env={password_variable(user): password for user, password in self.passwords.items()},
            scheme="tls",
            log_file=self.log_file,
        )

    @property
    def url(self) -> str:
        return self.server.url

    def settings_for(self, base: Settings, user: str) -> Settings:
        """``base`` connecting as ``user``, over TLS with the client certificate."""
        return base.model_copy(
            update={
                "nats_url": self.url,
                "nats_prefix": "",  # the shipped permissions are for NATS_PREFIX unset
                "nats_user": user,
                "nats_password": SecretStr(self.passwords[user]),
                "nats_tls_ca": self.pki.ca,
                "nats_tls_cert": self.pki.client_cert,
                "nats_tls_key": self.pki.client_key,
            }
        )

    def env_for(self, user: str) -> dict[str, str]:
        """The same as environment variables, the password as a file (``NATS_PASSWORD_FILE``)."""
        password_file = self.dir / f"{user}.password"
        password_file.write_text(self.passwords[user] + "\n")
        password_file.chmod(0o600)
        return {
            "NATS_URL": self.url,
            "NATS_USER": user,
            "NATS_PASSWORD_FILE": str(password_file),
            "NATS_TLS_CA": str(self.pki.ca),
            "NATS_TLS_CERT": str(self.pki.client_cert),
            "NATS_TLS_KEY": str(self.pki.client_key),
        }

    def violations(self) -> list[str]:
        """The server's log lines about permission violations."""
        if not self.log_file.exists():
            return []
        return [line for line in self.log_file.read_text().splitlines() if "Violation" in line]

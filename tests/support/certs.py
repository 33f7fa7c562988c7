"""A throwaway PKI for TLS tests: a CA, a server certificate and client certificates, as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path


def make_pki(
    folder: Path,
    users: tuple[str, ...] = ("user-1", "user-2"),
    server_names: tuple[str, ...] = ("127.0.0.1",),
    valid: datetime.timedelta = datetime.timedelta(hours=1),
) -> dict[str, Path]:
    """``ca.crt``, ``server.crt``/``.key`` (subjectAltName: ``server_names``, IP addresses or DNS names) and
    ``<user>.crt``/``.key`` (CommonName: the user, as the API server's x509 authenticator reads it), all
    signed by the CA and valid for ``valid``.  Returns the paths by those names.

    With the extensions the S3 tests' private CA carried (kt_s3.private_ca, now built here): the CA's
    keyUsage (keyCertSign, cRLSign) and subjectKeyIdentifier, every certificate's authorityKeyIdentifier,
    and the server's extendedKeyUsage serverAuth (what an in-house MinIO CA issues).  Which verifier
    requires which of them was not re-read for this helper."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kt-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca.crt": folder / "ca.crt"}
    out["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def alt_name(name: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            return x509.DNSName(name)

    for cn in ("server", *users):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + valid)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if cn == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([alt_name(n) for n in server_names]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        out[f"{cn}.crt"], out[f"{cn}.key"] = folder / f"{cn}.crt", folder / f"{cn}.key"
        out[f"{cn}.crt"].write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        out[f"{cn}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return out

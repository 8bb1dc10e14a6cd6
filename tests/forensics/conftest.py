"""Fixtures that build their own evidence: a photo-like image, a test C2PA signing chain."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import pytest
from forensics_helpers import IPTC, photo_like
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    return photo_like()


@pytest.fixture(scope="session")
def signing_chain() -> dict[str, bytes]:
    """An ES256 root CA and a leaf signing certificate valid for C2PA (made with `cryptography`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fakescope Test")])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
                             crl_sign=not sign, encipher_only=False, decipher_only=False)

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, public_key, is_ca: bool) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name("Test Root CA"))
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
                .add_extension(usage(sign=not is_ca), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))

    ca = cert("Test Root CA", ca_key.public_key(), True).sign(ca_key, hashes.SHA256())
    leaf = (cert("Test Signer", key.public_key(), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {
        "chain": leaf.public_bytes(pem) + ca.public_bytes(pem),
        "root": ca.public_bytes(pem),
        "key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }


@pytest.fixture(scope="session")
def sign_manifest(signing_chain):
    """sign_manifest(image_bytes, mime, actions, ingredients=()) -> signed bytes.

    `ingredients` are (label, relationship, signed bytes of the same mime); actions name them
    in `parameters.ingredientIds`.
    """
    import c2pa

    def _sign(data: bytes, mime: str, actions: list[dict], ingredients=()) -> bytes:
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, signing_chain["chain"], signing_chain["key"], None)
        manifest = {
            "claim_generator_info": [{"name": "fakescope-tests", "version": "1.0"}],
            "title": "fixture",
            "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
        }
        out = io.BytesIO()
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest) as builder:
            for label, relationship, ingredient in ingredients:
                builder.add_ingredient({"title": label, "label": label, "relationship": relationship},
                                       mime, io.BytesIO(ingredient))
            builder.sign(signer, mime, io.BytesIO(data), out)
        return out.getvalue()

    return _sign


@pytest.fixture(scope="session")
def sign(sign_manifest):
    """sign(image_bytes, mime, source_type) -> signed bytes with one `c2pa.created` action."""

    def _sign(data: bytes, mime: str, source_type: str) -> bytes:
        return sign_manifest(data, mime, [{"action": "c2pa.created", "digitalSourceType": IPTC + source_type}])

    return _sign


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("FAKESCOPE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set FAKESCOPE_SHARED_DATA)")
    return root

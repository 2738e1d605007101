"""HttpHost over TLS: the pinned address is verified against the requested name (SNI + cert)."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flotilla.hosts.base import HostError
from flotilla.hosts.http import HttpHost
from tests.hosts.conftest import MakeCtx, RoutesHandler, RoutesServer


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate names `localhost` only; (port, CA file)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(directory, "localhost")
    server = RoutesServer(("127.0.0.1", 0), RoutesHandler)
    server.seen = []
    server.stop = threading.Event()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1]), cert
    server.stop.set()
    server.shutdown()
    server.server_close()


def _host(ca: Path, answer: str = "127.0.0.1") -> HttpHost:
    pools = urllib3.PoolManager(ca_certs=str(ca), retries=False)
    return HttpHost(pool_manager=pools, resolve=lambda host, port: [answer])


def test_tls_to_the_pinned_address_verifies_the_name(
    tls: tuple[int, Path], make_ctx: MakeCtx
) -> None:
    port, ca = tls
    host = _host(ca)
    try:
        ctx = make_ctx(allowed_hosts=(f"localhost:{port}",))
        status, _, body = host.invoke(ctx, "GET", f"https://localhost:{port}/echo", [], b"", None)
        assert status == 200
        sent = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert sent["host"] == f"localhost:{port}"
    finally:
        host.close()


def test_tls_certificate_for_another_name_is_refused(
    tls: tuple[int, Path], make_ctx: MakeCtx
) -> None:
    port, ca = tls
    host = _host(ca)
    try:
        ctx = make_ctx(allowed_hosts=(f"127.0.0.1:{port}",))
        with pytest.raises(HostError) as info:
            # The certificate names localhost, not 127.0.0.1: verification must fail.
            host.invoke(ctx, "GET", f"https://127.0.0.1:{port}/echo", [], b"", None)
        assert info.value.case == "connection"
        assert "certificate" in (info.value.detail or "").lower()
    finally:
        host.close()


def test_tls_with_an_untrusted_certificate_is_refused(
    tls: tuple[int, Path], make_ctx: MakeCtx
) -> None:
    port, _ = tls
    host = HttpHost(resolve=lambda h, p: ["127.0.0.1"])  # system CAs only
    try:
        ctx = make_ctx(allowed_hosts=(f"localhost:{port}",))
        with pytest.raises(HostError) as info:
            host.invoke(ctx, "GET", f"https://localhost:{port}/echo", [], b"", None)
        assert info.value.case == "connection"
    finally:
        host.close()

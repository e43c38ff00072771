"""deploy/nginx-tls.conf in front of the mirror: pip --cert installs over HTTPS through nginx,
the daemon answers the misses, plain HTTP is redirected. The certificate is made here: a
throw-away CA (what a company's internal CA or a self-signed set-up gives clients through
``--cert``) and a server certificate for 127.0.0.1 signed by it."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yarl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import RunningMirror, clean_env, free_port
from tests.fakepypi import FakePyPI, build_sdist
from tests.test_e2e_clients import installed_version, new_venv, publish_corpus
from tests.test_nginx import NGINX, running_nginx

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx not installed (make test installs it)")


@dataclass(frozen=True)
class Tls:
    ca: Path  # what clients trust (pip --cert)
    cert: Path  # the server's chain: its certificate, then the CA's
    key: Path


def make_certificates(directory: Path) -> Tls:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pypi-mirror test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    tls = Tls(directory / "ca.pem", directory / "fullchain.pem", directory / "privkey.pem")
    tls.ca.write_bytes(ca.public_bytes(pem))
    tls.cert.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    tls.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tls


@dataclass(frozen=True)
class Front:
    """nginx on deploy/nginx-tls.conf: its HTTPS and plain-HTTP URLs and the CA to trust."""

    url: str
    plain_url: str
    tls: Tls

    @property
    def index_url(self) -> str:
        return self.url + "simple/"

    async def tls_version(self, context: ssl.SSLContext) -> str | None:
        url = yarl.URL(self.url)
        _, writer = await asyncio.open_connection(url.host, url.port, ssl=context)
        try:
            version: str | None = writer.get_extra_info("ssl_object").version()
            return version
        finally:
            writer.close()
            await writer.wait_closed()

    def client_context(self, **options: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        for name, value in options.items():
            setattr(context, name, value)
        return context


@pytest.fixture
async def front(tmp_path: Path, mirror: RunningMirror) -> AsyncIterator[Front]:
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    tls = make_certificates(workdir)
    port = free_port()
    rewrite = {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "ssl_certificate /etc/ssl/pypi-mirror/fullchain.pem;": f"ssl_certificate {tls.cert};",
        "ssl_certificate_key /etc/ssl/pypi-mirror/privkey.pem;": f"ssl_certificate_key {tls.key};",
    }
    async with running_nginx(
        workdir, mirror.root / "web", mirror.port, site_file="nginx-tls.conf", rewrite=rewrite
    ) as plain_url:
        yield Front(f"https://127.0.0.1:{port}/", plain_url, tls)


# requests (in pip) lets these override --cert: this machine's bundle must not stand in.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


async def pip_install(front: Front, venv: Path, *options: str) -> tuple[int, str]:
    python = await new_venv(venv)
    env = {k: v for k, v in clean_env().items() if k not in CA_BUNDLE_VARIABLES}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pip", "--python", str(python), "install", "--isolated",
        "--no-cache-dir", "--disable-pip-version-check", "--index-url", front.index_url,
        *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def test_tls_config_is_the_plain_config_on_https() -> None:
    """The maps, the upstream and the locations are deploy/nginx.conf's, character for
    character: a fix to one file must reach the other."""
    plain = (REPO / "deploy" / "nginx.conf").read_text()
    tls = (REPO / "deploy" / "nginx-tls.conf").read_text()

    def shared(text: str) -> tuple[str, str]:
        head = text[text.index("# PEP 691 content negotiation.") :]
        head = head[: head.index("\n}\n", head.index("upstream pypi_mirror_daemon")) + 3]
        return head, text[text.index("    root /var/lib/pypi-mirror/web;") :]

    assert shared(tls) == shared(plain)
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in tls


async def test_pip_installs_over_https_through_nginx_and_the_mirror(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror, front: Front
) -> None:
    publish_corpus(tmp_path, upstream)
    code, out = await pip_install(front, tmp_path / "v1", "--cert", str(front.tls.ca), "e2e-app")
    assert code == 0, out
    assert await installed_version(tmp_path / "v1", "e2e_dep") == "1.0"
    # The misses went to the daemon, which stored them: nginx serves them from now on.
    assert any((mirror.root / "web" / "packages").rglob("e2e_dep-1.0-py3-none-any.whl"))

    # Without the CA pip refuses the certificate: TLS is really checked.
    code, out = await pip_install(front, tmp_path / "v2", "--retries", "0", "e2e-app")
    assert code != 0 and "CERTIFICATE_VERIFY_FAILED" in out, out


async def test_https_front_redirects_plain_http_streams_misses_and_speaks_tls12(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror, front: Front
) -> None:
    sdist = build_sdist(tmp_path / "dist", "big", "1.0", pad_bytes=3_000_000)
    record = upstream.add_file("big", sdist)
    async with aiohttp.ClientSession() as session:
        async with session.get(front.plain_url + "simple/big/", allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == "https://127.0.0.1/simple/big/"

        context = front.client_context()
        async with session.get(front.index_url + "big/", ssl=context) as resp:
            assert resp.status == 200
        # A miss of 3 MB streamed from the daemon through nginx, whole and verified.
        async with session.get(front.url + record.url_path.lstrip("/"), ssl=context) as resp:
            assert resp.status == 200
            body = await resp.read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(sdist.read_bytes()).hexdigest()
        # The daemon's own redirects stay on HTTPS (they are relative).
        async with session.get(
            front.index_url + "Big/", ssl=context, allow_redirects=False
        ) as resp:
            assert resp.status == 301
            assert not resp.headers["Location"].startswith("http:"), resp.headers["Location"]

    # TLS 1.3 for today's clients; older ones that stop at TLS 1.2 are still served.
    assert await front.tls_version(front.client_context()) == "TLSv1.3"
    tls12 = front.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    assert await front.tls_version(tls12) == "TLSv1.2"
    async with (
        aiohttp.ClientSession() as session,
        session.get(front.index_url + "big/", ssl=tls12) as resp,
    ):
        assert resp.status == 200

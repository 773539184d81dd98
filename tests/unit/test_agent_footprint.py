"""What keeps an idle process-mode agent small: no OpenSSL, psutil or controller client loaded at start,
asyncio's TLS given back on first use, and the built-in SHA-256 and comparison agreeing with hashlib's."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plum.common import digest

SRC = str(Path(__file__).resolve().parents[2] / "agent" / "src")


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env={"PYTHONPATH": SRC}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_agent_starts_without_ssl_psutil_or_the_controller_client():
    loaded = run_python(
        "import sys, plum.agent.main; "
        "print(' '.join(m for m in ('ssl', '_ssl', 'psutil', 'plum.agent.sync', 'plum.common.httpclient') "
        "if m in sys.modules))"
    )
    assert loaded == ""


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a test certificate")
def test_asyncio_gets_its_tls_back_on_first_use(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            *subject,
        ],
        check=True,
        capture_output=True,
    )
    code = f"""
import sys
import plum.common.tls
import asyncio
assert "ssl" not in sys.modules
ssl = plum.common.tls.ssl_module()

async def main():
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain({str(cert)!r}, {str(key)!r})

    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile={str(cert)!r})
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
    writer.write(b"hello\\n")
    print((await reader.readline()).decode().strip(), writer.get_extra_info("ssl_object").version())
    writer.close()
    server.close()

asyncio.run(main())
"""
    out = run_python(code)
    assert out.startswith("hello TLS")


def test_builtin_sha256_and_comparison_agree_with_hashlib_and_hmac():
    data = bytes(range(256)) * 1000
    h = digest.sha256(data[:100])
    h.update(data[100:])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert digest.sha256().digest() == hashlib.sha256().digest()
    for a, b in ((b"token", b"token"), (b"token", b"tokem"), (b"", b"x")):
        assert digest.compare_digest(a, b) is hmac.compare_digest(a, b)

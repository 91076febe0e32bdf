"""SIP over TLS (RFC 3261 §26.2.1): with `tls_port`, `tls_cert` and `tls_key` the node listens
for TLS; an OPTIONS sent over it is answered over the same connection."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any


async def test_options_over_tls(make_node: Any, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    node = await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                           "plugins.sip.tls_port=0", f'plugins.sip.tls_cert="{cert}"', f'plugins.sip.tls_key="{key}"')
    transport = node.pm.get_plugin("sip").service.endpoint.transport
    assert transport.tls_port
    client = ssl.create_default_context(cafile=str(cert))
    client.check_hostname = False
    reader, writer = await asyncio.open_connection("127.0.0.1", transport.tls_port, ssl=client)
    try:
        writer.write(b"OPTIONS sip:mediagate@127.0.0.1 SIP/2.0\r\n"
                      b"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls1\r\nFrom: <sip:a@127.0.0.1>;tag=t1\r\n"
                      b"To: <sip:mediagate@127.0.0.1>\r\nCall-ID: tls1@t\r\nCSeq: 1 OPTIONS\r\n"
                      b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"SIP/2.0 200") and b"Allow: INVITE" in head and b"CSeq: 1 OPTIONS" in head
    finally:
        writer.close()

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


async def test_relative_tls_files_are_read_against_the_config_file(tmp_path: Path,
                                                                   monkeypatch: Any) -> None:
    """`tls_cert = "certs/sip.pem"` in mediagate.toml means next to that file, whatever the
    directory the node is started from (as `Path` settings are); so do prompt_dir and the
    RTMP push's tls_ca_file."""
    from gateway.config import load_config
    from gateway.node import Node
    from plugins.rtmp.client import tls_context

    etc = tmp_path / "etc"
    (etc / "certs").mkdir(parents=True)
    cert, key = etc / "certs" / "sip.pem", etc / "certs" / "sip.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = etc / "mediagate.toml"
    config.write_text('[node]\ndata_dir = "data"\n[http]\nport = 0\n[auth]\nbootstrap_key = false\n'
                      '[plugins.rtmp]\nport = 0\nhost = "127.0.0.1"\ntls_ca_file = "certs/sip.pem"\n'
                      '[plugins.sip]\nport = 0\nrtp_port_min = 0\nrtp_port_max = 0\ntls_port = 0\n'
                      'tls_cert = "certs/sip.pem"\ntls_key = "certs/sip.key"\nprompt_dir = "prompts"\n',
                      encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    node = Node(load_config(config, environ={}))
    await node.start()
    try:
        sip = node.pm.get_plugin("sip")
        assert (sip.config.tls_cert, sip.config.tls_key, sip.config.prompt_dir) == (cert, key, etc / "prompts")
        rtmp = node.pm.get_plugin("rtmp")
        assert rtmp.config.tls_ca_file == cert
        tls_context(rtmp.config.tls_ca_file)  # loads: the file is found from here
        transport = sip.service.endpoint.transport
        client = ssl.create_default_context(cafile=str(cert))
        client.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.tls_port, ssl=client)
        writer.write(b"OPTIONS sip:mediagate@127.0.0.1 SIP/2.0\r\n"
                     b"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls2\r\nFrom: <sip:a@127.0.0.1>;tag=t2\r\n"
                     b"To: <sip:mediagate@127.0.0.1>\r\nCall-ID: tls2@t\r\nCSeq: 1 OPTIONS\r\n"
                     b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"SIP/2.0 200")
        writer.close()
    finally:
        await node.stop()
    assert not (elsewhere / "certs").exists() and not (elsewhere / "data").exists()
    # unset, as conf/mediagate.toml documents them: no file, no TLS listener
    config.write_text('[plugins.sip]\ntls_cert = ""\ntls_key = ""\nprompt_dir = ""\n'
                      '[plugins.rtmp]\ntls_ca_file = ""\n', encoding="utf-8")
    from gateway.pluginmanager import PluginManager

    manager = PluginManager()
    manager.load(load_config(config, environ={}))
    assert manager.get_plugin("sip").config.tls_cert is None
    assert manager.get_plugin("sip").config.prompt_dir is None
    assert manager.get_plugin("rtmp").config.tls_ca_file is None

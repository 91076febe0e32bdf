"""AMF0 commands and FLV tag bodies as RTMP carries them."""

from __future__ import annotations

import pytest

from plugins.rtmp import amf0, flv


def test_amf0_round_trip() -> None:
    values = ["connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live", "nested": {"n": 2.5, "ok": True}}, None,
              [1.0, "x"], "é" * 10]
    assert amf0.decode_all(amf0.encode_all(*values)) == values
    meta = amf0.decode_all(amf0.encode("onMetaData") + amf0.ecma_array({"width": 640.0, "stereo": True}))
    assert meta == ["onMetaData", {"width": 640.0, "stereo": True}]


@pytest.mark.parametrize("data", [b"\x02\x00\x10ab", b"\x03\x00\x01a", b"\x0a\xff\xff\xff\xff", b"\x11", b"\x00\x00"])
def test_amf0_malformed_raises(data: bytes) -> None:
    with pytest.raises(amf0.AmfError):
        amf0.decode_all(data)


def test_video_tag_with_negative_composition_offset() -> None:
    body = flv.video_body(False, "frame", -66, b"\x00\x00\x00\x02\x09\xf0")
    tag = flv.parse_video(body)
    assert tag is not None and (tag.keyframe, tag.kind, tag.cts, tag.data) == (False, "frame", -66,
                                                                                b"\x00\x00\x00\x02\x09\xf0")
    key = flv.parse_video(flv.video_body(True, "config", 0, b"\x01abc"))
    assert key is not None and key.keyframe and key.kind == "config"


def test_unsupported_codecs_are_named() -> None:
    with pytest.raises(flv.UnsupportedCodec, match="Sorenson"):
        flv.parse_video(bytes([0x12, 0, 0, 0, 0]))
    with pytest.raises(flv.UnsupportedCodec, match="enhanced"):
        flv.parse_video(bytes([0x90, 0, 0, 0, 0]))
    with pytest.raises(flv.UnsupportedCodec, match="MP3"):
        flv.parse_audio(bytes([0x2F, 0]))


def test_aac_config() -> None:
    assert flv.aac_config(bytes([0x12, 0x10])) == (44100, 2)
    assert flv.aac_config(bytes([0x11, 0x88])) == (48000, 1)


def test_annexb_to_avcc_and_avcc_config() -> None:
    sps = b"\x67\x64\x00\x1f\xac\xd9"
    pps = b"\x68\xeb\xe3\xcb"
    extradata = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps
    avcc = flv.avcc_from_annexb(extradata)
    assert avcc[:4] == b"\x01\x64\x00\x1f" and flv.avcc_sps(avcc) == sps and flv.is_avcc_config(avcc)
    assert avcc.endswith(b"\x01\x00\x04" + pps)
    idr = b"\x65" + b"\x00\x00\x03\x01" * 3
    packet = b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x01" + idr
    assert flv.annexb_to_avcc(packet) == b"\x00\x00\x00\x02\x09\xf0" + len(idr).to_bytes(4, "big") + idr

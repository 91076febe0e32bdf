"""SRTP from a connected publisher handled in the datagram callback, not through a task.

aiortc reads every datagram through an ``asyncio.Queue`` that its DTLS transport's task
awaits: one future wake-up and one task step per RTP packet (a 2.5 Mbps video is about 270
packets a second), which measured about a third of the Python receive path. For the
gateway's publishers (:func:`attach`, once the DTLS transport is connected) an SRTP packet
arriving while that queue is empty — so nothing is reordered — is unprotected in the
callback, its header parsed (:mod:`plugins.webrtc.rtp_parse`) and routed as aiortc routes
it; a receiver with a lean handler of its own for the payload type (VP8:
:mod:`plugins.webrtc.vp8_receiver`) takes it there, anything else goes to aiortc's own RTP
handling at once. aiortc's coroutines for it (statistics, NACK, REMB, jitter buffer) do not
really suspend; if one does, a task finishes it.
DTLS, SRTCP and STUN, and every connection not attached, keep aiortc's path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pylibsrtp
import structlog
from aioice import ice as aioice_ice
from aiortc import clock
from aiortc.rtcdtlstransport import State
from aiortc.rtp import is_rtcp
from pylibsrtp._binding import ffi, lib

from plugins.webrtc import native_rx
from plugins.webrtc.rtp_parse import parse_header

log = structlog.get_logger(__name__)

_ATTR = "_mediagate_dtls"
RECEIVER_ATTR = "_mediagate_lean"  # an RTCRtpReceiver's own handler, e.g. vp8_receiver.Vp8Receiver
_pending: set[asyncio.Future[Any]] = set()
_original_datagram_received = aioice_ice.StunProtocol.datagram_received
_original_data_received = aioice_ice.Connection.data_received


DRAIN_MAX = 32  # datagrams read per readiness callback: bounds one callback's hold on the loop
UDP_MAX = 65536  # above the largest UDP payload (65507 bytes)


NATIVE_RETRIES = 40  # tries, NATIVE_RETRY_S apart, to take a connection over natively while aiortc has datagrams queued
NATIVE_RETRY_S = 0.05


def attach(dtls: Any, retries: int = NATIVE_RETRIES) -> None:
    """Take `dtls`'s (an RTCDtlsTransport, connected) incoming SRTP through the fast path:
    the native one (:mod:`plugins.webrtc.native_rx`) if it can, else the Python one."""
    connection = getattr(dtls.transport, "_connection", None)
    if connection is None:
        return
    setattr(connection, _ATTR, dtls)
    if native_rx.attach(dtls, connection):
        return
    if native_rx.available() and retries > 0 and dtls._state is State.CONNECTED:
        # aiortc still has datagrams queued: the Python path until they are handled
        retry = connection.__dict__.get("_mediagate_retry")
        if retry is None or retry.cancelled() or retries < NATIVE_RETRIES:
            connection._mediagate_retry = asyncio.get_running_loop().call_later(NATIVE_RETRY_S, attach, dtls,
                                                                                retries - 1)
    for protocol in list(getattr(connection, "_protocols", ())):
        transport = getattr(protocol, "transport", None)
        sock_fd = getattr(transport, "_sock_fd", None)
        loop = getattr(transport, "_loop", None)
        if sock_fd is None or loop is None or transport.is_closing() or not hasattr(loop, "_add_reader"):
            continue
        # replaces the transport's own reader (same fd); pause/resume and close still work
        # on the fd, a resumed transport simply gets asyncio's reader back
        loop._add_reader(sock_fd, _drain, transport)


def _drain(transport: Any) -> None:
    """asyncio's ``_SelectorDatagramTransport._read_ready`` reading every queued datagram
    (up to DRAIN_MAX), not one per loop iteration: a video frame's packets come in a burst,
    and each extra loop iteration (select, the ready queue, a handle) costs about what the
    packet's own handling does. And with a 64 KiB buffer (any UDP datagram fits), not
    asyncio's 256 KiB, which glibc serves with mmap/munmap: 3 µs a datagram instead of 24."""
    sock = transport._sock
    protocol = transport._protocol
    for _ in range(DRAIN_MAX):
        if transport._conn_lost:
            return
        try:
            data, addr = sock.recvfrom(UDP_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            protocol.error_received(exc)
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            transport._fatal_error(exc, "Fatal read error on datagram transport")
            return
        if data and data[0] > 3:  # not STUN (RFC 7983): straight to the connection
            _data_received(protocol.receiver, data, protocol.local_candidate.component)
        else:
            protocol.datagram_received(data, addr)


def _data_received(self: Any, data: bytes, component: int) -> None:
    dtls = self.__dict__.get(_ATTR)
    if (dtls is not None and 127 < data[0] < 192 and self._queue.empty() and dtls._rx_srtp is not None
            and dtls._state is State.CONNECTED and not is_rtcp(data)):
        dtls._RTCDtlsTransport__rx_bytes += len(data)
        dtls._RTCDtlsTransport__rx_packets += 1
        data = unprotect(dtls._rx_srtp, data)
        if data is None:
            return  # as aiortc: a packet that fails authentication is dropped
        header = parse_header(data)
        if header is not None:
            # aiortc's routing (SSRC, else a payload type only one receiver has), then the
            # receiver's lean handler if it has one for this payload type
            router = dtls._rtp_router
            receiver = router.ssrc_table.get(header.ssrc) or router.route_rtp(header)
            lean = receiver.__dict__.get(RECEIVER_ATTR) if receiver is not None else None
            if lean is not None and lean.handle(data, header):
                return
        drive(dtls._handle_rtp_data(data, arrival_time_ms=clock.current_ms()))
        return
    _original_data_received(self, data, component)


def unprotect(session: pylibsrtp.Session, data: bytes) -> bytes | None:
    """``Session.unprotect`` without its per-call allocation; None if the packet fails."""
    length = session.__dict__.get("_mediagate_len")
    if length is None:
        length = session._mediagate_len = ffi.new("int *")  # type: ignore[attr-defined]
    size = len(data)
    if size > len(session._cdata):
        return None
    length[0] = size
    session._buffer[0:size] = data
    if lib.srtp_unprotect(session._srtp[0], session._cdata, length) != 0:
        return None
    return session._buffer[0:length[0]]


def _datagram_received(self: Any, data: bytes | str, addr: tuple[Any, ...]) -> None:
    # RFC 7983: a first byte above 3 is not STUN; skip aioice's parse attempt (a raised
    # ValueError per media packet)
    if data and data[0] > 3:  # type: ignore[operator]
        self.receiver.data_received(data, self.local_candidate.component)
        return
    _original_datagram_received(self, data, addr)


_DONE = object()  # _step's answer when the coroutine has returned or failed


def _step(coro: Coroutine[Any, Any, Any]) -> Any:
    """Advance `coro` to its next suspension: what it awaits, or _DONE (a failure is logged)."""
    try:
        return coro.send(None)
    except StopIteration:
        return _DONE
    except Exception:
        log.warning("rtp handling failed", exc_info=True)
        return _DONE


def drive(coro: Coroutine[Any, Any, Any]) -> None:
    """Run `coro` now; if it suspends on a future, a task resumes it."""
    awaited = _step(coro)
    if awaited is _DONE:
        return
    task = asyncio.ensure_future(_resume(coro, awaited))
    _pending.add(task)  # the loop keeps only weak references to tasks
    task.add_done_callback(_pending.discard)


async def _resume(coro: Coroutine[Any, Any, Any], awaited: Any) -> None:
    while awaited is not _DONE:
        try:
            if awaited is None:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                await awaited
        except asyncio.CancelledError:
            if awaited is None or not awaited.cancelled():  # this task was cancelled (shutdown)
                coro.close()
                raise
        except Exception:
            pass  # the coroutine sees the future's exception when it resumes
        awaited = _step(coro)


def install() -> None:
    aioice_ice.StunProtocol.datagram_received = _datagram_received  # type: ignore[method-assign]
    aioice_ice.Connection.data_received = _data_received  # type: ignore[method-assign]

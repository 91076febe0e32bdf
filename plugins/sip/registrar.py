"""The registrar (RFC 3261 §10) for accounts, with digest authentication (RFC 8760:
SHA-256 and MD5, in the configured order). Bindings live in memory: a phone refreshes
them anyway, and a restarted node asks it to (its REGISTER refresh gets a fresh challenge).

Nonces are stateless: ``<time>.<hmac>`` checked for age and integrity, so a flood of
REGISTERs costs no memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiosipua.header_codec import parse_auth

from gateway.events import SIP_REGISTRATION_STATE
from plugins.sip import message as sipmsg
from plugins.sip.transaction import ServerTransaction
from plugins.sip.transport import Peer

if TYPE_CHECKING:
    from plugins.sip.service import SipService

log = structlog.get_logger(__name__)

NONCE_TTL = 300
HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}


@dataclass
class Binding:
    username: str
    contact: str  # the Contact URI
    peer: Peer  # where the REGISTER came from (NAT: where to send INVITEs)
    expires_at: float
    user_agent: str = ""

    def describe(self) -> dict[str, Any]:
        return {"contact": self.contact, "source": f"{self.peer.transport}:{self.peer.host}:{self.peer.port}",
                "expires_in": max(0, int(self.expires_at - time.time())), "user_agent": self.user_agent}


def digest(algorithm: str, username: str, realm: str, password: str, method: str, uri: str, nonce: str,
           nc: str | None = None, cnonce: str | None = None, qop: str | None = None) -> str:
    h = HASHES[algorithm.upper()]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()
    ha1, ha2 = hx(f"{username}:{realm}:{password}"), hx(f"{method}:{uri}")
    if qop:
        return hx(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return hx(f"{ha1}:{nonce}:{ha2}")


class Registrar:
    def __init__(self, service: SipService) -> None:
        self.service = service
        self.realm = service.config.realm
        self.bindings: dict[str, Binding] = {}
        self._secret = secrets.token_bytes(16)
        self.failures = 0

    # ---------------------------------------------------------------- nonces and digest
    def nonce(self) -> str:
        stamp = str(int(time.time()))
        return f"{stamp}.{hmac.new(self._secret, stamp.encode(), 'sha256').hexdigest()[:20]}"

    def _nonce_ok(self, nonce: str) -> bool:
        stamp, _, mac = nonce.partition(".")
        if not stamp.isdigit():
            return False
        good = hmac.new(self._secret, stamp.encode(), "sha256").hexdigest()[:20]
        return hmac.compare_digest(good, mac) and time.time() - int(stamp) < NONCE_TTL

    def challenges(self, stale: bool = False) -> list[tuple[str, str]]:
        nonce = self.nonce()
        extra = ", stale=true" if stale else ""
        return [("WWW-Authenticate",
                 f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={alg}, qop="auth"{extra}')
                for alg in self.service.config.digest_algorithms]

    def verify(self, txn: ServerTransaction, header: str = "authorization") -> tuple[dict[str, Any] | None, bool]:
        """(the account, stale nonce?) of a request's credentials; (None, False) if none or wrong."""
        raw = txn.request.headers.get_first(header)
        if not raw:
            return None, False
        try:
            creds = parse_auth(raw, credentials=True)
        except Exception:
            return None, False
        p = creds.params
        account = self.service.accounts.get(p.get("username", ""))
        algorithm = (p.get("algorithm") or "MD5").upper()
        if account is None or algorithm not in HASHES or p.get("realm") != self.realm:
            return None, False
        nonce = p.get("nonce", "")
        expected = digest(algorithm, account["username"], self.realm, account.get("password", ""),
                          txn.request.method, p.get("uri", ""), nonce, p.get("nc"), p.get("cnonce"), p.get("qop"))
        if not hmac.compare_digest(expected, p.get("response", "")):
            return None, False
        if not self._nonce_ok(nonce):
            return None, True
        return account, False

    def check_request_auth(self, txn: ServerTransaction) -> dict[str, Any] | None:
        """For an INVITE from an unknown source when anonymous calls are off: 407 or the account."""
        account, stale = self.verify(txn, "proxy-authorization")
        if account is not None:
            return account
        headers = [("Proxy-Authenticate", value) for _, value in self.challenges(stale)]
        self.service.endpoint.respond(txn, 407, headers=headers)
        return None

    # ---------------------------------------------------------------- REGISTER
    async def handle(self, txn: ServerTransaction) -> None:
        account, stale = self.verify(txn)
        if account is None:
            if txn.request.headers.get_first("authorization") and not stale:
                self.failures += 1
                log.info("sip register refused", peer=txn.peer.host)
                self.service.endpoint.respond(txn, 403, "Wrong credentials")
                return
            self.service.endpoint.respond(txn, 401, headers=self.challenges(stale))
            return
        to_user = sipmsg.parse_address(txn.request.headers.get_first("to") or "").uri.user
        if to_user != account["username"]:
            self.service.endpoint.respond(txn, 403, "To does not match the credentials")
            return
        cfg = self.service.config
        contacts = txn.request.headers.get("contact")
        username = account["username"]
        expires_header = txn.request.headers.get_first("expires")
        if contacts:
            contact = contacts[0]
            expires = self._expires(contact, expires_header)
            if contact.strip() == "*" or expires == 0:
                if self.bindings.pop(username, None) is not None:
                    self._event(username, "unregistered")
            elif expires < cfg.register_min_expires_s:
                self.service.endpoint.respond(txn, 423, headers=[("Min-Expires", str(cfg.register_min_expires_s))])
                return
            else:
                expires = min(expires, cfg.register_max_expires_s)
                uri = contact[contact.find("<") + 1:contact.find(">")] if "<" in contact else contact.split(";")[0]
                fresh = username not in self.bindings
                self.bindings[username] = Binding(username, uri.strip(), txn.peer, time.time() + expires,
                                                  txn.request.headers.get_first("user-agent") or "")
                if fresh:
                    self._event(username, "registered")
        binding = self.binding(username)
        left = int(binding.expires_at - time.time()) if binding else 0
        headers = [("Contact", f"<{binding.contact}>;expires={left}")] if binding else []
        headers.append(("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())))
        self.service.endpoint.respond(txn, 200, headers=headers)

    @staticmethod
    def _expires(contact: str, header: str | None) -> int:
        for part in contact.split(";")[1:]:
            name, _, value = part.partition("=")
            if name.strip().lower() == "expires" and value.strip().isdigit():
                return int(value.strip())
        if header and header.strip().isdigit():
            return int(header.strip())
        return 3600

    def binding(self, username: str) -> Binding | None:
        binding = self.bindings.get(username)
        if binding is not None and binding.expires_at <= time.time():
            del self.bindings[username]
            self._event(username, "expired")
            return None
        return binding

    def is_registered_from(self, username: str, peer: Peer) -> bool:
        binding = self.binding(username)
        return binding is not None and binding.peer.host == peer.host

    def _event(self, username: str, state: str) -> None:
        binding = self.bindings.get(username)
        self.service.node.events.emit(SIP_REGISTRATION_STATE, None, kind="account", username=username, state=state,
                                      **({"source": binding.describe()["source"]} if binding else {}))

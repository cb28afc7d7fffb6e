# How a gateway proves itself to the platform: its credentials (an id and a secret,
# made by `edge-gateway platform add-gateway` and kept in a 0600 file), and the HMAC
# over each request that the uplink sends and the platform checks. One home for the
# scheme: gateway/uplink.py signs with it, gateway/platform.py verifies with it, the
# test bench reads the platform with it.
#
#   Authorization: CityNet-HMAC-SHA256 gateway=<id>,ts=<unix s>,nonce=<32 hex>,sig=<64 hex>
#   sig = HMAC-SHA256(secret, "CityNet-HMAC-SHA256\n<id>\n<METHOD>\n<path?query>\n<ts>\n<nonce>\n<sha256 of the body>")
#
# The body digest is over the bytes on the wire (gzip-compressed when the upload is), so
# the platform checks who sent a request before it spends anything on decompressing it.
from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEME = "CityNet-HMAC-SHA256"
FILENAME = "platform-credentials.json"   # in the gateway's data directory, by default
MAX_SKEW_S = 300                          # a request's timestamp may be this far from the platform's clock
NONCE_MEMORY = 100_000                    # nonces remembered at once (each for 2 * MAX_SKEW_S at most)
GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")   # fullmatch
_FIELD = re.compile(r"(gateway|ts|nonce|sig)=([^,\s]+)")
# what each field may hold: anything else is refused before it is used
_SHAPES = {"gateway": GATEWAY_ID, "ts": re.compile(r"[0-9]{1,12}"), "nonce": re.compile(r"[0-9A-Za-z_-]{16,64}"),
           "sig": re.compile(r"[0-9a-f]{64}")}


class CredentialsError(ValueError):
    """A credentials file that cannot be used; the message says which and why."""


class AuthError(Exception):
    """A request the platform refuses: reason is the counter's name, str() the message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Credentials:
    gateway: str
    secret: str                            # hex, 32 bytes

    @classmethod
    def new(cls, gateway: str) -> "Credentials":
        check_gateway_id(gateway)
        return cls(gateway, secrets.token_hex(32))

    @classmethod
    def load(cls, path: str | Path) -> "Credentials":
        """Read a credentials file. Raises CredentialsError naming the file and what to do."""
        data = read_private_json(path, "create the gateway's credentials on the platform with"
                                       " `edge-gateway platform add-gateway ID --out FILE` and copy FILE here")
        if not isinstance(data, dict) or not isinstance(data.get("gateway"), str) \
                or not isinstance(data.get("secret"), str):
            raise CredentialsError('%s: expected {"gateway": ID, "secret": HEX}' % path)
        try:
            check_gateway_id(data["gateway"])
            if len(bytes.fromhex(data["secret"])) < 16:
                raise ValueError("the secret has fewer than 16 bytes")
        except ValueError as e:
            raise CredentialsError("%s: %s" % (path, e)) from None
        return cls(data["gateway"], data["secret"])

    def save(self, path: str | Path) -> None:
        """Write (replacing) with mode 0600: the file holds the secret."""
        write_private(path, json.dumps({"gateway": self.gateway, "secret": self.secret}, indent=1) + "\n")


def check_gateway_id(gateway: str) -> None:
    if not GATEWAY_ID.fullmatch(gateway):
        raise ValueError("gateway id %r: use 1 to 64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)"
                         % gateway)


def read_private_json(path: str | Path, what_to_do: str = "") -> Any:
    """A JSON file that holds secrets, refused when others may read it. Raises CredentialsError."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialsError("%s: no such file%s" % (path, "; " + what_to_do if what_to_do else "")) from None
    except (OSError, ValueError) as e:
        raise CredentialsError("%s: cannot read it (%s)" % (path, e)) from None
    if mode & 0o077:
        raise CredentialsError("%s: mode %04o lets others read the secrets in it; chmod 600 %s" % (path, mode, path))
    return data


def write_private(path: str | Path, text: str) -> None:
    """A file only its owner can read, written whole (temporary file, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


IDEMPOTENCY_RULE = "the first 32 hex digits of sha256(gateway id, newline, the uncompressed body)"


def idempotency_key(gateway: str, body: bytes) -> str:
    """The Idempotency-Key of an upload: bound to the gateway and the content, so no
    other body (a forged one) can claim a genuine upload's key."""
    return hashlib.sha256(gateway.encode() + b"\n" + body).hexdigest()[:32]


def _string_to_sign(gateway: str, method: str, path: str, ts: str, nonce: str, body: bytes) -> bytes:
    return "\n".join((SCHEME, gateway, method.upper(), path, ts, nonce,
                      hashlib.sha256(body).hexdigest())).encode()


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(bytes.fromhex(secret), message, hashlib.sha256).hexdigest()


def sign(creds: Credentials, method: str, path: str, body: bytes = b"",
         now: float | None = None) -> dict[str, str]:
    """The Authorization header for one request (path with its query string, as sent)."""
    ts = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    sig = _mac(creds.secret, _string_to_sign(creds.gateway, method, path, ts, nonce, body))
    return {"Authorization": "%s gateway=%s,ts=%s,nonce=%s,sig=%s" % (SCHEME, creds.gateway, ts, nonce, sig)}


def parse(header: str | None) -> dict[str, str]:
    """The fields of an Authorization header. Raises AuthError."""
    if not header:
        raise AuthError("missing", "no Authorization header: every request to /v1/ must be signed"
                                   " with the gateway's credentials (docs/platform.md)")
    scheme, _, rest = header.partition(" ")
    fields = dict(_FIELD.findall(rest))
    if scheme != SCHEME or set(fields) != set(_SHAPES) or not all(_SHAPES[k].fullmatch(v) for k, v in fields.items()):
        raise AuthError("malformed", "Authorization: expected '%s gateway=ID,ts=UNIX SECONDS,nonce=16 TO 64"
                                     " OF [0-9A-Za-z_-],sig=64 HEX DIGITS'" % SCHEME)
    return fields


class Verifier:
    """The platform's side: checks the signature, the clock and the nonce of each request.
    Nonces are remembered until their timestamp is too old to pass anyway, so the memory
    is bounded by the request rate over 2 * MAX_SKEW_S, and capped: when it is full,
    requests are refused as "busy" (429, retried) rather than a nonce forgotten early."""

    def __init__(self, max_skew: float = MAX_SKEW_S, capacity: int = NONCE_MEMORY) -> None:
        self.max_skew = max_skew
        self.capacity = capacity
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []     # a heap: (forget after, nonce)

    def check(self, fields: dict[str, str], secret: str | None, method: str, path: str, body: bytes,
              now: float | None = None) -> str:
        """The authenticated gateway id. Raises AuthError."""
        now = time.time() if now is None else now
        gateway = fields["gateway"]
        if secret is None:
            raise AuthError("unknown_gateway", "gateway %r is not known to this platform; add it with"
                                               " `edge-gateway platform add-gateway %s`" % (gateway[:64], gateway[:64]))
        want = _mac(secret, _string_to_sign(gateway, method, path, fields["ts"], fields["nonce"], body))
        if not hmac.compare_digest(want, fields["sig"]):
            raise AuthError("bad_signature", "the signature does not match: wrong secret for gateway %s,"
                                             " or the request was altered on the way" % gateway)
        skew = int(fields["ts"]) - now
        if abs(skew) > self.max_skew:
            raise AuthError("stale", "timestamp %s is %+.0f s from the platform's clock (at most %d s"
                                     " allowed): check the gateway's clock (NTP)" % (fields["ts"], skew, self.max_skew))
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(heapq.heappop(self._expiry)[1])
        key = gateway + " " + fields["nonce"]
        if key in self._seen:
            raise AuthError("replayed", "nonce %s was used before: a replayed request" % fields["nonce"])
        if len(self._seen) >= self.capacity:
            raise AuthError("busy", "too many requests in the last %d s to remember their nonces; retry later"
                                    % (2 * self.max_skew))
        self._seen.add(key)
        heapq.heappush(self._expiry, (int(fields["ts"]) + self.max_skew, key))
        return gateway

# Who may open the status page when it listens beyond this machine: names and scrypt
# hashes of their passwords in a 0600 JSON file (`edge-gateway status-login add`), checked
# against HTTP Basic authentication. Never a password on a command line, never one in
# clear on disk; the gateway holds only the hashes.
#
#   {"logins": {"duty": "scrypt$16384$8$1$<salt hex>$<hash hex>"}}
#
# A browser sends the same Authorization header with every poll (every few seconds), and
# scrypt costs about 50 ms of CPU by design: a header that verified once is remembered
# (by its SHA-256) for REMEMBER_S, so only a new or wrong one pays.
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

from gateway import auth

N, R, P = 2 ** 14, 8, 1           # scrypt cost: about 16 MB and 50 ms per check
REMEMBER_S = 300.0
REMEMBER_MAX = 100                # remembered headers at once
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MIN_PASSWORD = 10


class LoginError(ValueError):
    """A logins file or a new login that cannot be used; the message says which and why."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=64 * 1024 * 1024)
    return "scrypt$%d$%d$%d$%s$%s" % (N, R, P, salt.hex(), digest.hex())


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 1024 * 1024)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def check_name(name: str) -> None:
    if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        raise LoginError("login name %r: 1 to 64 of A-Z a-z 0-9 . _ -" % name[:80])


def load(path: str | Path) -> dict[str, str]:
    """name -> hash. Raises LoginError (no file, open to others, not the expected shape)."""
    try:
        data = auth.read_private_json(path, "make it with `edge-gateway status-login add NAME --file %s`" % path)
    except auth.CredentialsError as e:
        raise LoginError(str(e)) from None
    logins = data.get("logins") if isinstance(data, dict) else None
    if not isinstance(logins, dict) or not logins or not all(
            isinstance(v, str) and v.startswith("scrypt$") for v in logins.values()):
        raise LoginError('%s: expected {"logins": {"NAME": "scrypt$..."}} with at least one login,'
                         " as `edge-gateway status-login add` writes it" % path)
    return dict(logins)


def add(path: str | Path, name: str, password: str) -> bool:
    """Add or replace a login in the file (made 0600 if new). True if it replaced one."""
    check_name(name)
    if len(password) < MIN_PASSWORD:
        raise LoginError("the password has %d characters; give at least %d" % (len(password), MIN_PASSWORD))
    logins = load(path) if Path(path).exists() else {}
    replaced = name in logins
    logins[name] = hash_password(password)
    auth.write_private(path, json.dumps({"logins": logins}, indent=1, sort_keys=True) + "\n")
    return replaced


class BasicAuth:
    """Checks an Authorization header against the logins."""

    def __init__(self, logins: dict[str, str]) -> None:
        self.logins = logins
        self._good: dict[bytes, float] = {}     # sha256 of a header that verified -> until when

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        key = hashlib.sha256(header.encode("latin-1", "replace")).digest()
        now = time.monotonic()
        if self._good.get(key, 0.0) > now:
            return True
        try:
            name, sep, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        stored = self.logins.get(name)
        # an unknown name costs a check too, so the time taken does not tell which names exist
        good = check_password(password, stored or next(iter(self.logins.values())))
        if not (sep and stored is not None and good):
            return False
        if len(self._good) >= REMEMBER_MAX:
            self._good = {k: v for k, v in self._good.items() if v > now}
            if len(self._good) >= REMEMBER_MAX:
                self._good.clear()
        self._good[key] = now + REMEMBER_S
        return True

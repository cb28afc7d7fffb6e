# The device registry: which device ids may send events, each one's secret (the HMAC
# key of edge.codec) and sensor profile. One JSON file, devices.json (mode 0600), in the
# data dir:
#   {"<device_id>": {"secret": "<hex>", "profile": "elevator", ...,
#                    "previous": {"secret": "<hex>", "until": <unix time>}}}
# "previous" is the key a rotation replaced (edgectl provision --rotate, edge-gateway
# devices add --replace): still accepted until "until" (GRACE_S after the rotation), so
# the events a device signed before it got the new key, still in its outbox, get in.
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets as _secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import ids
from edge.codec import MAC_LEN, Signer
from edge.config import SECRET_RULE, is_secret
from edge.profiles import NAMES as PROFILES

FILENAME = "devices.json"
# The id rule is edge.ids, the one the agent checks its config with; this is its
# characters and length as a regular expression, for docs/platform-api.yaml.
DEVICE_ID_RE = re.compile(ids.PATTERN)
GRACE_S = 7 * 86400     # how long a rotated-out key is still accepted


class GatewaySigner(Signer):
    """edge.event.Signer as the gateway runs it, for every event and every ack: the same
    MAC, with the pads hashed once (CPython can copy a hash state, MicroPython cannot, so
    the board's Signer hashes them again for every MAC) and compared in C."""

    def __init__(self, key: bytes, device_id: str) -> None:
        super().__init__(key, device_id)
        self._inner = hashlib.sha256(self._ipad)
        self._outer = hashlib.sha256(self._opad)

    def mac(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]

    def check(self, msg: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.mac(msg), mac)


class RegistryError(Exception):
    """devices.json cannot be read or an entry is invalid; the message names the file and place."""


@dataclass(frozen=True)
class Device:
    device_id: str
    secret: str                      # hex; Signer key = bytes.fromhex(secret)
    profile: str
    extra: dict[str, Any] = field(default_factory=dict)
    previous: str | None = None      # the key before the last rotation, accepted until previous_until
    previous_until: float = 0.0

    def signer(self) -> Signer:
        return GatewaySigner(bytes.fromhex(self.secret), self.device_id)

    def to_json(self) -> dict[str, Any]:
        out = {"secret": self.secret, "profile": self.profile, **self.extra}
        if self.previous is not None:
            out["previous"] = {"secret": self.previous, "until": self.previous_until}
        return out


def check_device_id(device_id: str) -> None:
    """The agent's own rule (edge.ids), so the registry takes no id a device would refuse."""
    try:
        ids.check(device_id)
    except ValueError as e:
        raise RegistryError("device id %s" % e) from None


def check_profile(profile: object) -> None:
    if profile not in PROFILES:
        raise RegistryError("unknown profile %r; known profiles: %s" % (profile, ", ".join(PROFILES)))


def check_secret(secret: object) -> None:
    if not is_secret(secret):
        raise RegistryError("secret must be %s" % SECRET_RULE)


def new_secret() -> str:
    return _secrets.token_hex(32)


class Registry:
    """The devices of one gateway, loaded from and saved to devices.json.

    The gateway keeps one Registry and calls refresh() when an unknown device shows
    up, so `edge-gateway devices add` takes effect without a restart.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._devices: dict[str, Device] = {}
        self._signers: dict[str, Signer] = {}
        self._previous: dict[str, Signer] = {}     # of the keys in their grace period
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def in_dir(cls, data_dir: str | Path) -> "Registry":
        return cls(Path(data_dir) / FILENAME).load()

    def load(self) -> "Registry":
        """Read the file (a missing file is an empty registry). Raises RegistryError."""
        try:
            st = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._devices, self._signers, self._previous, self._stamp = {}, {}, {}, None
            return self
        except OSError as e:
            raise RegistryError("%s: cannot read: %s" % (self.path, e.strerror)) from e
        except UnicodeDecodeError as e:
            raise RegistryError("%s: not UTF-8 (byte 0x%02x at offset %d): fix that byte (the file holds"
                                " only ids and hex secrets, plain ASCII) or restore the file from a backup"
                                % (self.path, e.object[e.start], e.start)) from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RegistryError("%s: not valid JSON: %s at line %d column %d (character %d)"
                                % (self.path, e.msg, e.lineno, e.colno, e.pos)) from e
        self._devices = self._parse(data)
        self._signers, self._previous = {}, {}
        self._stamp = (st.st_mtime_ns, st.st_size)
        return self

    def _parse(self, data: Any) -> dict[str, Device]:
        if not isinstance(data, dict):
            raise RegistryError("%s: the top level must be an object {device_id: {...}}" % self.path)
        devices = {}
        for device_id, entry in data.items():
            where = "%s: device %r" % (self.path, device_id)
            if not isinstance(entry, dict):
                raise RegistryError("%s: must be an object with secret and profile" % where)
            try:
                check_device_id(device_id)
                secret = entry.get("secret")
                if not isinstance(secret, str):
                    raise RegistryError("field 'secret' is missing or not a string")
                check_secret(secret)
                prev = entry.get("previous")
                if prev is not None and not (isinstance(prev, dict) and is_secret(prev.get("secret"))
                                             and isinstance(prev.get("until"), (int, float))):
                    raise RegistryError("field 'previous' must be {\"secret\": %s, \"until\": unix time}"
                                        % SECRET_RULE)
                profile = entry.get("profile")
                if not isinstance(profile, str) or not profile:
                    raise RegistryError("field 'profile' is missing or not a string")
                check_profile(profile)
            except RegistryError as e:
                raise RegistryError("%s: %s" % (where, e)) from None
            extra = {k: v for k, v in entry.items() if k not in ("secret", "profile", "previous")}
            devices[device_id] = Device(device_id, secret, profile, extra, *(
                (prev["secret"], float(prev["until"])) if prev else ()))
        return devices

    def refresh(self) -> bool:
        """Reload if the file changed on disk since the last load; True when it did.

        A file that became invalid keeps the devices already loaded (and raises), so a
        typo during an edit does not lock every device out.
        """
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        self.load()
        return True

    def save(self) -> None:
        """Write atomically: temp file, fsync, rename, fsync the directory.

        A crash leaves either the old or the new file, never half of one. Mode 0600:
        the file holds device secrets.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {d: dev.to_json() for d, dev in sorted(self._devices.items())}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        st = self.path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size)

    def add(self, device_id: str, profile: str, secret: str | None = None,
            replace: bool = False, grace_s: float = GRACE_S, **extra: Any) -> Device:
        """Add a device (in memory; call save()). A secret is generated when not given.
        Replacing a device's secret keeps the old one for grace_s seconds."""
        check_device_id(device_id)
        old = self._devices.get(device_id)
        if old is not None and not replace:
            raise RegistryError("device %r is already in %s" % (device_id, self.path))
        secret = secret if secret is not None else new_secret()
        check_secret(secret)
        check_profile(profile)
        secret = secret.lower()
        keep: tuple[str | None, float] = (None, 0.0)
        if old is not None and grace_s > 0:
            # the same secret again is no rotation: a grace period under way runs on
            keep = (old.previous, old.previous_until) if old.secret == secret else (old.secret, time.time() + grace_s)
        dev = Device(device_id, secret, profile, dict(extra), *keep)
        self._devices[device_id] = dev
        self._signers.pop(device_id, None)
        self._previous.pop(device_id, None)
        return dev

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def signer(self, device_id: str) -> Signer | None:
        """The device's Signer, built once: it precomputes the HMAC pads."""
        s = self._signers.get(device_id)
        if s is None:
            dev = self._devices.get(device_id)
            if dev is None:
                return None
            s = self._signers[device_id] = dev.signer()
        return s

    def previous_signer(self, device_id: str, now: float | None = None) -> Signer | None:
        """The Signer of the key the last rotation replaced, while its grace period lasts."""
        dev = self._devices.get(device_id)
        if dev is None or dev.previous is None or (time.time() if now is None else now) >= dev.previous_until:
            return None
        s = self._previous.get(device_id)
        if s is None:
            s = self._previous[device_id] = GatewaySigner(bytes.fromhex(dev.previous), device_id)
        return s

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __len__(self) -> int:
        return len(self._devices)

    def devices(self) -> list[Device]:
        return [self._devices[k] for k in sorted(self._devices)]

"""Broker credentials for devices and the gateway: a mosquitto password file and ACL file,
and the mosquitto that enforces them (`edgectl broker`, tools/broker.py, runs it).

Each device gets its own user (its id) whose password is derived from its secret
(gateway.broker.device_password, which the embedded broker checks too), and
ACL lines that let it publish only under dev/<id>/ and subscribe only to dev/<id>/cmd/.
The gateway has its own user that reads dev/+/ev and dev/+/status. Files are written
atomically with mode 0600; mosquitto reloads both on SIGHUP.

Layout of the auth directory (by default gateway-data/mosquitto):
    passwd            user:$7$<iterations>$<salt>$<hash> (PBKDF2-SHA512, mosquitto 2)
    acl               one block per user, managed here
    gateway.password  the gateway user's password (0600), for `edge-gateway run --broker`
    mosquitto.conf    written by `edgectl broker`; mosquitto.pid while it runs
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import signal
import ssl
import sys

from edge.ids import GATEWAY_USER
from gateway.broker import device_password  # noqa: F401 (its home; provision and tests use it from here)
from tools.common.mosquitto import Mosquitto, ServerTls

ITERATIONS = 101          # what mosquitto_passwd writes for $7$
DEFAULT_DIR = os.path.join("gateway-data", "mosquitto")


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """mosquitto's $7$ format, as mosquitto_passwd writes it (without the password
    ever appearing on a command line)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "$7$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def check_password(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, _ = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    return hmac.compare_digest(hash_password(password, base64.b64decode(salt), int(iterations)), hashed)


def der_certificate(pem_path: str) -> bytes:
    """A PEM certificate (a site's CA) as DER, the form a board's ssl module loads."""
    try:
        with open(pem_path) as fh:
            return ssl.PEM_cert_to_DER_cert(fh.read().strip())
    except (OSError, ValueError) as e:
        raise ValueError("%s: not a readable PEM certificate (%s)" % (pem_path, e)) from None


def device_acl(device_id: str) -> list[str]:
    return ["user %s" % device_id,
            "topic write dev/%s/#" % device_id,
            "topic read dev/%s/cmd/#" % device_id]


def gateway_acl(user: str = GATEWAY_USER) -> list[str]:
    return ["user %s" % user, "topic read dev/+/ev", "topic read dev/+/status",
            "topic write dev/+/cmd/#"]


def write_private(path: str, text: str) -> None:
    """Atomically, mode 0600 from the first byte: these files hold secrets or hashes."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class BrokerAuth:
    """The password and ACL files of one broker."""

    def __init__(self, directory: str = DEFAULT_DIR) -> None:
        self.dir = directory
        self.passwd = os.path.join(directory, "passwd")
        self.acl = os.path.join(directory, "acl")
        self.pid_file = os.path.join(directory, "mosquitto.pid")

    def _users(self) -> dict[str, str]:
        users = {}
        if os.path.exists(self.passwd):
            for line in open(self.passwd):
                user, sep, hashed = line.strip().partition(":")
                if sep:
                    users[user] = hashed
        return users

    def _blocks(self) -> dict[str, list[str]]:
        """ACL blocks by user; lines before the first `user` line are kept under ''."""
        blocks: dict[str, list[str]] = {"": []}
        current = ""
        if os.path.exists(self.acl):
            for line in open(self.acl):
                line = line.rstrip("\n")
                if line.startswith("user "):
                    current = line[5:].strip()
                    blocks[current] = []
                if line.strip():
                    blocks[current].append(line)
        return blocks

    def set_user(self, user: str, password: str, acl: list[str]) -> bool:
        """Add or update a user; returns True when a file changed (the broker must reload)."""
        return self.set_users({user: (password, acl)})

    def set_users(self, users_in: dict[str, tuple[str, list[str]]]) -> bool:
        """Add or update users, user -> (password, ACL lines), each file written once
        (a fleet of thousands in one go); returns True when a file changed."""
        os.makedirs(self.dir, exist_ok=True)
        users = self._users()
        blocks = self._blocks()
        new_users = new_acl = False
        for user, (password, acl) in users_in.items():
            if user not in users or not check_password(password, users[user]):
                users[user] = hash_password(password)
                new_users = True
            if blocks.get(user) != acl:
                blocks[user] = acl
                new_acl = True
        if new_users:
            write_private(self.passwd, "".join("%s:%s\n" % kv for kv in users.items()))
        if new_acl:
            text = "# managed by edgectl provision: one block per broker user\n"
            text += "".join("\n".join(lines) + "\n\n" for u, lines in blocks.items()
                            if lines and not (u == "" and lines[0].startswith("# managed")))
            write_private(self.acl, text)
        return new_users or new_acl

    def add_device(self, device_id: str, secret_hex: str) -> bool:
        return self.add_devices([(device_id, secret_hex)])

    def add_devices(self, devices: list[tuple[str, str]]) -> bool:
        """(device id, secret hex) each: its password and ACL block."""
        return self.set_users({d: (device_password(s), device_acl(d)) for d, s in devices})

    def gateway_password(self) -> str:
        """The gateway user's password, created on first use."""
        path = os.path.join(self.dir, "gateway.password")
        if os.path.exists(path):
            return open(path).read().strip()
        os.makedirs(self.dir, exist_ok=True)
        password = secrets.token_hex(16)
        write_private(path, password + "\n")
        self.set_user(GATEWAY_USER, password, gateway_acl())
        return password

    def conf_lines(self) -> str:
        return ("password_file %s\nacl_file %s\npid_file %s\n"
                % (os.path.abspath(self.passwd), os.path.abspath(self.acl), os.path.abspath(self.pid_file)))

    def reload(self) -> int | None:
        """SIGHUP the broker named by mosquitto.pid (one started by `edgectl broker`);
        returns its pid, or None when there is no such broker running."""
        try:
            pid = int(open(self.pid_file).read().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError):
            return None
        return pid


def start_broker(auth: BrokerAuth, port: int | None = None, tls: ServerTls | None = None) -> Mosquitto:
    """A private mosquitto on 127.0.0.1 that refuses anonymous clients and enforces the ACL
    (with tls: on a TLS-only listener)."""
    auth.gateway_password()
    for path in (auth.passwd, auth.acl):
        if not os.path.exists(path):
            write_private(path, "")
    return Mosquitto(auth.dir, port=port, extra=auth.conf_lines(), anonymous=False, tls=tls).start()


def running_port(auth: BrokerAuth) -> int | None:
    """The port of a broker that `edgectl broker` runs from this directory, or None."""
    try:
        pid = int(open(auth.pid_file).read().strip())
        os.kill(pid, 0)
        return int(open(os.path.join(auth.dir, "port")).read().strip())
    except (OSError, ValueError):
        return None


def ensure_broker(auth: BrokerAuth, timeout: float = 15) -> int:
    """A sandbox broker for the virtual board: the one running from auth.dir, or a new
    `edgectl broker` in the background on a free port. Returns its port."""
    import subprocess
    import time
    from tools.common import runtime
    from tools.common.procs import free_port
    port = running_port(auth)
    if port:
        return port
    os.makedirs(auth.dir, exist_ok=True)
    port = free_port()
    log = open(os.path.join(auth.dir, "broker.out"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tools.edgectl", "broker", "--dir", os.path.abspath(auth.dir),
                             "--port", str(port)], cwd=runtime.ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if running_port(auth) == port:
            return port
        time.sleep(0.1)
    raise RuntimeError("the sandbox broker did not start: see %s" % os.path.join(auth.dir, "broker.out"))

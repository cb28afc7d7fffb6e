# Which MQTT broker the gateway uses: an embedded amqtt broker in the same process
# (embedded_broker.py: the zero set-up default for a small site and the demo) or an
# external one such as mosquitto, given as mqtts://[user@]host[:port] (TLS, the broker's
# certificate checked against --broker-ca or the system's CAs) or mqtt://... (plain: only
# to a loopback broker, or with --insecure-plain-mqtt). A cluster's nodes are listed in
# one URL, mqtts://user@n1:8883,n2:8883,n3:8883: the gateway tries them in turn when
# one fails (docs/broker-cluster.md). On a nats-server cluster the gateway may speak
# NATS instead, to the nodes' client ports: tls://user@n1:4222,... (TLS) or nats://...
# (plain, with the same rule as mqtt://), so that several gateways share the devices
# through a queue group (gateway/nats.py). The password never comes in the
# URL (a command line is visible to every user in /proc): --broker-password-file or
# $EDGE_GATEWAY_BROKER_PASSWORD. This module is the address and who may log in: parsing
# the URL and the listen address, the TLS context, the passwords, and the errors.
from __future__ import annotations

import functools
import hashlib
import hmac
import os
import ssl
import stat
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from edge.config import is_loopback

DEFAULT_PORT = 1883
TLS_PORT = 8883
NATS_PORT = 4222           # NATS: the same port with or without TLS
# scheme -> (TLS, NATS): which transport ingest uses, and whether it is encrypted
SCHEMES = {"mqtt": (False, False), "mqtts": (True, False), "nats": (False, True), "tls": (True, True)}
PASSWORD_ENV = "EDGE_GATEWAY_BROKER_PASSWORD"
INSECURE_FLAG = "--insecure-plain-mqtt"


class BrokerError(Exception):
    """The broker URL is wrong, or the broker cannot be reached or started."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca: str | None = None      # the CA file the broker's certificate must chain to; None: the system's
    more: tuple[tuple[str, int], ...] = ()   # a cluster's other nodes (host, port), tried in turn
    nats: bool = False         # NATS core protocol (nats://, tls://) rather than MQTT

    @property
    def scheme(self) -> str:
        return next(name for name, kind in SCHEMES.items() if kind == (self.tls, self.nats))

    @property
    def url(self) -> str:
        """The URL without the password, for log lines and error messages."""
        user = (self.username + "@") if self.username else ""
        hosts = ",".join("%s:%d" % node for node in ((self.host, self.port),) + self.more)
        return "%s://%s%s" % (self.scheme, user, hosts)

    def nodes(self) -> list["BrokerAddress"]:
        """One address per node, in the order given (one for a single broker)."""
        return [replace(self, host=host, port=port, more=()) for host, port in ((self.host, self.port),) + self.more]

    def ssl_context(self) -> ssl.SSLContext | None:
        """For mqtts:// and tls://: a client context that checks the broker's certificate and name
        (made once; the service asks for it at start, so a bad CA file stops the start)."""
        return self._context if self.tls else None

    @functools.cached_property
    def _context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca)
        except (OSError, ssl.SSLError) as e:
            raise BrokerError("--broker-ca %s: cannot load it as a PEM CA certificate (%s)" % (self.ca, e)) from None


def parse_broker_url(url: str, password: str | None = None, ca: str | None = None,
                     insecure_plain: bool = False) -> BrokerAddress:
    """mqtts://[user@]host[:port] or mqtt://... (MQTT), tls://... or nats://... (NATS,
    gateway/nats.py); password and ca come separately. Several
    hosts, comma-separated (mqtts://user@n1,n2:8884), are the nodes of one cluster: the
    same user, password, CA and rules for each."""
    scheme, sep, rest = url.partition("://")
    user, at, hosts = rest.rpartition("@")
    hosts_list = hosts.split(",")
    try:
        nodes = [_parse_one(scheme + sep + user + at + host, password, ca, insecure_plain) for host in hosts_list]
    except BrokerError as e:
        if len(hosts_list) == 1:
            raise
        raise BrokerError("%s (in a list of a cluster's nodes: host[:port],host[:port],...)" % e) from None
    return replace(nodes[0], more=tuple((n.host, n.port) for n in nodes[1:]))


def _parse_one(url: str, password: str | None, ca: str | None, insecure_plain: bool) -> BrokerAddress:
    parts = urlsplit(url)
    shown = url if parts.password is None else url.replace(":" + parts.password + "@", ":***@", 1)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise BrokerError("broker %r: expected 'embedded', mqtts://host[:port], mqtt://host[:port],"
                          " tls://host[:port] or nats://host[:port] (NATS)" % shown)
    if parts.password is not None:
        raise BrokerError("broker %s: no password in the URL (every user can read a command line in /proc);"
                          " put it in a file only the gateway's user can read (chmod 600) and pass"
                          " --broker-password-file FILE, or set $%s" % (shown, PASSWORD_ENV))
    tls, nats = SCHEMES[parts.scheme]
    secure, secure_port = ("tls", NATS_PORT) if nats else ("mqtts", TLS_PORT)
    try:
        port = parts.port or (NATS_PORT if nats else TLS_PORT if tls else DEFAULT_PORT)
    except ValueError:
        raise BrokerError("broker %r: the port is not a number" % shown) from None
    if not tls:
        if ca is not None:
            raise BrokerError("--broker-ca is for a TLS broker: use %s://%s:%d" % (secure, parts.hostname, secure_port))
        if not (insecure_plain or is_loopback(parts.hostname)):
            raise BrokerError("broker %s: plain %s would send the broker password and every event in clear"
                              " over the network; use %s://%s:%d with --broker-ca FILE (the CA that signed"
                              " the broker's certificate, docs/tls.md), or %s on a network you trust"
                              % (shown, "NATS" if nats else "MQTT", secure, parts.hostname, secure_port,
                                 INSECURE_FLAG))
    return BrokerAddress(parts.hostname, port, unquote(parts.username) if parts.username else None,
                         password, tls, ca, nats=nats)


def read_password_file(path: str, flag: str = "--broker-password-file") -> str:
    """The first line of a file only its owner may read (like ssh with its keys); flag:
    the option that named it, for the messages."""
    try:
        with open(path, encoding="utf-8") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            text = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise BrokerError("%s %s: cannot read it (%s)" % (flag, path, e)) from None
    if mode & 0o077:
        raise BrokerError("%s %s: mode %04o lets other users read the password;"
                          " chmod 600 %s" % (flag, path, mode, path))
    if not text:
        raise BrokerError("%s %s: the file is empty" % (flag, path))
    return text


def broker_password(path: str | None) -> str | None:
    """The gateway's broker password: from the file, else from $EDGE_GATEWAY_BROKER_PASSWORD."""
    return read_password_file(path) if path else (os.environ.get(PASSWORD_ENV) or None)


def device_password(secret_hex: str) -> str:
    """The broker password of a device, derived from its secret: rotating the secret
    rotates the password, and there is one thing to keep per device, not two.
    edgectl provision writes it into the device's config and mosquitto's password file;
    the embedded broker checks it against the registry."""
    return hmac.new(bytes.fromhex(secret_hex), b"citynet-edge mqtt password", hashlib.sha256).hexdigest()[:32]


def parse_listen(listen: str, default_port: int) -> tuple[str, int]:
    """'host:port' (or ':port', or 'host') -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        return listen, default_port
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise BrokerError("listen address %r: the port is not a number" % listen) from None


def describe_os_error(e: BaseException) -> str:
    """'Address already in use' rather than asyncio's long wrapped message."""
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    return str(e)

# Which MQTT broker the gateway uses: an embedded amqtt broker in the same process
# (embedded_broker.py: the zero set-up default for a small site and the demo) or an
# external one such as mosquitto, given as mqtt://[user[:password]@]host[:port].
# This module is the address: parsing the URL and the listen address, and the error.
from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 1883


class BrokerError(Exception):
    """The broker URL is wrong, or the broker cannot be reached or started."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """The URL without the password, for log lines and error messages."""
        user = (self.username + "@") if self.username else ""
        return "mqtt://%s%s:%d" % (user, self.host, self.port)


def parse_broker_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise BrokerError("broker %r: expected 'embedded' or mqtt://host[:port]" % url)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise BrokerError("broker %r: the port is not a number" % url) from None
    return BrokerAddress(parts.hostname, port,
                         unquote(parts.username) if parts.username else None,
                         unquote(parts.password) if parts.password else None)


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

# The embedded MQTT broker: amqtt on the gateway's own event loop, the zero set-up default
# (--broker embedded) for a small site and the demo. Imported only when it is used: amqtt
# costs the gateway process 4 MB that a gateway on mosquitto does not need.
#
# Limitation of the embedded broker (amqtt 0.12, checked with paho 2.2): persistent
# sessions and QoS 1 work (messages published while the gateway is disconnected are
# queued and delivered when it comes back), but a QoS 1 message that was in flight to
# the gateway and not yet acknowledged is DROPPED when the gateway disconnects or does
# not ack within 5 s; mosquitto redelivers it. And the broker's queue lives in the
# gateway's memory, so a gateway crash loses what the broker held. Neither loses an
# event: a device keeps it until the gateway's own acknowledgement (edge/ack.py) and
# sends it again (tests/test_chaos.py). It has no ACL: on a shared network use mosquitto.
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from gateway.broker import DEFAULT_PORT, BrokerAddress, BrokerError, describe_os_error, parse_listen

log = logging.getLogger(__name__)


class OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints for it
    """Accept every client; a client with a username counts as non-anonymous.

    amqtt's own AnonymousAuthPlugin with allow_anonymous marks EVERY session anonymous,
    and amqtt keeps no messages for anonymous sessions while they are offline, which
    would turn the gateway's persistent session into a clean one. The gateway connects
    with a username (its id), so its session keeps QoS 1 messages while it restarts.
    Devices need no account: their events are authenticated by the HMAC in each event.
    """

    async def authenticate(self, *, session: Session) -> bool:
        session.is_anonymous = not session.username
        return True

    @dataclass
    class Config:
        pass


class EmbeddedBroker:
    """An amqtt broker on the running event loop. Port 0 picks a free port."""

    def __init__(self, listen: str = "127.0.0.1:%d" % DEFAULT_PORT) -> None:
        self.host, self.port = parse_listen(listen, DEFAULT_PORT)
        self._broker: Broker | None = None

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port)

    async def start(self) -> BrokerAddress:
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": "%s:%d" % (self.host, self.port)}},
            # only our auth plugin: no $SYS publishing, no per-packet logging
            "plugins": {"gateway.embedded_broker.OpenAuthPlugin": {}},
        }
        # amqtt logs every client timeout with a traceback; keep its warnings, not its chatter
        logging.getLogger("amqtt").setLevel(max(logging.WARNING, logging.getLogger().level))
        logging.getLogger("transitions").setLevel(logging.WARNING)
        broker = Broker(config)
        # amqtt logs a failed start with a full traceback; the BrokerError below says it in one line
        amqtt_log = logging.getLogger("amqtt.broker")
        level = amqtt_log.level
        amqtt_log.setLevel(logging.CRITICAL)
        try:
            await broker.start()
        except Exception as e:
            raise BrokerError("cannot start the embedded MQTT broker on %s:%d: %s. Is another broker"
                              " listening there? Pick a free address with --listen HOST:PORT, or use"
                              " that broker with --broker mqtt://%s:%d"
                              % (self.host, self.port, describe_os_error(e), self.host, self.port)) from e
        finally:
            amqtt_log.setLevel(level)
        self._broker = broker
        if self.port == 0:
            server = self._broker._servers["default"]   # amqtt has no public accessor for this
            self.port = server.instance.sockets[0].getsockname()[1]
        log.info("embedded MQTT broker (amqtt) listening on %s:%d", self.host, self.port)
        return self.address

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

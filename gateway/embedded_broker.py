# The embedded MQTT broker: amqtt on the gateway's own event loop, the zero set-up default
# (--broker embedded) for a small site and the demo. Imported only when it is used: amqtt
# costs the gateway process 4 MB that a gateway on mosquitto does not need.
#
# Who may connect: the devices of the registry (devices.json), each as user <device id>
# with client id <device id> and the password derived from its secret
# (gateway.broker.device_password, what edgectl provision writes into its config and into
# mosquitto's password file), and the gateway itself (user ids.GATEWAY_USER with a random
# password made for this process). Nobody anonymous. A device may publish (its will
# included), subscribe and receive only under dev/<its id>/: the same rule as the
# mosquitto ACL of tools/common/credentials.py. amqtt asks its auth plugin only after it
# has dropped the old session of a clean-session client id and taken over a connected
# one, so an anonymous CONNECT with the gateway's client id would have cut the gateway
# off its subscriptions: GuardedBroker authenticates a CONNECT before amqtt looks at it.
#
# Limitation of the embedded broker (amqtt 0.12, checked with paho 2.2): persistent
# sessions and QoS 1 work (messages published while the gateway is disconnected are
# queued and delivered when it comes back), but a QoS 1 message that was in flight to
# the gateway and not yet acknowledged is DROPPED when the gateway disconnects or does
# not ack within 5 s; mosquitto redelivers it. And the broker's queue lives in the
# gateway's memory, so a gateway crash loses what the broker held. Neither loses an
# event: a device keeps it until the gateway's own acknowledgement (edge/ack.py) and
# sends it again (tests/test_chaos.py). It speaks plain MQTT: it listens on loopback
# unless --insecure-plain-mqtt says otherwise; a site network gets mosquitto with TLS.
from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id

from edge import ids
from edge.config import is_loopback
from gateway.broker import (DEFAULT_PORT, INSECURE_FLAG, BrokerAddress, BrokerError, describe_os_error,
                            device_password, parse_listen)
from gateway.registry import Registry, RegistryError

log = logging.getLogger(__name__)


class DeviceAuthPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Passwords from the registry, topics under dev/<id>/ (see the header)."""

    @dataclass
    class Config:
        registry: Any = None             # the gateway's Registry
        gateway_password: str = ""

    def _allowed(self, session: Session) -> bool:
        user, password = session.username, session.password or ""
        if not user:
            return False
        if user == ids.GATEWAY_USER:
            return hmac.compare_digest(password.encode(), self.config.gateway_password.encode())
        registry: Registry = self.config.registry
        device = registry.get(user)
        if device is None:
            try:
                registry.refresh()     # `devices add` takes effect without a restart
            except RegistryError as e:
                log.error("embedded broker: %s", e)
            device = registry.get(user)
        return (device is not None and session.client_id == user
                and hmac.compare_digest(password.encode(), device_password(device.secret).encode())
                and (not session.will_flag or _under(user, session.will_topic)))

    async def authenticate(self, *, session: Session) -> bool:
        ok = self._allowed(session)
        session.is_anonymous = False     # amqtt keeps nothing for anonymous sessions
        if not ok:   # names from the network in repr: a newline cannot write a fake log line
            log.warning("embedded broker: refused %s:%s (user %r, client id %r)", session.remote_address,
                        session.remote_port, session.username, session.client_id)
        return ok

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        user = session.username if session is not None else None
        return user == ids.GATEWAY_USER or (user is not None and _under(user, topic))


def _under(device_id: str, topic: str | None) -> bool:
    """Is topic (a name or a filter) in the device's own tree, dev/<id>/...?"""
    return topic is not None and topic.startswith("dev/%s/" % device_id)


class GuardedBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, with the CONNECT authenticated before its client id touches a
    session (amqtt 0.12.1 checks it after)."""

    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        session.remote_address, session.remote_port = remote_address, remote_port
        if not await self._authenticate(session, None):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError("not authorized")
        # from here on, what amqtt 0.12.1 does (Broker._initialize_client_session)
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            old, _ = self._sessions[session.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username",
                         "password"):
                setattr(old, name, getattr(session, name))
            session = old
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session


class EmbeddedBroker:
    """An amqtt broker on the running event loop. Port 0 picks a free port."""

    def __init__(self, listen: str, registry: Registry, insecure_plain: bool = False) -> None:
        self.host, self.port = parse_listen(listen, DEFAULT_PORT)
        if not (insecure_plain or is_loopback(self.host)):
            raise BrokerError("--listen %s: the embedded broker speaks plain MQTT, which would send the devices'"
                              " passwords and events in clear over the network; keep it on 127.0.0.1, use"
                              " mosquitto with TLS for a site network (docs/tls.md), or pass %s on a network"
                              " you trust" % (listen, INSECURE_FLAG))
        self.registry = registry
        self.password = secrets.token_hex(16)     # the gateway's, for this process only
        self._broker: Broker | None = None

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, ids.GATEWAY_USER, self.password)

    async def start(self) -> BrokerAddress:
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": "%s:%d" % (self.host, self.port)}},
            # only our plugin: no $SYS publishing, no per-packet logging
            "plugins": {"gateway.embedded_broker.DeviceAuthPlugin": {
                "registry": self.registry, "gateway_password": self.password}},
        }
        # amqtt logs every client timeout with a traceback; keep its warnings, not its chatter
        logging.getLogger("amqtt").setLevel(max(logging.WARNING, logging.getLogger().level))
        logging.getLogger("transitions").setLevel(logging.WARNING)
        broker = GuardedBroker(config)
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
        log.info("embedded MQTT broker (amqtt) listening on %s:%d; devices log in with their id and"
                 " broker password", self.host, self.port)
        return self.address

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

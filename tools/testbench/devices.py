"""Device stand-ins for tests and benchmarks: the one signed-event builder (the exact
bytes an agent sends, edge/event.py) and the one MQTT publisher (paho, QoS 1).
"""
from __future__ import annotations

import threading

from edge import codec
from edge.codes import ACTIONS, code_of

READY_TIMEOUT_S = 10.0
T0 = 1_700_000_000          # the stand-ins' clock: an event's t unless told otherwise
# a telemetry event of each benchmarked profile with every field (edge/codes.py) filled,
# as a real device sends it
TELEMETRY = {"elevator": ("telemetry.elevator", {"mode": 1, "dir": 1, "speed": 1.5, "floor": 3, "door": 0,
                                                 "zone": 1, "occupied": 1, "fault": 0}),
             "water_meter": ("telemetry.water_meter", {"total": 1234.567, "flow": 0.25, "battery": 3.6})}


def signed_event(device_id: str, secret_hex: str, type_name: str, seq: int,
                 values: dict[str, float] | None = None, action: str = "report", boot: int = 1,
                 t: int = T0, clock_set: bool = True) -> bytes:
    """One event as device_id would send it (values by field name, missing ones unknown)."""
    code = code_of(type_name)
    return codec.encode(codec.Signer(bytes.fromhex(secret_hex), device_id), code, ACTIONS.index(action),
                        boot, seq, t, codec.values_of(code, values or {}), clock_set)


def event_topic(device_id: str) -> str:
    return "dev/%s/ev" % device_id


class Publisher:
    """A paho client that publishes QoS 1, connected when constructed (RuntimeError if the
    broker does not answer). Blocking: from async code call it through asyncio.to_thread.
    user/password: a device's broker credentials; inflight: QoS 1 messages unacked at once."""

    def __init__(self, host: str, port: int, client_id: str = "test-publisher", user: str | None = None,
                 password: str | None = None, inflight: int = 20, timeout: float = READY_TIMEOUT_S) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.timeout = timeout
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(inflight)
        if user is not None:
            self.client.username_pw_set(user, password)
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not connected.wait(timeout):
            self.close()
            raise RuntimeError("publisher: no CONNACK from %s:%d" % (host, port))

    def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        """Publish and wait for the broker's PUBACK."""
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(self.timeout)

    def publish_many(self, messages: list[tuple[str, bytes]], window: int = 10_000) -> None:
        """Send a window of messages, then wait for every PUBACK, and so on: a burst, as a
        reconnecting device sends (paho's packet ids wrap at 65535, so keep window below)."""
        for i in range(0, len(messages), window):
            infos = [self.client.publish(t, p, qos=1) for t, p in messages[i:i + window]]
            for info in infos:
                info.wait_for_publish(self.timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

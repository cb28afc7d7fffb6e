# Test rig helpers that start real parts on loopback. This part: a private mosquitto
# broker per test (free port, no persistence), stopped by its PID. The broker itself is
# tools/mosquitto.py, the one the demo and the site runner use.
#
#   broker, port = start_mosquitto(tmp_path)
#   ...
#   stop_mosquitto(broker)
from __future__ import annotations

import os
import threading
from pathlib import Path

from tools.mosquitto import Mosquitto, free_port  # noqa: F401  (free_port: for the tests)

READY_TIMEOUT_S = 5.0


class MosquittoError(RuntimeError):
    """mosquitto could not be started; the message carries its own output."""


def start_mosquitto(tmpdir: str | Path, port: int | None = None,
                    extra_conf: str = "") -> tuple[Mosquitto, int]:
    """Start mosquitto on 127.0.0.1 (a free port unless given), without persistence: a
    restart forgets sessions. Fails loudly (MosquittoError with mosquitto's own output)."""
    broker = Mosquitto(os.path.join(str(tmpdir), "mosquitto"), port, extra=extra_conf, persistence=False)
    try:
        broker.start()
    except RuntimeError as e:
        raise MosquittoError(str(e)) from None
    return broker, broker.port


def stop_mosquitto(broker: Mosquitto) -> None:
    """Stop the broker we started, by its PID; killed if it does not exit in 5 s."""
    broker.stop()


# ---- a device stand-in on MQTT: signed events published with paho ---------------------

def signed_event(secret_hex: str, type_name: str, seq: int, values: dict[str, float] | None = None,
                 action: str = "report", boot: int = 1, t: int = 1_700_000_000,
                 clock_set: bool = True) -> bytes:
    """One edge.codec event as a device would send it (values by field name)."""
    from edge import codec
    from edge.codes import ACTIONS, code_of
    code = code_of(type_name)
    payload: bytes = codec.encode(codec.Signer(bytes.fromhex(secret_hex)), code, ACTIONS.index(action),
                        boot, seq, t, codec.values_of(code, values or {}), clock_set)
    return payload


class Publisher:
    """A paho client that publishes QoS 1 and waits for the broker's PUBACK.

    Blocking: from async code call it through asyncio.to_thread.
    """

    def __init__(self, host: str, port: int, client_id: str = "test-publisher") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not connected.wait(READY_TIMEOUT_S):
            self.close()
            raise RuntimeError("publisher: no CONNACK from %s:%d" % (host, port))

    def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(READY_TIMEOUT_S)

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Send all, then wait for every PUBACK: a burst, as a reconnecting device sends."""
        infos = [self.client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(READY_TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _find_corpus() -> str:
    """The labelled traces the tests and benchmarks read (never the product): $CORPUS_DIR,
    else ../shared/corpus beside the checkout, else the workplace's /work/shared/corpus."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.environ.get("CORPUS_DIR"), os.path.join(here, "..", "..", "shared", "corpus"),
                      "/work/shared/corpus"):
        if candidate and os.path.isdir(os.path.join(candidate, "dev")):
            return os.path.abspath(candidate)
    raise RuntimeError("the labelled corpus is not found: set CORPUS_DIR to the folder holding dev/")


CORPUS = _find_corpus()

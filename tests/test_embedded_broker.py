"""The embedded broker (gateway/embedded_broker.py) refuses anonymous clients, wrong
passwords and borrowed client ids, and keeps each device in its own topic tree; tried
with raw MQTT packets (edge/mqtt.py) against a real gateway."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from edge import mqtt
from gateway.broker import BrokerError, device_password
from gateway.registry import Registry
from gateway.service import Gateway, GatewayConfig

A, B = "elev-a", "elev-b"
SECRETS = {A: "aa" * 32, B: "bb" * 32}
WAIT_S = 5.0


class Client:
    """A blocking MQTT 3.1.1 client on a raw socket: CONNECT, then packets one by one."""

    def __init__(self, port: int, client_id: str, user: str | None = None, password: str | None = None,
                 will: tuple | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), WAIT_S)
        self.rx = b""
        self.sock.sendall(mqtt.connect(client_id, 30, True, user, password, will))
        first, body = self.read()
        assert first == 0x20, first
        self.code = body[1]          # CONNACK return code: 0 accepted, 5 not authorized

    def read(self) -> tuple[int, bytes]:
        while True:
            got = mqtt.parse(self.rx, 0, len(self.rx), 1 << 16)
            if got is not None:
                first, i, end = got
                body, self.rx = self.rx[i:end], self.rx[end:]
                return first, body
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the broker")
            self.rx += chunk

    def publish(self, topic: str, payload: bytes) -> None:
        self.sock.sendall(mqtt.publish(topic.encode(), payload, 1, 1, False, False))
        assert self.read()[0] == 0x40      # amqtt acknowledges a refused publish too, and drops it

    def subscribe(self, topic: str) -> int:
        self.sock.sendall(mqtt.subscribe(1, (topic.encode(),), 0))
        first, body = self.read()
        assert first == 0x90
        return body[2]                 # granted QoS, or 0x80: refused

    def close(self) -> None:
        self.sock.close()


def as_device(port: int, device_id: str, **kw) -> Client:
    return Client(port, device_id, device_id, device_password(SECRETS[device_id]), **kw)


def run(tmp_path: Path, body) -> None:
    reg = Registry.in_dir(tmp_path / "gw")
    for device_id, secret in SECRETS.items():
        reg.add(device_id, "elevator", secret)
    reg.save()

    async def main() -> None:
        cfg = GatewayConfig(data_dir=tmp_path / "gw", platform_url="http://127.0.0.1:9", broker="embedded",
                            listen="127.0.0.1:0", gateway_id="gw-test")
        async with Gateway(cfg) as gw:
            assert gw.broker_address is not None
            loop = asyncio.get_running_loop()

            def wait(predicate) -> None:     # from the test's thread, on the gateway's loop
                asyncio.run_coroutine_threadsafe(gw.metrics.wait_until(predicate, WAIT_S), loop).result()
            await asyncio.to_thread(body, gw, gw.broker_address.port, wait)
    asyncio.run(main())


def test_anonymous_clients_wrong_passwords_and_borrowed_ids_are_refused(tmp_path: Path) -> None:
    def body(gw: Gateway, port: int, wait) -> None:
        refused = [
            Client(port, "nobody"),                                       # anonymous
            Client(port, A, A, "not-the-password"),
            Client(port, A, A, device_password(SECRETS[B])),               # another device's password
            Client(port, "elev-x", "elev-x", device_password(SECRETS[A])),  # not in the registry
            Client(port, B, A, device_password(SECRETS[A])),               # A under B's client id
            Client(port, "gw", "gateway", "guess"),                       # the gateway's user
            as_device(port, A, will=(b"dev/%s/status" % B.encode(), b"offline", 1, True)),   # a will for B
        ]
        assert [c.code for c in refused] == [5] * len(refused)
        for c in refused:
            c.close()
        ok = as_device(port, A, will=(b"dev/%s/status" % A.encode(), b"offline", 1, True))
        assert ok.code == 0
        ok.close()
    run(tmp_path, body)


def test_a_device_cannot_read_or_write_another_devices_topics(tmp_path: Path) -> None:
    def body(gw: Gateway, port: int, wait) -> None:
        a = as_device(port, A)
        assert a.subscribe("dev/%s/ev" % B) == 0x80
        assert a.subscribe("dev/+/ev") == 0x80
        assert a.subscribe("#") == 0x80
        assert a.subscribe("dev/%s/cmd/ack" % A) == 0
        # B's status and events from A's account never reach the gateway; A's own message does
        # (and is rejected there as malformed: what reaches the gateway is counted either way)
        a.publish("dev/%s/status" % B, b"offline")
        a.publish("dev/%s/ev" % B, b"from A")
        a.publish("dev/%s/ev" % A, b"from A")
        m = gw.metrics
        wait(lambda: m.get("ingest.received") >= 1)
        assert (m.get("ingest.received"), m.get("ingest.status")) == (1, 0)
        a.close()
    run(tmp_path, body)


def test_an_anonymous_connect_with_the_gateways_client_id_does_not_cut_it_off(tmp_path: Path) -> None:
    def body(gw: Gateway, port: int, wait) -> None:
        intruder = Client(port, gw.ingest.client_id)    # clean session: amqtt alone would drop the gateway's
        assert intruder.code == 5
        intruder.close()
        a = as_device(port, A)
        a.publish("dev/%s/ev" % A, b"from A")
        m = gw.metrics
        wait(lambda: m.get("ingest.received") == 1)
        assert m.get("ingest.broker_disconnects") == 0
        a.close()
    run(tmp_path, body)


def test_the_embedded_broker_stays_off_the_network_unless_told(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = GatewayConfig(data_dir=tmp_path / "gw", broker="embedded", listen="0.0.0.0:0")
        with pytest.raises(BrokerError, match="--insecure-plain-mqtt"):
            async with Gateway(cfg):
                pass
    asyncio.run(main())


def test_a_real_agent_logs_in_to_the_embedded_broker(tmp_path: Path) -> None:
    """The MicroPython agent with the credentials provisioning gives it (Site writes them):
    its events reach the platform through the embedded broker."""
    from tools.testbench import scenarios
    from tools.testbench.site import Device, Site
    elev = scenarios.write(str(tmp_path / "elev.jsonl.gz"), *scenarios.elevator(seconds=600, entrapment_at=30))
    with Site(str(tmp_path / "site"), [Device("elev-emb", "elevator", elev, speed=4)], broker="embedded") as site:
        events = site.wait_for(lambda ev: any(e["type"] == "elevator.entrapment" for e in ev), timeout=90)
    assert any(e["device"] == "elev-emb" and e["type"] == "elevator.entrapment" for e in events)
    assert "refused" not in site.log_of("gateway")

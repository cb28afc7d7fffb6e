"""The gateway as a process, killed with SIGKILL mid-stream and restarted, between a real
mosquitto and a real platform receiver: everything mosquitto acknowledged to the
publisher reaches the platform, each event stored there once."""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from gateway.cli import main as gateway_cli
from rig import Publisher, free_port, signed_event, start_mosquitto, stop_mosquitto
from tools.testbench.services import Service, add_gateway, platform_get, start_gateway, start_platform

SECRET = "5a" * 32
DEVICES = ["elev-%03d" % i for i in range(1, 4)]
EVENTS_PER_DEVICE = 600
DEADLINE_S = 60.0


class Processes:
    """The platform and gateway processes of one test, stopped by their PIDs."""

    def __init__(self, tmp_path: Path, broker_url: str) -> None:
        self.tmp = tmp_path
        self.broker_url = broker_url
        self.platform_port = free_port()
        self.platform: Service | None = None
        self.gateway: Service | None = None
        self.status_port = 0

    @property
    def platform_url(self) -> str:
        return "http://127.0.0.1:%d" % self.platform_port

    @property
    def credentials(self) -> str:
        return str(self.tmp / "gw-crash.json")

    def start_platform(self) -> None:
        add_gateway(str(self.tmp / "platform.sqlite"), "gw-crash", self.credentials)
        self.platform = start_platform(self.platform_port, str(self.tmp / "platform.sqlite"),
                                       str(self.tmp / "processes.log"))

    def start_gateway(self) -> None:
        self.gateway, self.status_port = start_gateway(
            str(self.tmp / "gw"), self.broker_url, self.platform_url, str(self.tmp / "processes.log"),
            ["--gateway-id", "gw-crash", "--stream", "telemetry:batch_age=0.1,batch_max=100"], self.credentials)

    def get(self, path: str) -> Any:
        """The platform's answer to a GET, signed with the gateway's credentials."""
        return platform_get(self.platform_url, path, self.credentials, timeout=5)

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.kill()

    def stop(self) -> None:
        for service in (self.gateway, self.platform):
            if service is not None:
                service.stop()


def publish_all(port: int, acked: list[str], failures: list[BaseException]) -> None:
    """Each device's events, interleaved, at about 1,000/s; an id goes in acked once
    mosquitto has sent its PUBACK (the device would then delete it from its outbox)."""
    try:
        pub = Publisher("127.0.0.1", port, client_id="crash-publisher")
        try:
            for seq in range(EVENTS_PER_DEVICE):
                for device in DEVICES:
                    kind = ("elevator.entrapment", "raise") if seq % 50 == 0 else ("telemetry.elevator", "report")
                    pub.publish("dev/%s/ev" % device, signed_event(device, SECRET, kind[0], seq, {"floor": seq % 9},
                                                                   action=kind[1]))
                    acked.append("%s:1:%d" % (device, seq))
                time.sleep(0.005)
        finally:
            pub.close()
    except BaseException as e:
        failures.append(e)


def test_sigkill_at_any_moment_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    for device in DEVICES:
        assert gateway_cli(["devices", "add", device, "--profile", "elevator", "--secret", SECRET,
                            "--data", str(tmp_path / "gw")]) == 0
    broker, port = start_mosquitto(tmp_path)
    procs = Processes(tmp_path, "mqtt://127.0.0.1:%d" % port)
    rng = random.Random(7)
    try:
        procs.start_platform()
        procs.start_gateway()             # creates the persistent session before anything is sent
        acked: list[str] = []
        failures: list[BaseException] = []
        publisher = threading.Thread(target=publish_all, args=(port, acked, failures), daemon=True)
        publisher.start()
        total = len(DEVICES) * EVENTS_PER_DEVICE
        for round_ in range(4):
            # kill at a random point: mid-batch, mid-commit, mid-upload
            time.sleep(rng.uniform(0.1, 0.6))
            procs.kill_gateway()
            time.sleep(rng.uniform(0.0, 0.3))   # events keep coming: mosquitto queues them
            procs.start_gateway()
        publisher.join(DEADLINE_S)
        assert not publisher.is_alive() and not failures, failures
        assert len(acked) == total
        deadline = time.monotonic() + DEADLINE_S
        while procs.get("/v1/counts")["total"] < total:
            assert time.monotonic() < deadline, "platform has %s of %d events" % (
                procs.get("/v1/counts"), total)
            time.sleep(0.2)
        events = procs.get("/v1/events?limit=100000")["events"]
        ids = [e["id"] for e in events]
        assert len(ids) == len(set(ids)) == total
        assert set(ids) == set(acked)
        counts = procs.get("/v1/counts")["devices"]
        assert counts == {d: {"elevator.entrapment": 12, "telemetry.elevator": 588} for d in DEVICES}
    finally:
        procs.stop()
        stop_mosquitto(broker)

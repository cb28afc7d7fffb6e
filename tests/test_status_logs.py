"""`edge-gateway --log-format json`: a real gateway process on a real mosquitto writes one
JSON object a line, with the device's id on the lines about a device."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gateway.broker import device_password
from rig import Publisher, free_port
from test_gateway_ingest import DEVICE, SECRET, make_registry
from tools.testbench.services import Service, add_gateway


def test_json_logs_carry_the_device_id(tmp_path: Path, mosquitto: Any) -> None:
    make_registry(tmp_path / "gw")
    add_gateway(str(tmp_path / "platform.sqlite"), "gw-json", str(tmp_path / "gw" / "platform-credentials.json"))
    log = tmp_path / "gateway.log"
    status = free_port()
    gateway = Service("gateway", ["--log-format", "json", "run", "--data", str(tmp_path / "gw"),
                                  "--broker", mosquitto.url, "--status-listen", "127.0.0.1:%d" % status], str(log),
                      status)
    try:
        pub = Publisher("127.0.0.1", mosquitto.port, DEVICE, DEVICE, device_password(SECRET))
        pub.publish("dev/%s/ev" % DEVICE, b"junk")
        pub.close()
        deadline = time.monotonic() + 10
        while "malformed" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        gateway.stop()            # SIGTERM: it logs its stop, after the rejection
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    [rejected] = [line for line in lines if "malformed" in line["msg"]]
    assert rejected["device"] == DEVICE and rejected["level"] == "WARNING"
    assert any("gateway stopped" in line["msg"] for line in lines)

"""edgectl bench-scale and its fleet (tools/testbench/loadgen.py): every device its own
connection and broker account, one and two gateway instances, every event on the
platform once. Small numbers: the figures come from running the command by hand."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools.common.credentials import BrokerAuth, start_broker
from tools.testbench import loadgen


def test_bench_scale_one_and_two_instances_deliver_every_event_once(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tools.edgectl", "bench-scale", "--devices", "60", "--rate", "300",
                           "--max-rate", "1500", "--seconds", "2", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "1 gateway instance: 60 devices connected" in out and "2 gateway instances: 60 devices connected" in out
    # per instance: its own events/s, CPU per event and RSS, from /proc of its process
    assert re.search(r"gw2: stored +\d+/s, [\d.]+ core-ms/event, \d+ % of a core, RSS [\d.]+ MB", out), out
    totals = re.findall(r"on the platform: (\d+) events of (\d+) sent \(each once: (\w+)\)", out)
    assert len(totals) == 2 and all(a == b and int(a) > 0 and once == "True" for a, b, once in totals), out


def test_a_device_the_broker_does_not_know_is_refused_by_name(tmp_path: Path) -> None:
    fleet = loadgen.site(3)
    auth = BrokerAuth(str(tmp_path / "mosquitto"))
    auth.add_devices([(d, s) for d, _, s in fleet[:2]])     # the third has no account
    broker = start_broker(auth)
    try:
        with pytest.raises(ConnectionError, match=fleet[2][0]):
            asyncio.run(loadgen.Fleet("127.0.0.1", broker.port, fleet).connect())
    finally:
        broker.stop()

"""gateway/cli.py and gateway/registry.py: the commands a user types, and their errors."""
from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.registry import Registry, RegistryError
from gateway.broker import device_password
from rig import Publisher, free_port, signed_event

SECRET = "ab" * 32


def test_devices_add_generates_a_secret_and_never_prints_it(tmp_path: Path, capsys: Any) -> None:
    assert main(["devices", "add", "elev-001", "--profile", "elevator", "--data", str(tmp_path)]) == 0
    assert main(["devices", "add", "wm-7", "--profile", "water_meter", "--data", str(tmp_path),
                 "--secret", SECRET]) == 0
    assert main(["devices", "list", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "devices.json").read_text())
    assert len(data["elev-001"]["secret"]) == 64 and data["wm-7"]["secret"] == SECRET
    assert data["elev-001"]["secret"] not in out and SECRET not in out
    assert "elev-001\televator" in out and "wm-7\twater_meter" in out
    assert (tmp_path / "devices.json").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.tmp"))


def test_devices_add_reads_the_secret_from_stdin(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET + "\n"))
    assert main(["devices", "add", "elev-001", "--profile", "elevator", "--data", str(tmp_path),
                 "--secret", "-"]) == 0
    dev = Registry.in_dir(tmp_path).get("elev-001")
    assert dev is not None and dev.secret == SECRET


@pytest.mark.parametrize("args,message", [
    (["bad/id", "--profile", "elevator"], "device id 'bad/id'"),
    (["elev-001", "--profile", "toaster"], "unknown profile 'toaster'; known profiles: elevator"),
    (["elev-001", "--profile", "elevator", "--secret", "xyz"], "secret must be an even number of hex digits"),
    (["elev-001", "--profile", "elevator", "--secret", "abcd"], "at least 32"),
])
def test_devices_add_errors(tmp_path: Path, capsys: Any, args: list[str], message: str) -> None:
    assert main(["devices", "add", *args, "--data", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_corrupt_registry_names_the_file_and_position(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "devices.json").write_text('{\n  "elev-001": {"secret": "ab",}\n}\n')
    assert main(["devices", "list", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "devices.json") in err and "line 2 column" in err


def test_invalid_registry_entry_names_device_and_field(tmp_path: Path) -> None:
    (tmp_path / "devices.json").write_text(json.dumps({"elev-001": {"secret": SECRET}}))
    with pytest.raises(RegistryError, match="device 'elev-001': field 'profile'"):
        Registry.in_dir(tmp_path)


def test_run_with_unreachable_broker_says_which_and_what_to_do(tmp_path: Path, capsys: Any) -> None:
    url = "mqtt://127.0.0.1:%d" % free_port()
    assert main(["platform", "add-gateway", "gw-1", "--db", str(tmp_path / "p.sqlite"),
                 "--out", str(tmp_path / "platform-credentials.json")]) == 0
    assert main(["run", "--data", str(tmp_path), "--broker", url]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to the MQTT broker at %s" % url in err and "--broker embedded" in err


def _lines(stream: Any) -> "queue.Queue[str]":
    """A process's output lines on a queue, read by a thread (waits have deadlines)."""
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line.rstrip("\n"))
    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_for(q: "queue.Queue[str]", needle: str, timeout: float = 10.0) -> str:
    seen: list[str] = []
    while True:
        try:
            line = q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no line with %r within %.0f s; saw:\n%s"
                                 % (needle, timeout, "\n".join(seen))) from None
        seen.append(line)
        if needle in line:
            return line


def test_console_scripts_end_to_end_with_graceful_stop(tmp_path: Path) -> None:
    """`edge-gateway platform --print` + `edge-gateway run` (embedded broker) as processes."""
    bin_dir = Path(sys.executable).parent
    data = tmp_path / "gw"
    assert main(["devices", "add", "elev-001", "--profile", "elevator", "--data", str(data),
                 "--secret", SECRET]) == 0
    assert main(["platform", "add-gateway", "gw-e2e", "--db", str(tmp_path / "p.sqlite"),
                 "--out", str(data / "platform-credentials.json")]) == 0
    web_port, mqtt_port = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    platform = subprocess.Popen(
        [str(bin_dir / "edge-gateway"), "platform", "--listen", "127.0.0.1:%d" % web_port,
         "--db", str(tmp_path / "p.sqlite"), "--print"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    gateway = subprocess.Popen(
        [str(bin_dir / "edge-gateway"), "run", "--data", str(data), "--listen",
         "127.0.0.1:%d" % mqtt_port, "--platform", "http://127.0.0.1:%d" % web_port,
         "--gateway-id", "gw-e2e"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        plat_out, gw_out = _lines(platform.stdout), _lines(gateway.stdout)
        _wait_for(plat_out, "listening on")
        _wait_for(gw_out, "gateway gw-e2e running")
        pub = Publisher("127.0.0.1", mqtt_port, "elev-001", "elev-001", device_password(SECRET))
        pub.publish("dev/elev-001/ev", signed_event("elev-001", SECRET, "elevator.entrapment", 1,
                                                    {"floor": 7, "duration_s": 61}, action="raise"))
        pub.close()
        line = _wait_for(plat_out, "elevator.entrapment")
        assert line.endswith("ALARM raise elevator.entrapment elev-001 floor=7 duration_s=61")
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(10) == 0
        _wait_for(gw_out, "1 uploaded")
    finally:
        for proc in (gateway, platform):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
    assert platform.returncode == 0


@pytest.mark.parametrize("args,message", [
    (["--stream", "telemetry:rate=fast"], "--stream 'telemetry:rate=fast': rate='fast' is not a number"),
    (["--stream", "video:rate=1"], "unknown stream 'video'; streams: alarms, telemetry"),
    (["--stream", "telemetry:colour=red"], "unknown key 'colour'; keys: batch_max"),
    (["--stream", "alarms:kinds=alarm"], "no stream takes kind report"),
    (["--stream", "alarms:on_full=drop"], "stream 'alarms': on_full must be one of keep, drop_oldest"),
    (["--max-db-mb", "0"], "--max-db-mb 0.0: give a size in MB above 0"),
    (["--platform", "ftp://district"], "--platform 'ftp://district': expected http://host[:port][/path]"),
    (["--platform", "http://district:port"], "--platform 'http://district:port': the port is not a number"),
])
def test_run_rejects_bad_stream_and_quota_options(tmp_path: Path, capsys: Any, args: list[str],
                                                  message: str) -> None:
    assert main(["run", "--data", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err

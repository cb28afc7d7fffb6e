"""edge/boot.py, the agent's start-up: a good config and a serial port give the agent's
parts, the boot number counts restarts through the state folder (edge/state.py) under
both runtimes, and a bad config, a missing file or a port that cannot be opened end with
one line and an exit status instead of a traceback. (Exit statuses of `micropython -m
edge.agent` with a bad config: tests/test_config.py.)"""
from __future__ import annotations

import json
import os
import sys

import pytest

from edge import boot
from edge.agent import Agent
from edge.state import FileStore
from rig import run_micropython

SECRET = "00112233445566778899aabbccddeeff"


@pytest.fixture
def port():
    """A pty standing in for the RS-485 adapter; nothing answers on it."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    yield name
    os.close(slave)
    os.close(master)


def config(tmp_path, port: str, **changes) -> str:
    cfg = {"device_id": "elev-boot", "secret": SECRET, "profile": "elevator",
           "bus": {"port": port, "slave": 3}, "broker": {"host": "127.0.0.1", "port": 1},
           "site": {"rated_speed": 1.75, "floors": [-1, 18]}}
    cfg.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def start(argv: list[str]):
    said: list[str] = []
    cfg, parts = boot.start(["agent.py", *argv], lambda *a: said.append(" ".join(map(str, a))))
    return cfg, parts


def test_a_good_config_gives_the_agents_parts(tmp_path, port) -> None:
    state = str(tmp_path / "state")
    cfg, parts = start([config(tmp_path, port), state])
    assert cfg["device_id"] == "elev-boot" and cfg["bus"]["timeout_ms"] == 300     # defaults filled in
    master, link, store, outbox, clock = parts
    assert isinstance(store, FileStore) and store.root == state
    assert os.path.isdir(os.path.join(state, "outbox"))
    assert not link.up                               # start-up does not wait for the network
    assert abs(clock() - __import__("time").time()) < 5
    agent = Agent(cfg, *parts)
    assert agent.boot == 1
    master.uart.close()


def test_the_boot_number_counts_restarts_in_the_state_folder(tmp_path, port) -> None:
    cfg_path = config(tmp_path, port)
    boots = []
    for _ in range(3):
        cfg, parts = start([cfg_path, str(tmp_path / "state")])
        boots.append(Agent(cfg, *parts).boot)
        parts[0].uart.close()
    assert boots == [1, 2, 3]
    assert FileStore(str(tmp_path / "state")).load("boot") == b"3"
    # another state folder is another device history
    cfg, parts = start([cfg_path, str(tmp_path / "other")])
    assert Agent(cfg, *parts).boot == 1
    parts[0].uart.close()


def test_the_config_validator_is_unloaded_after_start_up(tmp_path, port) -> None:
    # on a board its code is heap the pipeline needs
    cfg, error = boot.load_config(config(tmp_path, port))
    assert error is None and cfg["profile"] == "elevator"
    assert "edge.config" not in sys.modules


def test_help_prints_the_usage_and_exits_0(capsys) -> None:
    assert start(["--help"]) == (None, 0)
    assert capsys.readouterr().out.startswith("usage: agent.py [CONFIG_JSON] [STATE_DIR]")


@pytest.mark.parametrize("write,message", [
    (None, "cannot read the config file"),
    ("{not json", "not valid JSON"),
    ({"device_id": "elev-boot"}, "config.secret: required field is missing"),
    ({"device_id": "elev-boot", "secret": SECRET, "profile": "elevator", "bus": {"port": "x", "baud": 9601},
      "broker": {"host": "h"}, "site": {"rated_speed": 1.0, "floors": [0, 3]}}, "config.bus.baud: 9601"),
])
def test_a_bad_config_is_one_line_and_status_2(tmp_path, capsys, write, message) -> None:
    path = tmp_path / "config.json"
    if write is not None:
        path.write_text(write if isinstance(write, str) else json.dumps(write))
    assert start([str(path), str(tmp_path / "state")]) == (None, 2)
    out = capsys.readouterr().out
    assert out.startswith("config error: ") and message in out and out.count("\n") == 1
    assert not (tmp_path / "state").exists()          # nothing was built


def test_a_port_that_cannot_be_opened_is_named_with_status_3(tmp_path, capsys) -> None:
    missing = str(tmp_path / "ttyUSB9")
    assert start([config(tmp_path, missing), str(tmp_path / "state")]) == (None, 3)
    out = capsys.readouterr().out
    assert "cannot open the sensor bus %s" % missing in out and "permissions" in out


def test_the_config_file_defaults_to_config_json_in_the_current_folder(tmp_path, port, monkeypatch) -> None:
    config(tmp_path, port)
    monkeypatch.chdir(tmp_path)
    cfg, parts = boot.start(["agent.py"], print)
    assert cfg["device_id"] == "elev-boot"
    assert parts[2].root == "state"
    parts[0].uart.close()


MP_SCRIPT = """
import sys
from edge import boot
cfg, parts = boot.start(["agent.py", sys.argv[1], sys.argv[2]], print)
if cfg is None:
    print("status", parts)
else:
    from edge.agent import Agent
    print("boot", Agent(cfg, *parts).boot, "config" in [m.split(".")[-1] for m in sys.modules])
"""


def test_micropython_counts_boots_in_the_same_files(tmp_path, port) -> None:
    cfg_path = config(tmp_path, port)
    state = str(tmp_path / "state")
    script = tmp_path / "boot_run.py"
    script.write_text(MP_SCRIPT)
    cfg, parts = start([cfg_path, state])             # boot 1 under CPython
    assert Agent(cfg, *parts).boot == 1
    parts[0].uart.close()
    lines = [run_micropython(script, cfg_path, state).splitlines()[-1] for _ in range(2)]
    assert lines == ["boot 2 False", "boot 3 False"]
    bad = run_micropython(script, str(tmp_path / "nope.json"), state)
    assert bad.splitlines()[-1] == "status 2" and "config error: " in bad

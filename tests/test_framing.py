"""Serial framing has one home, edge.line (BAUD, PARITY, stop_bits, char_bits): the config
schema, the three HALs and the installer's and test bench's buses open a line the same
way, so `edgectl read` and the agent agree on 8E1 by default and on 8N2 without parity."""
from __future__ import annotations

import argparse
import asyncio
import copy
import inspect
import json
import os
import subprocess
import termios
import threading

import pytest

from edge import line
from edge.config import SCHEMA, validate
from tools.common import runtime

LINES = [("E", None), ("O", None), ("N", None), ("E", 1), ("E", 2), ("N", 1), ("N", 2), ("O", 2)]
CFG = {"device_id": "wm-0001", "secret": "00" * 16, "profile": "water_meter",
       "bus": {"port": "/dev/ttyUSB0"}, "broker": {"host": "127.0.0.1"}}


def spec_stop(parity: str, stop: int | None) -> int:
    """The Modbus serial line rule, written out: given stop bits win, else 2 without parity."""
    if stop is not None:
        return stop
    return 2 if parity == "N" else 1


@pytest.fixture
def tty():
    """A pty pair: (the path the HAL opens, the fd of the far end to read termios back)."""
    m, s = os.openpty()
    yield os.ttyname(s), s
    os.close(m)
    os.close(s)


def micropython(code: str, *paths: str) -> subprocess.CompletedProcess:
    out = subprocess.run([runtime.micropython(), "-c", code], env=runtime.micropython_env(*paths),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.mark.parametrize("parity,stop", LINES)
def test_stop_bits_follow_the_modbus_rule(parity, stop):
    assert line.stop_bits(parity, stop) == spec_stop(parity, stop)
    assert line.char_bits(parity, stop) == 1 + 8 + (parity != "N") + spec_stop(parity, stop)
    assert line.settings({"parity": parity, "stop": stop}) == (line.BAUD, parity, spec_stop(parity, stop))


def test_the_defaults_make_an_11_bit_character():
    from edge import bus, modbus
    assert line.PARITY == "E" and line.PARITY in line.PARITIES and line.BAUD in line.BAUDS
    assert line.settings({}) == (line.BAUD, "E", 1)
    assert line.char_bits(line.PARITY) == line.char_bits("N") == 11
    # what t3.5 and the Master assume when not told
    assert inspect.signature(modbus.silence_s).parameters["bits"].default == 11
    assert inspect.signature(bus.Master).parameters["bits"].default == 11


@pytest.mark.parametrize("parity,stop", LINES)
def test_config_fills_in_the_stop_bits_of_its_parity(parity, stop):
    cfg = copy.deepcopy(CFG)
    cfg["bus"]["parity"] = parity
    if stop is not None:
        cfg["bus"]["stop"] = stop
    assert validate(cfg)["bus"]["stop"] == spec_stop(parity, stop)


def test_config_defaults_and_choices_come_from_edge_line():
    bus = validate(copy.deepcopy(CFG))["bus"]
    assert (bus["baud"], bus["parity"], bus["stop"]) == line.settings({})
    assert SCHEMA["bus.baud"][2] is line.BAUDS and SCHEMA["bus.parity"][2] is line.PARITIES


# ---- the three HALs

def test_hal_defaults_are_edge_line_defaults(tty):
    from edge.hal import cpython
    path, far = tty
    params = inspect.signature(cpython.UART.__init__).parameters
    assert (params["baud"].default, params["parity"].default, params["stop"].default) == (
        line.BAUD, line.PARITY, None)
    uart = cpython.open_uart({"port": path})   # nothing but the port
    try:
        assert (uart._s.baudrate, uart._s.stopbits) == (line.BAUD, line.stop_bits(line.PARITY))
    finally:
        uart.close()
    out = micropython("from edge.hal import unix\nu = unix.open_uart({'port': %r})\nprint(u.baud, u._bits)\n"
                      "u.close()" % path)
    assert out.stdout.split() == [str(line.BAUD), str(line.char_bits(line.PARITY))]
    assert not termios.tcgetattr(far)[2] & termios.CSTOPB


def test_the_unix_hal_knows_every_baud_rate_the_config_allows():
    out = micropython("from edge.hal import unix; print(sorted(unix._BAUD))")
    assert out.stdout.strip() == str(sorted(line.BAUDS))


@pytest.mark.parametrize("parity,stop", LINES)
def test_cpython_hal_opens_the_configured_stop_bits(tty, parity, stop):
    from edge.hal import cpython
    uart = cpython.open_uart({"port": tty[0], "parity": parity, "stop": stop})
    try:
        assert (uart._s.bytesize, uart._s.stopbits) == (line.DATA_BITS, spec_stop(parity, stop))
    finally:
        uart.close()


@pytest.mark.parametrize("parity,stop", LINES)
def test_unix_hal_under_micropython_sets_the_stop_bits_on_the_tty(tty, parity, stop):
    """The agent as it runs on a Pi under the unix port: termios' CSTOPB on the line is
    read back from the other end of the pty."""
    path, far = tty
    out = micropython("from edge.hal import unix\nu = unix.open_uart({'port': %r, 'parity': %r, 'stop': %r})\n"
                      "print(u._bits)\nu.close()" % (path, parity, stop))
    assert int(out.stdout) == line.char_bits(parity, stop)
    assert bool(termios.tcgetattr(far)[2] & termios.CSTOPB) == (spec_stop(parity, stop) == 2)


FAKE_MACHINE = '''
import io
made = []


class UART(io.IOBase):
    def __init__(self, uart_id, **kw):
        made.append(kw)

    def ioctl(self, req, arg):
        return 0


class Pin:
    OUT = 1

    def __init__(self, *a, **kw):
        pass
'''


def test_esp32_hal_asks_machine_uart_for_the_configured_framing(tmp_path):
    """edge/hal/esp32.py under the unix port, with a machine module that records what the
    HAL asks of machine.UART."""
    (tmp_path / "machine.py").write_text(FAKE_MACHINE)
    out = micropython("import json, machine\nfrom edge.hal import esp32\nfor p, s in %r:\n"
                      "    u = esp32.open_uart({'tx': 1, 'rx': 2, 'parity': p, 'stop': s})\n"
                      "    k = machine.made[-1]\n"
                      "    print(json.dumps([k['bits'], k['parity'], k['stop'], k['baudrate'], u._char_us]))\n"
                      % (LINES,), str(tmp_path))
    machine_parity = {"N": None, "E": 0, "O": 1}
    assert [json.loads(row) for row in out.stdout.splitlines()] == [
        [8, machine_parity[p], spec_stop(p, s), line.BAUD, line.char_bits(p, s) * 1000000 // line.BAUD]
        for p, s in LINES]


def test_the_running_agent_does_not_carry_the_framing(tmp_path, tty):
    """edge.line is boot-time only: after the agent's start-up it is gone, with the
    config schema and the id rule, and the Master was told the line's character size."""
    (tmp_path / "config.json").write_text(json.dumps(dict(CFG, bus={"port": tty[0], "parity": "N"})))
    out = micropython("import sys\nfrom edge import boot\ncfg, parts = boot.start(['agent', %r, %r], print)\n"
                      "print(cfg['bus']['stop'], parts[0]._char_us, sorted(k for k in sys.modules if k in "
                      "('edge.line', 'edge.ids', 'edge.config')))"
                      % (str(tmp_path / "config.json"), str(tmp_path / "state")))
    assert out.stdout.split() == ["2", str(11 * 1000000 // line.BAUD), "[]"]


# ---- the tools: the installer's bus (edgectl read, scan) and the simulator

@pytest.mark.parametrize("parity,stop", LINES)
def test_edgectl_read_states_the_line_the_agent_opens(parity, stop):
    from tools.common import rs485
    assert rs485.line_settings(9600, parity, stop) == "9600 8%s%d" % (parity, line.stop_bits(parity, stop))


def test_edgectl_read_defaults_are_the_agent_defaults():
    from tools.common import rs485
    ap = argparse.ArgumentParser()
    rs485.bus_arguments(ap)
    args = ap.parse_args(["--port", "/dev/ttyUSB0"])
    assert args.parity == line.PARITY and args.stop_bits is None
    params = inspect.signature(rs485.Bus.__init__).parameters
    assert params["baud"].default == line.BAUD and params["parity"].default == line.PARITY
    cfg = validate(copy.deepcopy(CFG))["bus"]
    assert rs485.line_settings(cfg["baud"], args.parity, args.stop_bits) == "%d 8%s%d" % (
        cfg["baud"], cfg["parity"], cfg["stop"])


@pytest.mark.parametrize("parity", ["E", "N"])
def test_edgectl_read_opens_the_stop_bits_of_its_parity(tty, parity):
    from tools.common import rs485
    with rs485.Bus(tty[0], parity=parity) as bus:
        assert bus.stop == line.stop_bits(parity)


@pytest.mark.parametrize("parity,stop", LINES)
def test_simulator_serves_the_line_the_agent_opens(monkeypatch, parity, stop):
    from tools.testbench import simulate
    seen = {}

    class Server:
        def __init__(self, *a, **kw):
            seen.update(kw)

        async def serve_forever(self, background=False):
            pass

        async def shutdown(self):
            pass

    class Slave:
        trace_packet = trace_pdu = None

        def device(self):
            return None

    monkeypatch.setattr(simulate, "ModbusSerialServer", Server)
    done = threading.Event()
    done.set()
    # a real serial port's name: on a pty the simulator drops parity, as the HAL does
    asyncio.run(simulate.serve(Slave(), "/dev/ttyUSB9", parity=parity, stop=stop, stop_event=done))
    assert (seen["parity"], seen["stopbits"]) == (parity, spec_stop(parity, stop))
    params = inspect.signature(simulate.serve).parameters
    assert params["baud"].default == line.BAUD and params["parity"].default == line.PARITY

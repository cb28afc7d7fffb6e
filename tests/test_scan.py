"""edgectl scan and edgectl read from the installer's side of a real pty bus, against a
pymodbus slave playing a trace."""
import json
import subprocess
import sys

import pytest

from tools.common import runtime
from tools.testbench import scenarios
from tools.testbench.simulate import serving


def edgectl(*args):
    return subprocess.run([sys.executable, "-m", "tools.edgectl", *args], capture_output=True, text=True,
                          cwd=runtime.ROOT, timeout=120)


@pytest.fixture
def slave3(tmp_path):
    trace = scenarios.write(str(tmp_path / "t.jsonl.gz"), *scenarios.water_meter(seconds=600, flow_from=None))
    with serving("water_meter", trace, str(tmp_path / "bus"), slave=3) as bus:
        yield bus


def test_scan_finds_the_slave_that_answers(slave3):
    res = edgectl("scan", "--port", slave3.a, "--ids", "1-5", "--timeout", "0.1", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[0]["step"] == "scan" and lines[0]["found"] == [{"slave": 3, "baud": 9600, "answer": "registers"}]
    assert lines[-1]["result"] == "ok"
    plain = edgectl("scan", "--port", slave3.a, "--ids", "1-5", "--timeout", "0.1")
    assert "found: slave 3 at 9600 baud" in plain.stdout


def test_scan_of_a_silent_range_says_what_to_check(slave3):
    res = edgectl("scan", "--port", slave3.a, "--ids", "10-12", "--timeout", "0.1")
    assert res.returncode == 1
    assert "no slave answered on %s: check the A/B wiring" % slave3.a in res.stderr


def test_read_prints_decoded_readings_and_names_what_to_check(slave3):
    res = edgectl("read", "--port", slave3.a, "--slave", "3", "--profile", "water_meter", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    reading = json.loads(res.stdout)["reading"]
    assert set(reading) >= {"total", "flow"} and reading["total"] >= 0
    plain = edgectl("read", "--port", slave3.a, "--slave", "3", "--profile", "water_meter")
    assert "slave 3 (water_meter)" in plain.stdout and "total" in plain.stdout
    missing = edgectl("read", "--port", slave3.a, "--slave", "4", "--profile", "water_meter")
    assert missing.returncode == 1
    assert ("no answer from slave 4 on %s at 9600 8E1: check the A/B wiring, the slave id (edgectl scan) "
            "and the baud rate" % slave3.a) in missing.stderr
    nowhere = edgectl("read", "--port", "/nonexistent/ttyUSB9", "--profile", "water_meter")
    assert nowhere.returncode == 1 and "cannot open /nonexistent/ttyUSB9" in nowhere.stderr


# ---------------------------------------------------------------- a CJ/T 188 water meter
@pytest.fixture
def meter(tmp_path):
    """A CJ/T 188 water meter (tools/testbench/cjt188_meter.py) alone on a pty bus."""
    import threading
    from tools.testbench.cjt188_meter import run_meter
    from tools.testbench.vbus import VirtualBus
    rows = [(0, {"total": 1234.56, "valve": 1, "battery_low": 1})]
    trace = scenarios.write(str(tmp_path / "m.jsonl.gz"), {"trace": "m", "profile": "water_meter",
                                                           "start": scenarios.START}, rows)
    stop, ready = threading.Event(), threading.Event()
    with VirtualBus(str(tmp_path / "bus")) as bus:
        t = threading.Thread(target=run_meter, args=(trace, bus.b, "78330011223344"), daemon=True,
                             kwargs=dict(stop_event=stop, ready=ready))
        t.start()
        assert ready.wait(10)
        yield bus
        stop.set()
        t.join(5)


def test_scan_finds_a_cjt188_meter_and_its_address(meter):
    res = edgectl("scan", "--port", meter.a, "--protocol", "cjt188", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    found = json.loads(res.stdout.splitlines()[0])["found"]
    assert found == [{"address": "78330011223344", "baud": 2400, "answer": "read address"}]


def test_read_prints_a_cjt188_meters_901f_reply(meter):
    res = edgectl("read", "--port", meter.a, "--protocol", "cjt188", "--address", "78330011223344",
                  "--di-order", "2018", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    got = json.loads(res.stdout)
    assert got["address"] == "78330011223344"
    assert got["reading"]["total"] == 1234.56 and got["reading"]["valve"] == "closed" and got["reading"]["battery_low"]
    plain = edgectl("read", "--port", meter.a, "--protocol", "cjt188")       # the wildcard: the one meter answers
    assert plain.returncode == 0 and "1234.56 m3" in plain.stdout and "LOW" in plain.stdout, plain.stdout
    other = edgectl("read", "--port", meter.a, "--protocol", "cjt188", "--address", "78330011223345",
                    "--timeout", "0.2")
    assert other.returncode == 1 and "no answer from meter 78330011223345" in other.stderr, other.stderr
    bad = edgectl("read", "--port", meter.a, "--protocol", "cjt188", "--address", "1234")
    assert bad.returncode == 1 and "--address: a CJ/T 188 address is 14 digits" in bad.stderr
    assert "--protocol" in edgectl("read", "--help").stdout and "--di-order" in edgectl("scan", "--help").stdout

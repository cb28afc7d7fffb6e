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

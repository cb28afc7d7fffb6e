"""Register maps as data (edge/maps, edge.config's map schema and reads): every shipped
map passes the schema and decodes its documented test vectors, a wrong map gets an error
naming the field, a device config carries its own map, `edgectl read --map` reads a
vendor map served on a real pty, and a write the map does not allow never leaves the
master."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from edge import config, mapcheck, reads, regmap
from edge.agent import Agent
from edge.bus import Master
from edge.codes import CODES, code_of
from edge.config import ConfigError, validate
from edge.mapcheck import check_map, profile_map, read_map
from edge.modbus_write import write_multiple_request, write_single_request
from edge.outbox import Outbox
from edge.state import MemoryStore
from tools.common import runtime
from tools.common.devconfig import board_map
from tools.common.rs485 import shipped_maps
from tools.testbench import scenarios, slave
from tools.testbench.simulate import serving
from tools.testbench.vbus import VirtualBus

SHIPPED = shipped_maps()
PROFILE_MAPS = ("elevator", "water_meter", "noise", "structure", "water_quality")
# the vendor maps issue 12 asks for, and the vectors each must decode
VENDOR = ("tuf-2000m", "supmea-sup-ph8001", "supmea-sup-do7013", "boqu-bh-485-nh", "sonbest-sm7901b",
          "witmotion-wt901c-485", "witmotion-wtvb01-485", "nice3000plus")
GOOD = {
    "device_id": "wm-0001", "secret": "00112233445566778899aabbccddeeff", "profile": "water_meter",
    "bus": {"port": "/dev/ttyUSB0"}, "broker": {"host": "127.0.0.1"},
}


def raw(name: str) -> dict:
    with open(os.path.join(runtime.ROOT, "edge", "maps", name + ".json")) as fh:
        return json.load(fh)


def decode_image(m: dict, image: dict[int, int]) -> dict:
    """Every field of a checked map, decoded from a register image (address -> word) as
    a poll reads it, block by block; registers the image lacks read 0."""
    reading: dict = {}
    for _, _, first, count, table in reads.blocks(m["fields"]):
        reading.update(regmap.decode(table, [image.get(a, 0) for a in range(first, first + count)], "ABCD", first))
    return reading


def test_the_vendor_maps_and_every_profile_map_are_shipped():
    assert set(VENDOR) | set(PROFILE_MAPS) <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_map_passes_the_schema_and_says_how_sure_it_is(name):
    m = read_map(name)
    assert m["fields"] and len(m["slaves"]) >= 1 and m["writable"] == []   # none ships a writable register
    if "probes" in raw(name):      # a profile's station: each probe's own map says it
        for p in raw(name)["probes"]:
            assert read_map(p["map"])["confidence"]
    else:
        assert m["confidence"] in mapcheck.CONFIDENCE and m["source"] and m["model"]


VECTORS = [(name, i) for name in SHIPPED for i in range(len(raw(name).get("vectors", ())))]


@pytest.mark.parametrize("name, i", VECTORS)
def test_shipped_vectors_decode_to_the_documented_values(name, i):
    m, v = read_map(name), raw(name)["vectors"][i]
    got = decode_image(m, {v["at"] + k: w for k, w in enumerate(v["words"])})
    assert {k: got[k] for k in v["reading"]} == v["reading"], v["source"]
    # and what the simulator encodes decodes the same (a float may differ by an ulp
    # from the vendor's bytes: 1E 85 0B 3F is not the float nearest 0.545)
    for _, _, first, count, table in reads.blocks(m["fields"], keep=v["reading"]):
        back = regmap.decode(table, slave.encode(table, v["reading"]), "ABCD", first)
        assert {k: back[k] for k in back if k in v["reading"]} == {k: v["reading"][k] for k in back}


@pytest.mark.parametrize("name", [n for n in VENDOR if n != "nice3000plus"] + list(PROFILE_MAPS))
def test_every_vendor_map_but_nice3000_has_a_vector(name):
    assert VECTORS and any(n == name for n, _ in VECTORS) or "probes" in raw(name)


def test_the_documented_vectors_are_there():
    # from the sources (docs/register-maps.md): Sonbest 0x0218 = 53.6 dB; the PHG-2091's
    # little-endian reply 00 00 C8 41 / B8 1E 21 41 = 25.0 degC / pH 10.07; the Xintai
    # meter's 1E 85 0B 3F = 0.545 m3/h
    assert decode_image(read_map("sonbest-sm7901b"), {0: 0x0218})["laeq"] == 53.6
    phg = decode_image(read_map("boqu-phg-2091"), {0x2600: 0x0000, 0x2601: 0xC841, 0x2602: 0xB81E, 0x2603: 0x2141})
    assert phg == {"temp": 25.0, "ph": 10.07}
    assert decode_image(read_map("xintai-water-meter"), {5: 0x1E85, 6: 0x0B3F})["flow"] == 0.545
    # the TUF-2000M total is a LONG plus a REAL4 fraction, low word first
    tuf = decode_image(read_map("tuf-2000m"), {8: 1234, 10: 0, 11: 0x3E80, 0: 0, 1: 0x4148})
    assert (tuf["total"], tuf["flow"]) == (1234.25, 12.5)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m["fields"][2].update(type="f64"),
     "map.fields[2].type: 'f64' is not one of u16, i16, u32, i32, f32"),
    (lambda m: m["fields"][0].pop("address"), "map.fields[0].address: required field is missing"),
    (lambda m: m["fields"][1].update(adress=3), "map.fields[1].adress: unknown field; known: address,"),
    (lambda m: m["fields"][1].update(scale=0), "map.fields[1].scale: 0 is not allowed; expected a non-zero"),
    (lambda m: m["fields"][1].update(scale=True), "map.fields[1].scale: must be num"),
    (lambda m: m["fields"][1].update(address=70000), "map.fields[1].address: 70000 is not allowed"),
    (lambda m: m["fields"][1].update(function=6), "map.fields[1].function: 6 is not one of 3, 4"),
    (lambda m: m["fields"][1].update(word_order="ACBD"), "map.fields[1].word_order: 'ACBD' is not one of"),
    (lambda m: m["fields"][1].update(probe=1), "map.slaves: 1 slave ids for 2 probes"),
    (lambda m: m.update(fields=[]), "map.fields: [] is not allowed"),
    (lambda m: m.update(fields={}), "map.fields: must be list"),
    (lambda m: m.update(confidence="sure"), "map.confidence: 'sure' is not one of vendor manual"),
    (lambda m: m.update(writable=[{"address": 65535, "count": 2}]), "map.writable[0]: ends beyond register 65535"),
    (lambda m: m.update(writable=[{"count": 1}]), "map.writable[0].address: required field is missing"),
    (lambda m: m.update(writable=["0x6000"]), "map.writable[0]: must be an object"),
    (lambda m: m.update(probes=[]), "map.probes: a map of probes names shipped maps"),
])
def test_a_wrong_map_gets_an_error_naming_the_field(mutate, message):
    m = raw("water_meter")
    mutate(m)
    with pytest.raises(ConfigError) as e:
        check_map(m)
    assert str(e.value).startswith(message), str(e.value)


def test_a_station_needs_a_slave_id_for_each_probe_of_its_map():
    cfg = dict(copy.deepcopy(GOOD), profile="water_quality", site={"class": "III"}, bus={"port": "-", "slaves": [1, 2]})
    with pytest.raises(ConfigError, match="config.bus.slaves: 2 slave ids for the 5 probes of the map"):
        validate(cfg)


def test_a_shipped_map_name_is_a_name_not_a_path():
    for name in ("../../etc/passwd", "", "x" * 65, 7, "no-such-map"):
        with pytest.raises(ConfigError, match="config.map"):
            validate(dict(copy.deepcopy(GOOD), map=name))


def test_the_config_map_is_the_profiles_by_default_a_shipped_one_or_the_installers_own():
    assert validate(copy.deepcopy(GOOD))["map"]["fields"][0]["name"] == "total"
    tuf = validate(dict(copy.deepcopy(GOOD), map="tuf-2000m"))["map"]      # no battery: optional
    assert tuf["fields"][0]["word_order"] == "CDAB"
    own = {"fields": [{"name": "total", "address": 100, "type": "u32", "scale": 0.01},
                      {"name": "flow", "address": 102, "type": "f32", "function": 4}], "word_order": "DCBA"}
    cfg = validate(dict(copy.deepcopy(GOOD), map=own))
    assert [(f["function"], f["word_order"]) for f in cfg["map"]["fields"]] == [(3, "DCBA"), (4, "DCBA")]
    # what the board is given: no units, notes, sources or vectors, and still a valid map
    small = board_map(validate(dict(copy.deepcopy(GOOD), map="tuf-2000m"))["map"])
    assert "unit" not in small["fields"][0] and "vectors" not in small and "source" not in small
    assert validate(dict(copy.deepcopy(GOOD), map=small))["map"]["fields"] == check_map(small)["fields"]


def test_provisioning_inlines_the_map_cut_to_what_the_board_decodes_with():
    from tools.common import devconfig
    cfg = devconfig.validate(dict(copy.deepcopy(GOOD), map="tuf-2000m"))
    assert cfg["map"] == board_map(profile_map("water_meter", "tuf-2000m"))
    assert cfg["map"]["confidence"] == "vendor manual" and len(json.dumps(cfg["map"])) < 1600


@pytest.mark.parametrize("profile, name, missing", [
    ("elevator", "nice3000plus", "mode, dir, door, zone, occupied, fault"),
    ("water_meter", "sonbest-sm7901b", "total, flow"),
    ("noise", "elevator", "laeq"),
])
def test_a_map_without_the_profiles_fields_is_a_config_error_naming_them(profile, name, missing):
    with pytest.raises(ConfigError) as e:
        profile_map(profile, name, "config.map")
    assert str(e.value) == "config.map: the %s profile needs %s, which this map does not give" % (profile, missing)


def test_the_agent_reads_what_the_profile_needs_of_the_installers_map(tmp_path):
    own = {"fields": [{"name": "flow", "address": 0, "type": "f32"}, {"name": "total", "address": 8, "type": "i32"},
                      {"name": "total", "address": 10, "type": "f32"}, {"name": "temp", "address": 32, "type": "f32"}],
           "word_order": "CDAB", "slave": 7, "writable": [{"address": 0x3B, "note": "menu key"}]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(GOOD, map=own, bus={"port": "/dev/ttyUSB0", "slave": 5})))
    cfg = config.load(str(path))
    blocks, slaves, fields = reads.reads(cfg)
    # only the profile's fields are read (temp is not one), in one block; bus.slave wins
    assert [(b[0], b[1], b[2], b[3], [r[0] for r in b[4]]) for b in blocks] == [
        (0, 3, 0, 12, ["flow", "total", "total"])]
    assert slaves == (5,) and fields == ["total", "flow", "battery"]
    assert mapcheck.writable(cfg["map"], slaves) == ((5, 0x3B, 0x3C),)


def test_the_device_word_order_overrides_the_maps():
    m = read_map("tuf-2000m")
    assert {r[4] for b in reads.blocks(m["fields"]) for r in b[4]} == {"CDAB"}
    assert {r[4] for b in reads.blocks(m["fields"], "ABCD") for r in b[4]} == {"ABCD"}


def test_reads_are_cut_at_gaps_the_read_limit_and_per_function():
    fields = [{"name": "a", "address": 0, "type": "u16"}, {"name": "b", "address": 9, "type": "u16"},
              {"name": "c", "address": 19, "type": "f32"}, {"name": "d", "address": 144, "type": "u16"},
              {"name": "e", "address": 145, "type": "u16", "function": 4}, {"name": "f", "address": 269, "type": "u16"}]
    got = [(b[1], b[2], b[3]) for b in reads.blocks(check_map({"fields": fields})["fields"])]
    assert got == [(3, 0, 10), (3, 19, 2), (3, 144, 1), (3, 269, 1), (4, 145, 1)]
    assert all(b[3] <= reads.MAX_READ for b in reads.blocks(read_map("tuf-2000m")["fields"]))


class WordsMaster:
    """A bus whose slaves answer from register images: {(slave, function): {address: word}}."""

    def __init__(self, images):
        self.images = images

    # the agent's poll decodes as the Modbus master's does, from these words
    def read(self, slave, fc, first, count, table, agent):
        return regmap.decode(table, self.read_registers(slave, fc, first, count), "ABCD", first)

    def read_registers(self, slave, fc, addr, count):
        image = self.images[(slave, fc)]
        return [image.get(a, 0) for a in range(addr, addr + count)]


def test_the_agent_decodes_with_the_config_map(tmp_path):
    # a TUF-2000M as a water meter: flow 12.5 m3/h, total 1234.25 m3, no battery
    cfg = validate(dict(copy.deepcopy(GOOD), map="tuf-2000m"))
    master = WordsMaster({(1, 3): {1: 0x4148, 8: 1234, 11: 0x3E80}})
    a = Agent(cfg, master, SimpleNamespace(), MemoryStore(), Outbox(str(tmp_path / "outbox")), lambda: 1_780_000_000)
    assert a.read() == {"flow": 12.5, "total": 1234.25, "battery": None}


def test_a_station_of_probes_each_its_own_slave_reads_by_its_map(tmp_path):
    cfg = validate(dict(copy.deepcopy(GOOD), profile="water_quality", site={"class": "III"},
                        bus={"port": "-", "slaves": [1, 2, 11, 3, 4]}))
    master = WordsMaster({(1, 3): {0: 253, 1: 712}, (2, 3): {1: 756}, (11, 3): {16: 0x3F00},
                          (3, 3): {}, (4, 3): {}})
    a = Agent(cfg, master, SimpleNamespace(), MemoryStore(), Outbox(str(tmp_path / "outbox")), lambda: 1_780_000_000)
    assert a.read() == {"ph": 7.12, "temp": 25.3, "do": 7.56, "nh3n": 0.5, "tp": 0.0, "turb": 0.0}


def test_an_elevator_with_an_ebike_camera_reads_its_detection_for_the_detector_alone(tmp_path):
    # the camera is a second slave on the controller's bus, read only; its field is not
    # telemetry (telemetry.elevator's fields are the wire format), and a map without it
    # is a car without a camera
    elevator = dict(copy.deepcopy(GOOD), device_id="elev-0001", profile="elevator",
                    site={"rated_speed": 1.6, "floors": [-1, 12]})
    cfg = validate(dict(elevator, map="elevator-ebike"))
    assert cfg["map"]["slaves"] == [1, 2] and cfg["map"]["writable"] == []
    assert read_map("placeholder-ebike-camera")["confidence"] == "placeholder"
    blocks, slaves, fields = reads.reads(cfg)
    assert [(b[0], b[2], b[3]) for b in blocks] == [(0, 0, 8), (1, 0, 1)] and slaves == [1, 2]
    assert fields[-1] == "ebike" and "ebike" not in [f[0] for f in CODES[code_of("telemetry.elevator")][2]]
    master = WordsMaster({(1, 3): {3: 4, 4: 1, 5: 1}, (2, 3): {0: 1}})
    a = Agent(cfg, master, SimpleNamespace(), MemoryStore(), Outbox(str(tmp_path / "a")), lambda: 1_780_000_000)
    assert a.read() == {"mode": 0, "dir": 0, "speed": 0.0, "floor": 4, "door": 1, "zone": 1, "occupied": 0,
                        "fault": 0, "ebike": 1}
    plain = Agent(validate(elevator), WordsMaster({(1, 3): {3: 4}}), SimpleNamespace(), MemoryStore(),
                  Outbox(str(tmp_path / "b")), lambda: 1_780_000_000)
    assert plain.read()["ebike"] is None


# ---------------------------------------------------------------- writes
class RecordingUart:
    def __init__(self):
        self.sent = []

    def write(self, b):
        self.sent.append(bytes(b))

    def read(self, n, timeout_ms):
        return b""

    def flush_input(self):
        pass


def test_a_master_writes_only_what_the_map_allows():
    m = check_map({"fields": [{"name": "x", "address": 0, "type": "u16"}],
                   "writable": [{"address": 0x1010, "note": "zero-oxygen calibration"}]})
    uart = RecordingUart()
    master = Master(uart, 9600, 20, 0, writable=mapcheck.writable(m, reads.slave_ids(m, {"slave": 1})))
    with pytest.raises(Exception) as allowed:
        master.transact(write_single_request(1, 0x1010, 1))      # sent; nobody answers here
    assert not isinstance(allowed.value, ValueError) and len(uart.sent) == 1
    # NICE3000+ commands (0x6000..0x6004), a factory reset, an address change: never sent
    for request in (write_single_request(1, 0x6003, 1), write_multiple_request(1, 0x100F, [1, 1]),
                    write_single_request(2, 0x1010, 1), write_single_request(0, 0x1010, 1)):
        with pytest.raises(ValueError, match="not writable in this device's map"):
            master.transact(request)
    assert len(uart.sent) == 1
    # a master built without a map writes nothing at all: the agent's, the self-test's
    with pytest.raises(ValueError):
        Master(uart, 9600).transact(write_single_request(1, 0x1010, 1))
    assert len(uart.sent) == 1


def test_a_board_sends_no_write_at_all(tmp_path):
    # the board's modules (no edge/modbus_write.py): Master.transact cannot check a write,
    # so none goes out, whatever its writable ranges
    mpy = runtime.compile_agent(str(tmp_path / "mpy"))
    script = ("from edge.bus import Master\n"
              "m = Master(None, 9600, writable=((1, 0, 10),))\n"
              "try:\n    m.transact(bytes((1, 6, 0, 1, 0, 1, 0, 0)))\n"
              "except ImportError:\n    print('refused')\n")
    env = dict(os.environ, MICROPYPATH=".frozen:" + mpy)
    out = subprocess.run([runtime.micropython(), "-c", script], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "refused", out.stdout + out.stderr


# ---------------------------------------------------------------- over a real pty
def edgectl(*args):
    return subprocess.run([sys.executable, "-m", "tools.edgectl", *args], capture_output=True, text=True,
                          cwd=runtime.ROOT, timeout=120)


@pytest.fixture
def tuf_on_a_bus(tmp_path):
    """The simulator serving the TUF-2000M map (slave 1, CDAB) of a water meter trace."""
    rows = [(0, {"total": 1234.25, "flow": 12.5, "battery": 3.6})]
    trace = scenarios.write(str(tmp_path / "t.jsonl.gz"), {"trace": "t", "profile": "water_meter"}, rows)
    with serving("water_meter", trace, str(tmp_path / "bus"), map="tuf-2000m") as bus:
        yield bus


def test_edgectl_read_decodes_a_vendor_map_served_on_a_pty(tuf_on_a_bus, tmp_path):
    res = edgectl("read", "--port", tuf_on_a_bus.a, "--map", "tuf-2000m", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    reading = json.loads(res.stdout)["reading"]
    assert reading["flow"] == 12.5 and reading["total"] == 1234.25 and reading["signal_quality"] == 0
    plain = edgectl("read", "--port", tuf_on_a_bus.a, "--map", "tuf-2000m", "--profile", "water_meter")
    assert "slave 1 (tuf-2000m)" in plain.stdout and "(register 0, f32 x 1, m3/h)" in plain.stdout
    # the installer's own map file: the same registers read high word first are nonsense,
    # and a wrong field is named
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"fields": [{"name": "flow", "address": 0, "type": "f32", "word_order": "ABCD"}]}))
    res = edgectl("read", "--port", tuf_on_a_bus.a, "--map", str(own), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["reading"]["flow"] != 12.5
    own.write_text(json.dumps({"fields": [{"name": "flow", "address": 0, "type": "f64"}]}))
    res = edgectl("read", "--port", tuf_on_a_bus.a, "--map", str(own))
    assert res.returncode == 1 and "own.json.fields[0].type: 'f64' is not one of" in res.stderr
    res = edgectl("scan", "--port", tuf_on_a_bus.a, "--ids", "1-2", "--timeout", "0.1", "--map", "tuf-2000m")
    assert res.returncode == 0 and "found: slave 1 at 9600 baud" in res.stdout, res.stdout + res.stderr
    res = edgectl("read", "--port", tuf_on_a_bus.a, "--map", "tuf-2001")
    assert res.returncode == 1 and "no such map file or shipped map; shipped: boqu-bh-485-nh" in res.stderr


def test_edgectl_simulate_serves_any_map(tmp_path):
    rows = [(0, {"laeq": 53.6})]
    trace = scenarios.write(str(tmp_path / "n.jsonl.gz"), {"trace": "t", "profile": "noise"}, rows)
    with VirtualBus(str(tmp_path / "bus")) as bus:
        sim = subprocess.Popen([sys.executable, "-m", "tools.edgectl", "simulate", "--map", "sonbest-sm7901b",
                                "--trace", trace, "--port", bus.b], cwd=runtime.ROOT, stdout=subprocess.PIPE,
                               text=True)
        try:
            assert "simulate: sonbest-sm7901b" in sim.stdout.readline()
            res = edgectl("read", "--port", bus.a, "--profile", "noise", "--json")
            assert res.returncode == 0, res.stdout + res.stderr
            assert json.loads(res.stdout)["reading"] == {"laeq": 53.6}
        finally:
            sim.terminate()
            sim.wait(10)

"""edgectl fuzz: every parser that takes bytes from outside, fed mutated valid inputs and
random bytes; anything but the exceptions its module documents is a crash.

A target is one parser as its caller uses it, over bytes: the agent's Modbus replies
(edge/modbus.py) and CJ/T 188 water meters' replies (edge/cjt188.py), MQTT packets as
the agent reads them (edge/mqtt.py) and as the gateway does (edge/mqtt_receiver.py, MQTT
5), events (edge/codec.py), the gateway's acknowledgements as the agent reads them
(edge/ack.py), the agent's config file (edge/config.py), the gateway's devices.json
(gateway/registry.py), and an upload's body at the platform receiver
(gateway/platform.py: the handler's steps once the gateway's signature is checked).
Inputs start from valid ones (golden vectors, real frames and documents): bit flips,
random bytes, insertions, cuts, truncations, length fields nudged (+-1, 0x7f, 0x80,
0xff), splices of two seeds; about half of those made to pass the first gate again (a
Modbus CRC, a CJ/T 188 checksum, a MAC) so that the checks behind it are reached; a
tenth pure random bytes; the JSON documents also mutated as trees (a value replaced by a
wrong type, a huge integer, NaN, a control character; a key removed or added). The seed
is printed, so a run can be repeated; a crash prints its input, ready to become a test.

    edgectl fuzz --count 1000000              # every target, the count shared out
    edgectl fuzz --target modbus --seed 7     # one target, a run repeated
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import gzip
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from edge import ack, cjt188, codec, config, modbus, mqtt, mqtt_receiver
from edge.codes import CODES
from tools.common import runtime
from tools.testbench import slave

VECTORS = os.path.join(runtime.ROOT, "tests", "vectors")     # the golden vectors, the first seeds
MQTT_LIMIT = 1024         # the agent's link reads packets up to this
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF)


# ---- mutations -----------------------------------------------------------------------

def mutate(rnd: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """One to four byte-level changes to data."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(8)
        n = len(b)
        if op == 0 and n:                                   # flip a bit
            b[rnd.randrange(n)] ^= 1 << rnd.randrange(8)
        elif op == 1 and n:                                 # a random byte
            b[rnd.randrange(n)] = rnd.randrange(256)
        elif op == 2 and n:                                 # a length field nudged
            i = rnd.randrange(n)
            b[i] = (b[i] + rnd.choice((-1, 1, 2, 0x80))) & 0xFF if rnd.random() < 0.5 else rnd.choice(INTERESTING)
        elif op == 3:                                       # bytes inserted
            i = rnd.randrange(n + 1)
            b[i:i] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 4 and n:                                 # a range cut out
            i = rnd.randrange(n)
            del b[i:i + rnd.randint(1, 8)]
        elif op == 5 and n:                                 # truncated
            del b[rnd.randrange(n):]
        elif op == 6 and n:                                 # a range repeated
            i = rnd.randrange(n)
            b[i:i] = b[i:i + rnd.randint(1, 16)]
        else:                                               # spliced with another seed
            other = rnd.choice(seeds)
            b = b[:rnd.randrange(n + 1)] + other[rnd.randrange(len(other) + 1):]
    return bytes(b)


ODD_VALUES = (None, True, False, 0, -1, 1 << 31, 1 << 63, -(1 << 63) - 1, 1 << 64, 10 ** 30, 1e308,
              math.nan, math.inf, -math.inf, 0.5, "", " " * 40, "x" * 300, "\x00", "a\nb", "\u00e9",
              "\ud800", "00" * 16, [], [1], [[]], {}, {"": None})


def mutate_tree(rnd: random.Random, doc: Any) -> Any:
    """A copy of a JSON document with one to three values replaced by a wrong or extreme
    one, removed, or added beside."""
    doc = json.loads(json.dumps(doc))
    for _ in range(rnd.randint(1, 3)):
        parent, key = _pick(rnd, doc)
        op = rnd.randrange(4)
        odd = copy.deepcopy(rnd.choice(ODD_VALUES))
        if parent is None:
            doc = odd
        elif op == 0 and isinstance(parent, dict):
            del parent[key]
        elif op == 1 and isinstance(parent, dict):
            parent[rnd.choice(("extra", key + "_", "", "\n"))] = odd
        else:
            parent[key] = odd
    return doc


def _pick(rnd: random.Random, doc: Any) -> tuple[Any, Any]:
    """(container, key) of a random node below doc, or (None, None) for doc itself."""
    parent, key, node = None, None, doc
    while isinstance(node, (dict, list)) and node and rnd.random() < 0.75:
        parent = node
        key = rnd.choice(list(node)) if isinstance(node, dict) else rnd.randrange(len(node))
        node = node[key]
    return parent, key


# ---- the targets ------------------------------------------------------------------------

@dataclass
class Target:
    """One parser over bytes. seeds: (context, valid input) pairs, the context (a Modbus
    request) handed to check with every input made from that seed; check raises one of
    `allowed` for an input it refuses, anything else is a crash; fix makes a mutated
    input pass the first gate again; doc: a valid JSON document, mutated as a tree too."""
    module: str
    share: int
    seeds: Callable[[], list[tuple[Any, bytes]]]
    check: Callable[[Any, bytes], Any]
    allowed: tuple[type[BaseException], ...]
    fix: Callable[[bytes], bytes] | None = None
    doc: Callable[[], Any] | None = None


def _modbus_seeds() -> list[tuple[Any, bytes]]:
    rnd = random.Random(0)
    out = []
    for fc in (modbus.READ_HOLDING, modbus.READ_INPUT):
        for count in (1, 2, 5, 8, 125):
            req = modbus.read_request(7, fc, 100, count)
            out.append((req, slave.read_response(7, fc, [rnd.randrange(0x10000) for _ in range(count)])))
            out.append((req, slave.exception_response(7, fc, rnd.choice((1, 2, 4, 11)))))
    from edge.modbus_write import write_multiple_request, write_single_request
    for req in (write_single_request(7, 3, 0xBEEF), write_multiple_request(7, 3, [1, 2, 3])):
        out.append((req, slave.write_response(req)))
    return out


def _modbus_check(request: bytes, frame: bytes) -> None:
    got = modbus.parse_response(request, frame)
    if request[1] in (modbus.READ_HOLDING, modbus.READ_INPUT):
        assert len(got) == request[5] and all(0 <= w <= 0xFFFF for w in got), got
    else:
        assert got == (request[2] << 8 | request[3], request[4] << 8 | request[5]), got


def _reseal(frame: bytes) -> bytes:
    return modbus.seal(frame[:-2]) if len(frame) > 2 else frame


def _cjt188_seeds() -> list[tuple[Any, bytes]]:
    """The worked frames (tests/vectors/cjt188.json), and the simulated meter's replies:
    both DI orders, every volume unit, a few preambles, an error reply."""
    from tools.testbench.cjt188_meter import meter_data, reply
    with open(os.path.join(VECTORS, "cjt188.json")) as fh:
        vectors = json.load(fh)
    out = []
    for v in vectors["replies"] + vectors["refused"]:
        out.append((cjt188.read_request(v["meter_type"], v["address"], v["order"]), bytes.fromhex(v["hex"])))
    rnd = random.Random(0)
    for order in cjt188.ORDERS:
        req = cjt188.read_request(cjt188.COLD_WATER, "78330011223344", order, ser=rnd.randrange(256))
        for unit in range(0x29, 0x2F):
            m3 = rnd.randrange(10 ** 8) * 10.0 ** (unit - 0x2C - 2)       # 8 digits in that unit
            data = meter_data(m3, None, (2026, 3, 2, 8, 0, 0), rnd.randrange(256), 0, unit)
            out.append((req, reply(req, data, "78330011223344", preamble=rnd.randrange(5))))
        out.append((req, reply(req, b"\x01\x00", "78330011223344", error=True)))
    return out


def _cjt188_check(request: bytes, frame: bytes) -> None:
    total, settled, clock, st1, st2 = cjt188.meter_data(cjt188.parse_reply(request, frame))
    assert 0 <= total < 10 ** 8 and 0 <= settled < 10 ** 8 and 0 <= st1 < 256 and 0 <= st2 < 256, (total, st1)
    assert len(clock) == 6 and all(0 <= c <= 9999 for c in clock), clock


def _rechecksum(frame: bytes) -> bytes:
    # the sum from 68 to the last data byte, so the checks behind it are reached
    i = cjt188.start(frame)
    if len(frame) - i < 3:
        return frame
    return frame[:-2] + bytes((sum(frame[i:-2]) & 0xFF,)) + frame[-1:]


def _mqtt_seeds() -> list[tuple[Any, bytes]]:
    with open(os.path.join(VECTORS, "mqtt.json")) as fh:
        golden = json.load(fh)
    packets = [bytes.fromhex(v["hex"]) for v in golden["packets"]]
    publish = bytes(mqtt.publish("dev/wm-1/ev", b"\x02\x14" + bytes(20), 1, 7, False, False))
    # as mosquitto sends them to the gateway: MQTT 5, no properties (read_publishes' shape)
    publish5 = b"".join(bytes(mqtt.publish("dev/wm-%d/ev" % i, b"\x02\x02" + bytes(20), 1, i, False, False, b""))
                        for i in range(1, 4))
    return [(None, p) for p in packets + [publish, b"".join(packets[:4]), publish * 3, publish5]]


def _read_packets(data: bytes, split: Callable[..., tuple[bytes, int, int]]) -> None:
    """Every packet of a buffer, as a receiver reads them: the fixed header, then a
    PUBLISH's topic and packet id (MQTT 5: and its properties)."""
    i, n = 0, len(data)
    while True:
        got = mqtt.parse(data, i, n, MQTT_LIMIT)
        if got is None:
            return
        first, j, end = got
        assert i + 2 <= j <= end <= n and end - j <= MQTT_LIMIT, (i, got)
        if first >> 4 == mqtt_receiver.PUBLISH:
            topic, pid, k = split(data, first, j, end)
            assert j <= k <= end and 0 <= pid <= 0xFFFF, (j, k, end)
        elif first >> 4 in (mqtt_receiver.CONNACK, mqtt_receiver.SUBACK) and split is not mqtt.split_publish:
            assert mqtt_receiver.skip_props(data, j + 2, end) <= end
        i = end


def _mqtt_receiver_check(_: Any, data: bytes) -> None:
    _one_pass_check(data)
    _read_packets(data, lambda buf, first, i, end: mqtt_receiver.split_publish(buf, first, i, end, True))


def _one_pass_check(data: bytes) -> None:
    """The gateway's one pass over QoS 1 PUBLISHes (mqtt_receiver.read_publishes), given
    the topics of the packets that parse: what it reads before it stops is what parse
    and split_publish read."""
    topics: dict[bytes, str] = {}
    i = 0
    try:
        while (got := mqtt.parse(data, i, len(data), MQTT_LIMIT)) is not None:
            if got[0] >> 4 == mqtt_receiver.PUBLISH:
                topic = bytes(mqtt_receiver.split_publish(data, got[0], got[1], got[2], True)[0])
                topics[topic] = topic.decode()
            i = got[2]
    except ValueError:                  # a packet that does not parse: the topics before it
        pass
    read: list[tuple[str, bytes, int, int]] = []
    stop = mqtt_receiver.read_publishes(data, 0, len(data), True, topics, lambda *m: m, read)
    i, want = 0, []
    while i < stop:
        first, j, end = mqtt.parse(data, i, len(data), MQTT_LIMIT)
        topic, pid, k = mqtt_receiver.split_publish(data, first, j, end, True)
        want.append((topics[bytes(topic)], data[k:end], pid, 1))
        i = end
    assert i == stop and read == want, (stop, read, want)


def _event_vectors() -> dict[str, Any]:
    with open(os.path.join(VECTORS, "events.json")) as fh:
        return json.load(fh)


_VECTORS = _event_vectors()
SIGNER = codec.Signer(bytes.fromhex(_VECTORS["key"]), _VECTORS["device_id"])


def _codec_seeds() -> list[tuple[Any, bytes]]:
    out = [bytes.fromhex(v["hex"]) for v in _VECTORS["vectors"]]
    rnd = random.Random(0)
    for code, (_, _, fields) in CODES.items():
        values = [rnd.choice((None, 0, 1, -5, 12345, 2.5)) for _ in fields]
        out.append(codec.encode(SIGNER, code, rnd.randrange(3), rnd.randrange(1, 300), rnd.randrange(1, 1 << 20),
                                1_780_000_000, values, rnd.random() < 0.8))
    return [(None, p) for p in out]


def _codec_check(_: Any, data: bytes) -> None:
    try:
        row = codec.decode_row(data)
    except codec.CodecError as e:
        row = e
    ev = codec.decode(data)
    # decode_row: the same event, its values' JSON as the store would write decode's
    assert not isinstance(row, Exception) and row[-1] == json.dumps(ev["values"], separators=(",", ":")), (row, ev)
    assert set(ev["values"]) == {f[0] for f in CODES[ev["code"]][2]}, ev
    assert all(v is None or isinstance(v, (int, float)) for v in ev["values"].values()), ev
    codec.decode(data, SIGNER)      # the MAC checked too (a CodecError but for a resigned input)


def _resign(data: bytes) -> bytes:
    return data[:-codec.MAC_LEN] + SIGNER.mac(data[:-codec.MAC_LEN]) if len(data) > codec.MAC_LEN else data


def _ack_seeds() -> list[tuple[Any, bytes]]:
    return [(None, ack.encode(SIGNER, r)) for r in ([(3, 1, 1)], [(3, 1234, 50), (4, 1, 2000)], [(1, 1, 1)] * 64)]


class Refused(Exception):
    """A parser that says "not valid" with a value (edge/ack.py's None), as a refusal."""


def _ack_check(_: Any, data: bytes) -> None:
    ranges = ack.decode(SIGNER, data)
    if ranges is None:
        raise Refused()
    assert all(len(r) == 3 and min(r) >= 0 for r in ranges), ranges


def _resign_ack(data: bytes) -> bytes:
    end = len(data) - ack.MAC_LEN
    return data[:end] + SIGNER.mac(b"ack" + data[:end]) if end > 0 else data


_scratch: dict[str, Any] = {}     # the folder of this run (scratch()), and the platform's database in it


@contextlib.contextmanager
def scratch():
    """A folder for the loaders that read a file, in memory where there is a tmpfs (a
    disk's metadata writes would cost more than the parse), removed after the run."""
    folder = tempfile.mkdtemp(prefix="edgectl-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    _scratch["dir"] = folder
    with open(os.path.join(folder, "ca.der"), "wb") as fh:    # the CA file the config seed names
        fh.write(b"0")
    try:
        yield folder
    finally:
        if "db" in _scratch:
            _scratch["db"].close()
        _scratch.clear()
        shutil.rmtree(folder, ignore_errors=True)


def _file(name: str, data: bytes) -> str:
    path = os.path.join(_scratch["dir"], name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


CONFIG = {"device_id": "elev-b7-1", "secret": "00112233445566778899aabbccddeeff", "profile": "elevator",
          "bus": {"port": "/dev/ttyUSB0", "baud": 9600, "parity": "E", "slave": 1, "word_order": "CDAB",
                  "timeout_ms": 300, "retries": 2},
          "broker": {"host": "192.168.1.10", "port": 8883, "user": "elev-b7-1", "password": "x" * 20,
                     "keepalive": 60, "tls": True, "ca": "ca.der"},
          "site": {"rated_speed": 1.75, "floors": [-1, 11]}, "utc_offset_s": 28800,
          "outbox": {"kb": 64, "segment_kb": 4}, "watchdog_ms": 30000, "params": {"comm_loss_s": 240},
          "clock": {"anchor": 1.5, "origin": 1_780_000_000, "speed": 4}, "telemetry": True}


def _config_check(_: Any, data: bytes) -> None:
    cfg = config.load(_file("config.json", data))
    for path, (_, default, _, _) in config.SCHEMA.items():
        assert default is not config.REQUIRED or config._get(cfg, path)[1], path


DEVICES = {"elev-b7-1": {"secret": "00112233445566778899aabbccddeeff", "profile": "elevator", "site": "B7"},
           "wm-0042": {"secret": "ff" * 32, "profile": "water_meter"}}


def _registry_check(_: Any, data: bytes) -> None:
    from gateway.registry import Registry     # the gateway's modules on first use: edgectl starts without them
    reg = Registry(_file("devices.json", data)).load()
    for dev in reg.devices():
        reg.signer(dev.device_id)


def _upload() -> dict[str, Any]:
    """A body as the gateway's uplink sends it: each event's fields, and its signed bytes."""
    events = []
    for device, code, action, boot, seq, values, clock_set in (
            ("elev-b7-1", 0x20, 1, 3, 1234, [7, 61], True),
            ("wm-0042", 0x02, 0, 1, 9, [12.5, None, 3.56], False)):
        raw = codec.encode(codec.Signer(bytes.fromhex(DEVICES[device]["secret"]), device), code, action, boot, seq,
                           1_780_000_000, values, clock_set)
        ev = codec.decode(raw)
        events.append(dict({k: ev[k] for k in ("type", "action", "boot", "seq", "t", "clock_set", "values")},
                           id="%s:%d:%d" % (device, boot, seq), device=device, payload=base64.b64encode(raw).decode()))
    return {"gateway": "gw-b7", "events": events}


UPLOAD = _upload()


def _platform_check(encoding: str | None, data: bytes) -> None:
    """What POST /v1/events does with a body once the gateway's signature is checked
    (gateway/platform.py post_events): the bounded gunzip, strict JSON, validate_upload,
    the insert into each device's chain, and the line --print writes for each new event.
    TooLarge is a 413, a ValidationError a 400; anything else would be a 500."""
    from gateway import platform
    db = _scratch.get("db")
    if db is None:
        db = _scratch["db"] = platform.PlatformDB(os.path.join(_scratch["dir"], "platform.sqlite"))
        db.conn.execute("PRAGMA synchronous=OFF")   # a scratch database: no fsync per input
    gateway, events = platform.validate_upload(platform.parse_json(platform.read_body(data, encoding)))
    for e in db.add(gateway, events, ["events[%d]" % i for i in range(len(events))]).new:
        platform.event_line(e)


def _upload_seeds() -> list[tuple[Any, bytes]]:
    body = json.dumps(UPLOAD).encode()
    return [(None, body), ("gzip", gzip.compress(body)), ("gzip", gzip.compress(json.dumps(UPLOAD, indent=2).encode()))]


def _json_seed(doc: Any) -> Callable[[], list[tuple[Any, bytes]]]:
    return lambda: [(None, json.dumps(doc).encode()), (None, json.dumps(doc, indent=2).encode())]


def _platform_allowed() -> tuple[type[BaseException], ...]:
    from gateway.platform import TooLarge, ValidationError
    return (TooLarge, ValidationError)


def _registry_allowed() -> tuple[type[BaseException], ...]:
    from gateway.registry import RegistryError
    return (RegistryError,)


def _hj212_seeds() -> list[tuple[Any, bytes]]:
    from gateway import hj212
    segments = [
        "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&",
        "QN=20160801085857223;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&",
        "QN=20160801085857223;ST=21;CN=2011;PW=123456;MN=wq-001;Flag=5;CP=&&DataTime=20160801085857;"
        "w01001-Rtd=7.12,w01001-Flag=N;w21003-Rtd=1.215,w21003-Flag=C&&",
    ]
    out = []
    for seg in segments:
        data = seg.encode()
        out.append((None, b"##%04d%s%04X\r\n" % (len(data), data, hj212.crc(data))))
    out.append((None, out[0][1] + out[2][1]))      # two in one read
    return out


def _hj212_check(_: Any, data: bytes) -> None:
    from gateway import hj212
    events, rest = hj212.parse_all(data)
    assert len(rest) <= len(data)
    for ev in events:
        assert isinstance(ev, (hj212.Packet, hj212.Refused)), ev
        if isinstance(ev, hj212.Refused):
            assert ev.reason in hj212.REFUSALS, ev
    if not any(isinstance(ev, hj212.Packet) for ev in events):
        raise Refused()         # (counted: an input that gave no packet)


def _hj212_fix(data: bytes) -> bytes:
    # the length and CRC of the first packet made right again, so mutations reach the fields
    from gateway import hj212
    if not data.startswith(b"##") or len(data) < 12:
        return data
    body = data[6:-6] if data.endswith(b"\r\n") else data[6:-4]
    return b"##%04d%s%04X\r\n" % (len(body), body, hj212.crc(body))


# name: the parser, its share of --count (fast parsers get more), what it may raise
TARGETS: dict[str, Callable[[], Target]] = {
    "modbus": lambda: Target("edge/modbus.py", 30, _modbus_seeds, _modbus_check, (modbus.ModbusError,), _reseal),
    "cjt188": lambda: Target("edge/cjt188.py", 20, _cjt188_seeds, _cjt188_check, (cjt188.Cjt188Error,),
                             _rechecksum),
    "mqtt": lambda: Target("edge/mqtt.py", 20, _mqtt_seeds, lambda _, d: _read_packets(d, mqtt.split_publish),
                           (ValueError,)),
    "mqtt_receiver": lambda: Target("edge/mqtt_receiver.py", 20, _mqtt_seeds, _mqtt_receiver_check, (ValueError,)),
    "codec": lambda: Target("edge/codec.py", 20, _codec_seeds, _codec_check, (codec.CodecError,), _resign),
    "ack": lambda: Target("edge/ack.py", 10, _ack_seeds, _ack_check, (Refused,), _resign_ack),
    "config": lambda: Target("edge/config.py", 3, _json_seed(CONFIG), _config_check, (config.ConfigError,),
                             doc=lambda: CONFIG),
    "registry": lambda: Target("gateway/registry.py", 4, _json_seed(DEVICES), _registry_check, _registry_allowed(),
                               doc=lambda: DEVICES),
    "platform": lambda: Target("gateway/platform.py", 5, _upload_seeds, _platform_check, _platform_allowed(),
                               doc=lambda: UPLOAD),
    # its refusals are values (hj212.Refused), never exceptions
    "hj212": lambda: Target("gateway/hj212.py", 10, _hj212_seeds, _hj212_check, (Refused,), _hj212_fix),
}


# ---- the run --------------------------------------------------------------------------------

@dataclass
class Crash:
    error: str             # "OverflowError: ..."
    where: str             # the innermost frame of our code: file:line
    data: bytes
    context: Any
    traceback: str
    times: int = 1


@dataclass
class Result:
    target: str
    module: str
    inputs: int = 0
    refused: int = 0       # raised one of the documented exceptions
    seconds: float = 0.0
    crashes: dict[tuple[str, str], Crash] = field(default_factory=dict)


def fuzz(name: str, count: int, seed: int) -> Result:
    """count inputs into one target, from random.Random(seed)."""
    t = TARGETS[name]()
    rnd = random.Random(seed)
    seeds = t.seeds()
    blobs = [s[1] for s in seeds]
    doc = t.doc() if t.doc else None
    res = Result(name, t.module, count)
    t0 = time.process_time()
    with scratch():
        for _ in range(count):
            context, data = rnd.choice(seeds)
            pick = rnd.random()
            if pick < 0.1:
                data = rnd.randbytes(rnd.randrange(64))
            elif doc is not None and pick < 0.5:
                context = seeds[0][0]       # a document goes as the first seed does (the platform's: not gzipped)
                data = json.dumps(mutate_tree(rnd, doc)).encode()
            else:
                data = mutate(rnd, data, blobs)
                if t.fix is not None and pick < 0.55:
                    data = t.fix(data)
            try:
                t.check(context, data)
            except t.allowed:
                res.refused += 1
            except Exception as e:   # the finding: anything else
                _record(res, e, data, context)
    res.seconds = time.process_time() - t0
    return res


def _record(res: Result, e: Exception, data: bytes, context: Any) -> None:
    """A crash, once per exception type and place (the innermost frame in our code)."""
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if "/edge/" in f.filename or "/gateway/" in f.filename] or tb
    where = "%s:%d" % (os.path.relpath(ours[-1].filename, runtime.ROOT), ours[-1].lineno)
    key = (type(e).__name__, where)
    if key in res.crashes:
        res.crashes[key].times += 1
    else:
        res.crashes[key] = Crash("%s: %s" % (type(e).__name__, e), where, data, context,
                                 "".join(traceback.format_exception(e)))


def shares(names: list[str], count: int) -> dict[str, int]:
    """count split between the targets by their share (the rounding's rest to the first)."""
    weights = {n: TARGETS[n]().share for n in names}
    total = sum(weights.values())
    out = {n: count * w // total for n, w in weights.items()}
    out[names[0]] += count - sum(out.values())
    return out


def run_all(names: list[str], count: int, seed: int, out=None) -> list[Result]:
    """Every named target, count shared out; prints the seed and a line per target to out."""
    out = out or sys.stdout
    results = []
    print("edgectl fuzz: seed %d, %d inputs over %s" % (seed, count, ", ".join(names)), file=out, flush=True)
    for i, (name, n) in enumerate(shares(names, count).items()):
        r = fuzz(name, n, seed + i)
        results.append(r)
        print("  %-14s %-22s %9d inputs  %8d refused  %6.1f s CPU  %s" % (
            name, r.module, r.inputs, r.refused, r.seconds,
            "%d crash(es)" % len(r.crashes) if r.crashes else "ok"), file=out, flush=True)
    print("  %-37s %9d inputs  in %.1f s CPU" % ("total", sum(r.inputs for r in results),
                                                sum(r.seconds for r in results)), file=out, flush=True)
    return results


def describe(r: Result, crash: Crash) -> str:
    """A crash as a report: where, how often, the input (to paste into a test) and the traceback."""
    c = crash.context       # a Modbus request, the platform's Content-Encoding, or None
    ctx = "" if c is None else " context=" + ("bytes.fromhex(%r)" % c.hex() if isinstance(c, bytes) else repr(c))
    return "%s crash in %s at %s (%d inputs): %s\n  input=bytes.fromhex(%r)%s\n%s" % (
        r.target, r.module, crash.where, crash.times, crash.error, crash.data.hex(), ctx, crash.traceback)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--count", type=int, default=1_000_000,
                    help="inputs in all, shared out between the targets (default 1000000)")
    ap.add_argument("--seed", type=int, help="repeat a run (default: a new random seed, printed)")
    ap.add_argument("--target", action="append", choices=list(TARGETS),
                    help="fuzz this parser only (repeatable; default: all of them)")


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    results = run_all(args.target or list(TARGETS), args.count, seed)
    crashes = [describe(r, c) for r in results for c in r.crashes.values()]
    for text in crashes:
        print("\n" + text)
    if crashes:
        print("edgectl fuzz: %d distinct crashes; repeat with --seed %d" % (len(crashes), seed), file=sys.stderr)
    return 1 if crashes else 0

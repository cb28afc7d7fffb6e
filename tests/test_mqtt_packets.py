"""edge/mqtt.py and edge/mqtt_receiver.py: golden packets from tests/vectors/mqtt.json
built and parsed under the MicroPython unix port and CPython alike; incremental parsing
byte by byte; oversized and malformed remaining lengths; the shared varint in its two
modes (MQTT's "need more", the event codec's errors); round trips found by hypothesis."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from edge import codec, mqtt, mqtt_receiver
from edge.codes import CODES
from tools.common import runtime

VECTORS = os.path.join(os.path.dirname(__file__), "vectors", "mqtt.json")
GOLDEN = json.load(open(VECTORS))

# Runs under both runtimes (MicroPython subset): every golden case, as one JSON line.
CHECK = """
import json, sys
from edge import mqtt, mqtt_receiver
g = json.load(open(sys.argv[1]))
MODULES = {"mqtt": mqtt, "mqtt_receiver": mqtt_receiver}

def arg(a):
    if isinstance(a, dict):
        return bytes.fromhex(a["hex"])
    if isinstance(a, list):
        return [arg(x) for x in a]
    return a

def error(f, *args):
    try:
        f(*args)
    except ValueError as e:
        return str(e)
    return None

out = {"packets": [], "parsed": [], "bytewise": [], "varints": [], "lengths": [], "malformed": [], "bodies": []}
stream = b""
for v in g["packets"]:
    module, name = v["build"].split(".")
    p = bytes(getattr(MODULES[module], name)(*[arg(a) for a in v["args"]]))
    out["packets"].append(p.hex())
    out["parsed"].append(list(mqtt.parse(p, 0, len(p), 1 << 20)))
    # byte by byte: "need more" until the last byte is there
    out["bytewise"].append([k for k in range(len(p) + 1) if mqtt.parse(p[:k], 0, k, 1 << 20) is not None])
    stream += p
# every packet of one buffer in one pass, as the gateway reads them
i, firsts = 0, []
while True:
    got = mqtt.parse(stream, i, len(stream), 1 << 20)
    if got is None:
        break
    firsts.append(got[0])
    i = got[2]
out["stream"] = [firsts, i == len(stream)]
for v in g["remaining_lengths"]:
    b = bytearray()
    mqtt.put_varint(b, v["n"])
    out["varints"].append(b.hex())
    head = bytes.fromhex("30" + v["hex"])
    # the length is known before the body comes: need more; above the limit: an error at once
    out["lengths"].append([list(mqtt.get_varint(head, 1, len(head), 4)), mqtt.parse(head, 0, len(head), 1 << 28),
                           error(mqtt.parse, head, 0, len(head), v["n"] - 1) if v["n"] else None])
for v in g["malformed"]:
    b = bytes.fromhex(v["hex"])
    # three continued length bytes may still be followed by a last one: need more
    out["malformed"].append([error(mqtt.parse, b, 0, len(b), 1 << 28), mqtt.parse(b[:4], 0, 4, 1 << 28)])
for v in g["publish_bodies"]:
    b = bytes.fromhex(v["body"])
    topic, pid, start = mqtt_receiver.split_publish(b, v["first"], 0, len(b), v["v5"])
    out["bodies"].append([topic.decode(), pid, b[start:].hex()])
print(json.dumps(out))
"""


def expected() -> dict:
    packets = GOLDEN["packets"]
    return {
        "packets": [v["hex"] for v in packets],
        "parsed": [[int(v["hex"][:2], 16), 2, len(v["hex"]) // 2] for v in packets],
        "bytewise": [[len(v["hex"]) // 2] for v in packets],
        "stream": [[int(v["hex"][:2], 16) for v in packets], True],
        "varints": [v["hex"] for v in GOLDEN["remaining_lengths"]],
        "lengths": [[[v["n"], 1 + len(v["hex"]) // 2],
                     [0x30, 1 + len(v["hex"]) // 2, 1 + len(v["hex"]) // 2] if v["n"] == 0 else None,
                     "a packet of %d bytes (limit %d)" % (v["n"], v["n"] - 1) if v["n"] else None]
                    for v in GOLDEN["remaining_lengths"]],
        "malformed": [["malformed remaining length", None] for _ in GOLDEN["malformed"]],
        "bodies": [[v["topic"], v["pid"], v["payload"]] for v in GOLDEN["publish_bodies"]],
    }


def run_check(rt: str) -> dict:
    argv = [runtime.micropython()] if rt == "micropython" else [sys.executable]
    proc = subprocess.run(argv + ["-c", CHECK, VECTORS], env=runtime.micropython_env(), capture_output=True,
                          text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("rt", ["micropython", "cpython"])
def test_golden_vectors_build_and_parse_the_same_under_both_runtimes(rt):
    got, want = run_check(rt), expected()
    for key in want:
        assert got[key] == want[key], key


@pytest.mark.parametrize("v", GOLDEN["remaining_lengths"], ids=lambda v: str(v["n"]))
def test_a_whole_packet_of_each_remaining_length_parses(v):
    packet = mqtt.packet(0x30, bytes(v["n"]))
    assert packet[1:1 + len(v["hex"]) // 2].hex() == v["hex"]
    assert mqtt.parse(packet, 0, len(packet), v["n"]) == (0x30, 1 + len(v["hex"]) // 2, len(packet))
    assert mqtt.parse(packet, 0, len(packet) - 1, v["n"]) is None


def test_parse_reads_from_an_offset_of_a_memoryview():
    stream = memoryview(b"\xff\xff" + mqtt_receiver.puback(7) + mqtt.packet(0xC0, b""))
    assert mqtt.parse(stream, 2, len(stream), 16) == (0x40, 4, 6)
    assert mqtt.parse(stream, 6, len(stream), 16) == (0xC0, 8, 8)
    assert mqtt.parse(stream, 8, len(stream), 16) is None


@pytest.mark.parametrize("data,message", [
    (b"\x30\x80\x80\x80\x80\x01", "malformed remaining length"),
    (b"\x30\x81\x01" + bytes(129), r"a packet of 129 bytes \(limit 128\)"),
])
def test_a_bad_or_oversized_remaining_length_is_an_error(data, message):
    with pytest.raises(ValueError, match=message):
        mqtt.parse(data, 0, len(data), 128)


@pytest.mark.parametrize("body,first,v5", [
    (b"", 0x32, False), (b"\x00", 0x32, False), (b"\x00\x05ab", 0x30, False),   # cut in the topic
    (b"\x00\x01a\x00", 0x32, False),                                           # cut in the packet id
    (b"\x00\x01a\x00\x01", 0x32, True), (b"\x00\x01a\x00\x01\x05ab", 0x32, True),   # cut in the properties
])
def test_a_short_publish_body_is_an_error_not_an_index_error(body, first, v5):
    with pytest.raises(ValueError):
        mqtt_receiver.split_publish(body, first, 0, len(body), v5)


@given(st.binary(max_size=40), st.sampled_from([0x30, 0x32, 0x3A]), st.booleans(), st.binary(min_size=1, max_size=20))
def test_a_publish_body_never_reads_into_the_next_packet(body, first, v5, after):
    # the body sits between other bytes, as in a stream: whatever its topic length says,
    # what comes back lies inside it, or it is a ValueError
    buf = b"\xee" * 3 + body + after
    try:
        topic, pid, start = mqtt_receiver.split_publish(buf, first, 3, 3 + len(body), v5)
    except ValueError:
        return
    assert 3 <= start <= 3 + len(body) and bytes(topic) in body and 0 <= pid <= 0xFFFF


def test_the_event_codec_varint_is_bounded_and_a_cut_one_is_an_error():
    # the same varint: "need more" for MQTT, a CodecError naming the byte for an event
    assert mqtt.get_varint(b"\xff" * 9 + b"\x7f", 0, 10, 10) == (2 ** 70 - 1, 10)
    with pytest.raises(ValueError):
        mqtt.get_varint(b"\xff" * 11, 0, 11, 10)
    assert mqtt.get_varint(b"\xff\xff", 0, 2, 10) is None
    head = bytes((codec.VERSION, sorted(CODES)[0], 0))             # then the boot counter
    with pytest.raises(codec.CodecError, match="varint at byte 3 longer than 10 bytes"):
        codec.decode(head + b"\xff" * 11 + bytes(codec.MAC_LEN))
    with pytest.raises(codec.CodecError, match="truncated varint at byte 3"):
        codec.decode(head + b"\xff" * 7 + bytes(codec.MAC_LEN))     # runs into the MAC


@given(st.integers(0, 2 ** 63 - 1))
def test_varint_round_trip(n):
    out = bytearray()
    mqtt.put_varint(out, n)
    assert len(out) == max(1, (n.bit_length() + 6) // 7)
    assert mqtt.get_varint(bytes(out), 0, len(out), 10) == (n, len(out))
    assert mqtt.get_varint(bytes(out), 0, len(out) - 1, 10) is None


publishes = st.tuples(
    st.text(min_size=1, max_size=40).filter(lambda t: len(t.encode()) < 65536),   # topic
    st.binary(max_size=300),                                                      # payload: 1 or 2 length bytes
    st.integers(0, 1), st.integers(1, 65535), st.booleans(), st.booleans())       # qos, pid, dup, retain


@given(st.lists(publishes, min_size=1, max_size=5), st.data())
def test_publishes_fed_in_any_chunks_come_back_whole_and_in_order(sent, data):
    stream = b"".join(mqtt.publish(*p) for p in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    buf, i, got = bytearray(), 0, []
    for lo, hi in zip([0] + cuts, cuts + [len(stream)]):
        buf += stream[lo:hi]
        while True:
            packet = mqtt.parse(buf, i, len(buf), 1 << 16)
            if packet is None:
                break
            first, start, end = packet
            topic, pid, at = mqtt.split_publish(buf, first, start, end)
            got.append((topic.decode(), bytes(buf[at:end]), first >> 1 & 3, pid, bool(first & 8), bool(first & 1)))
            i = end
    assert i == len(stream)
    assert got == [(t, pl, q, pid if q else 0, d, r) for t, pl, q, pid, d, r in sent]


def u16_string(x: str | bytes) -> bytes:
    """An MQTT string written here independently of edge/mqtt.py: u16 length, bytes."""
    raw = x.encode() if isinstance(x, str) else x
    return len(raw).to_bytes(2, "big") + raw


wills = st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=20), st.integers(0, 1), st.booleans())


@given(st.text(min_size=1, max_size=23), st.integers(0, 65535), st.booleans(),
       st.none() | st.text(max_size=20), st.none() | st.text(max_size=20), st.none() | wills,
       st.none() | st.binary(max_size=20))
def test_connect_fields_land_where_the_spec_puts_them(client_id, keepalive, clean, user, password, will, props):
    p = mqtt.connect(client_id, keepalive, clean, user, password, will, props)
    first, i, end = mqtt.parse(p, 0, len(p), 1 << 16)
    assert first == 0x10 and end == len(p)
    assert p[i:i + 6] == b"\x00\x04MQTT" and p[i + 6] == (4 if props is None else 5)
    flags = p[i + 7]
    assert (flags & 0x80 != 0, flags & 0x40 != 0, flags & 0x02 != 0) == (user is not None, password is not None, clean)
    assert (flags & 0x04 != 0) == (will is not None)
    if will:
        assert (flags >> 3 & 3, flags & 0x20 != 0) == (will[2], will[3])
    assert p[i + 8] << 8 | p[i + 9] == keepalive
    j = i + 10
    if props is not None:
        n, j = mqtt.get_varint(p, j, end, 4)
        assert p[j:j + n] == props
        j += n
    payload = u16_string(client_id)
    if will:
        # MQTT 5: the will's own properties (none) come first
        payload += (b"" if props is None else b"\x00") + u16_string(will[0]) + u16_string(will[1])
    for f in (user, password):
        if f is not None:
            payload += u16_string(f)
    assert p[j:] == payload


@given(st.lists(publishes, min_size=1, max_size=6), st.booleans(), st.data())
def test_read_publishes_reads_what_parse_and_split_publish_read(sent, v5, data):
    # the gateway's one-pass reading of QoS 1 PUBLISHes: wherever it stops, what it read
    # before is what parse and split_publish read, packet by packet
    stream = b"".join(mqtt.publish(t, pl, q, pid, d, r, b"" if v5 else None) for t, pl, q, pid, d, r in sent)
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(stream) - 1))
        stream = stream[:i] + bytes((data.draw(st.integers(0, 255)),)) + stream[i + 1:]
    stream = stream[:data.draw(st.integers(0, len(stream)))]
    topics = {t.encode(): t for t, *_ in sent if data.draw(st.booleans())}
    got: list = []
    end = mqtt_receiver.read_publishes(stream, 0, len(stream), v5, topics, lambda *m: m, got)
    want, i = [], 0
    while i < end:
        first, j, stop = mqtt.parse(stream, i, len(stream), 1 << 20)
        topic, pid, at = mqtt_receiver.split_publish(stream, first, j, stop, v5)
        want.append((topic.decode(), stream[at:stop], pid, first >> 1 & 3))
        i = stop
    assert i == end and got == want
    assert all(type(m[1]) is bytes for m in got)


def test_pubacks_are_the_pubacks_of_each_id_in_order():
    ids = [1, 2, 255, 256, 4660, 65535]
    assert mqtt_receiver.pubacks(ids) == b"".join(mqtt_receiver.puback(i) for i in ids)
    assert mqtt_receiver.pubacks([]) == b""

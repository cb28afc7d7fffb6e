"""edge.regmap: the four word/byte orders against the STANDARDS.md §0 float vectors, scaling
and rounding, and encode/decode round trips for both profiles on real corpus rows."""
from __future__ import annotations

import glob
import gzip
import itertools
import json
import math
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from edge import mapcheck, reads, regmap
from tools.testbench import slave


def plain_table(name: str) -> tuple:
    """A shipped map's one read as a plain table: rows without a word order of their own."""
    return tuple(r[:4] for r in reads.blocks(mapcheck.read_map(name)["fields"])[0][4])


ELEVATOR, WATER_METER = plain_table("elevator"), plain_table("water_meter")

# Bytes on the wire in little-endian (DCBA) order, as the PHG-2091 and Xintai meters send them.
FLOAT_VECTORS = [("00 00 C8 41", 25.0), ("B8 1E 21 41", 10.07), ("1E 85 0B 3F", 0.545)]


def wire_words(abcd: bytes, order: str) -> list[int]:
    """Registers a device with `order` sends for the big-endian bytes A B C D."""
    wire = bytes(abcd["ABCD".index(letter)] for letter in order)
    return [(wire[0] << 8) | wire[1], (wire[2] << 8) | wire[3]]


def wire_bytes(words: list[int], order: str) -> bytes:
    """The big-endian bytes A B C D back from a device's registers."""
    wire = bytes((words[0] >> 8, words[0] & 0xFF, words[1] >> 8, words[1] & 0xFF))
    return bytes(wire[order.index(letter)] for letter in "ABCD")


@pytest.mark.parametrize("le_bytes, value", FLOAT_VECTORS)
def test_little_endian_vectors(le_bytes, value):
    b = bytes.fromhex(le_bytes)
    words = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]]
    assert regmap.decode((("x", 0, "f32", 1),), words, "DCBA") == {"x": value}


@pytest.mark.parametrize("order", regmap.ORDERS)
@pytest.mark.parametrize("le_bytes, value", FLOAT_VECTORS)
def test_float_in_every_order(order, le_bytes, value):
    abcd = bytes.fromhex(le_bytes)[::-1]
    table = (("x", 0, "f32", 1),)
    words = wire_words(abcd, order)
    assert regmap.decode(table, words, order) == {"x": value}
    encoded = slave.encode(table, {"x": value}, order)
    assert regmap.decode(table, encoded, order) == {"x": value}
    # the Xintai 0.545 vector is one ulp below the float32 nearest to 0.545; the others are exact
    ulps = abs(int.from_bytes(wire_bytes(encoded, order), "big") - int.from_bytes(abcd, "big"))
    assert ulps <= 1


@pytest.mark.parametrize("order, words", [
    ("ABCD", [0x1234, 0x5678]),     # high word first (RS-LDO)
    ("CDAB", [0x5678, 0x1234]),     # word swap (TUF-2000M)
    ("BADC", [0x3412, 0x7856]),     # byte swap inside words
    ("DCBA", [0x7856, 0x3412]),     # little-endian (PHG-2091, Xintai)
])
def test_u32_orders(order, words):
    assert regmap.decode((("n", 0, "u32", 1),), words, order) == {"n": 0x12345678}
    assert slave.encode((("n", 0, "u32", 1),), {"n": 0x12345678}, order) == words


def test_signed_types():
    table = (("a", 0, "i16", 1), ("b", 1, "i32", 0.01))
    words = [0xFFFE] + wire_words(struct.pack(">i", -12345), "ABCD")
    assert regmap.decode(table, words) == {"a": -2, "b": -123.45}


def test_scaled_values_are_rounded_to_the_scale():
    r = regmap.decode(ELEVATOR, [0, 1, 162, 7, 0, 0, 0, 0])
    assert r["speed"] == 1.62 and repr(r["speed"]) == "1.62"    # not 1.6200000000000001
    assert isinstance(r["floor"], int) and r["floor"] == 7
    glitch = regmap.decode(ELEVATOR, [0, 0, 0xFFFF, 1, 0, 0, 0, 0])["speed"]
    assert glitch == 655.35                                       # the classic glitch decodes as-is
    wm = regmap.decode(WATER_METER, [0x0013, 0x0C2B] + wire_words(struct.pack(">f", 0.3035), "ABCD") + [356])
    assert wm == {"total": 1248.299, "flow": 0.3035, "battery": 3.56}


@pytest.mark.parametrize("scale, d", [(1, 0), (10, 0), (0.1, 1), (0.01, 2), (0.001, 3), (0.25, 2),
                                      (1e-5, 5), (2.5e-5, 6)])
def test_decimals(scale, d):
    assert regmap.decimals(scale) == d


def test_span_of_the_profiles():
    assert regmap.span(ELEVATOR) == (0, 8)
    assert regmap.span(WATER_METER) == (0, 5)
    assert regmap.span((("x", 100, "f32", 1), ("y", 103, "u16", 1))) == (100, 4)


def test_decode_from_an_explicit_first_address():
    table = (("x", 100, "u16", 1), ("y", 101, "i16", 1))
    assert regmap.decode(table, [5, 0xFFFF], first=100) == regmap.decode(table, [9, 5, 0xFFFF], first=99)


def test_bad_order_and_out_of_range_values_are_refused():
    with pytest.raises(ValueError, match="byte order"):
        regmap.decode(WATER_METER, [0] * 5, "ACBD")
    with pytest.raises(ValueError, match="speed"):
        slave.encode(ELEVATOR, {"speed": 700.0})
    with pytest.raises(ValueError, match="floor"):
        slave.encode(ELEVATOR, {"floor": -40000})


def test_missing_fields_encode_as_zero():
    assert slave.encode(ELEVATOR, {"floor": -1, "door": None}) == [0, 0, 0, 0xFFFF, 0, 0, 0, 0]


def corpus_rows(corpus: Path, profile: str, per_trace: int = 400) -> list[dict]:
    """Answered rows with every field present, from the first traces of a profile."""
    rows = []
    folder = corpus / "dev" / profile
    for path in sorted(glob.glob(os.path.join(folder, "*.jsonl.gz")))[:3]:
        with gzip.open(path, "rt") as f:
            next(f)
            for line in itertools.islice(f, 20000):
                r = json.loads(line)["r"]
                if r and None not in r.values():
                    rows.append(r)
        # keep the interesting ones (moving car, running water) as well as idle rows
        rows = rows[:per_trace // 2] + [r for r in rows if r.get("speed") or r.get("flow")][:per_trace // 2]
    assert rows, "no corpus rows found under %s" % folder
    return rows


@pytest.mark.parametrize("order", regmap.ORDERS)
@pytest.mark.parametrize("profile", ["elevator", "water_meter"])
def test_corpus_rows_round_trip(corpus, profile, order):
    rows = corpus_rows(corpus, profile)
    table = plain_table(profile)
    for r in rows:
        assert regmap.decode(table, slave.encode(table, r, order), order) == r


@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8), st.sampled_from(regmap.ORDERS))
def test_integer_words_survive_decode_encode(words, order):
    table = (("a", 0, "u16", 1), ("b", 1, "i16", 0.1), ("c", 2, "u32", 0.001), ("d", 4, "i32", 0.01),
             ("e", 6, "u32", 1))
    assert slave.encode(table, regmap.decode(table, words, order), order) == words[:8]


@given(st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False),
       st.sampled_from(regmap.ORDERS))
def test_f32_decoding_is_stable(x, order):
    # decoding rounds to float32's ~7 significant digits; once rounded, a value must
    # come back unchanged through the device
    table = (("f", 0, "f32", 1),)
    v = regmap.decode(table, slave.encode(table, {"f": x}, order), order)["f"]
    assert regmap.decode(table, slave.encode(table, {"f": v}, order), order)["f"] == v
    assert v == pytest.approx(x, rel=1e-6, abs=0)


@pytest.mark.parametrize("order", regmap.ORDERS)
@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf])
def test_a_float_register_without_a_number_is_unknown(order, x):
    # NaN is many meters' "no value"; either way a detector must never compute with it
    words = wire_words(struct.pack(">f", x), order)
    assert regmap.decode((("f", 0, "f32", 1), ("n", 2, "u16", 1)), words + [7], order) == {"f": None, "n": 7}


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.sampled_from(regmap.ORDERS), st.sampled_from([1, 0.001, 10]))
def test_any_float_words_decode_to_a_finite_number_or_unknown(w0, w1, order, scale):
    v = regmap.decode((("f", 0, "f32", scale),), [w0, w1], order)["f"]
    assert v is None or math.isfinite(v)

"""The event wire format: golden vectors shared with the gateway, both runtimes, bad input."""
import hashlib
import hmac
import json
import os
import subprocess

import pytest
from hypothesis import given, strategies as st

from edge import codec
from edge.codes import CODES, code_of, ACTIONS
from edge.mqtt import put_varint
from tools.common import runtime

VECTORS = os.path.join(os.path.dirname(__file__), "vectors", "events.json")
GOLDEN = json.load(open(VECTORS))
SIGNER = codec.Signer(bytes.fromhex(GOLDEN["key"]), GOLDEN["device_id"])


def encode_vector(v):
    return codec.encode(SIGNER, code_of(v["type"]), ACTIONS.index(v["action"]), v["boot"], v["seq"],
                        v["t"], v["values"], v["clock_set"])


@pytest.mark.parametrize("v", GOLDEN["vectors"], ids=lambda v: v["what"])
def test_golden_vector_encodes_and_decodes(v):
    assert encode_vector(v).hex() == v["hex"]
    ev = codec.decode(bytes.fromhex(v["hex"]), SIGNER)
    fields = [f[0] for f in CODES[code_of(v["type"])][2]]
    assert ev["type"] == v["type"] and ev["action"] == v["action"]
    assert (ev["boot"], ev["seq"], ev["t"], ev["clock_set"]) == (v["boot"], v["seq"], v["t"], v["clock_set"])
    assert [ev["values"][f] for f in fields] == v["values"]


def test_micropython_writes_the_same_bytes(tmp_path):
    script = tmp_path / "enc.py"
    script.write_text(
        "import json\n"
        "from edge import codec\n"
        "from edge.codes import code_of, ACTIONS\n"
        "g = json.load(open(%r))\n"
        "s = codec.Signer(bytes.fromhex(g['key']), g['device_id'])\n"
        "for v in g['vectors']:\n"
        "    b = codec.encode(s, code_of(v['type']), ACTIONS.index(v['action']), v['boot'], v['seq'],"
        " v['t'], v['values'], v['clock_set'])\n"
        "    ev = codec.decode(b, s)\n"
        "    print(b.hex(), ev['seq'])\n" % VECTORS)
    out = subprocess.run([runtime.micropython(), str(script)], env=runtime.micropython_env(),
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert [line.split()[0] for line in out if line] == [v["hex"] for v in GOLDEN["vectors"]]


def test_binary_is_a_fraction_of_the_same_content_as_json():
    for v in GOLDEN["vectors"]:
        ev = codec.decode(bytes.fromhex(v["hex"]), SIGNER)
        as_json = json.dumps({k: ev[k] for k in ("type", "action", "boot", "seq", "t", "clock_set", "values")}
                             | {"mac": v["hex"][-16:]}, separators=(",", ":"))
        assert len(v["hex"]) // 2 * 4 <= len(as_json), (v["what"], len(v["hex"]) // 2, len(as_json))


def test_altered_payload_or_wrong_key_is_rejected():
    good = bytes.fromhex(GOLDEN["vectors"][0]["hex"])
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        with pytest.raises(codec.CodecError):
            codec.decode(bytes(bad), SIGNER)
    with pytest.raises(codec.CodecError, match="MAC"):
        codec.decode(good, codec.Signer(b"another device", GOLDEN["device_id"]))
    # the same key, another device: the MAC covers the device id the topic names
    with pytest.raises(codec.CodecError, match="MAC"):
        codec.decode(good, codec.Signer(bytes.fromhex(GOLDEN["key"]), "elev-b7-2"))


def test_the_mac_is_hmac_sha256_over_the_device_id_and_the_event():
    for v in GOLDEN["vectors"]:
        b = bytes.fromhex(v["hex"])
        device = GOLDEN["device_id"].encode()
        want = hmac.new(bytes.fromhex(GOLDEN["key"]), bytes([len(device)]) + device + b[:-8], hashlib.sha256)
        assert b[-8:] == want.digest()[:8]
        assert SIGNER.check(b[:-8], b[-8:]) and not SIGNER.check(b[:-8], b[-8:-1])


def test_numbers_past_their_bounds_are_refused_before_anything_stores_them():
    # a validly signed event with a 10-byte boot (2**70 - 1) once stopped the gateway's store
    def event(boot, seq, value):
        out = bytearray((codec.VERSION, code_of("device.boot"), 0))
        for n in (boot, seq):
            put_varint(out, n)
        out += bytes(4)
        put_varint(out, 1)
        put_varint(out, value)
        return bytes(out + SIGNER.mac(bytes(out)))
    assert codec.decode(event(2**32 - 1, 2**32 - 1, 2**64 - 1), SIGNER)["boot"] == 2**32 - 1
    for boot, seq, value, what in ((2**70 - 1, 1, 2, "boot"), (2**32, 1, 2, "boot"), (1, 2**32, 2, "seq"),
                                   (1, 1, 2**64, "version"), (2**77, 1, 2, "longer than 10 bytes")):
        with pytest.raises(codec.CodecError, match=what):
            codec.decode(event(boot, seq, value), SIGNER)


def test_version_1_is_refused_with_the_reason():
    v1 = b"\x01" + bytes.fromhex(GOLDEN["vectors"][0]["hex"])[1:]
    with pytest.raises(codec.CodecError, match="version 1 was withdrawn: its MAC did not cover the device id"):
        codec.decode(v1, SIGNER)


@pytest.mark.parametrize("payload,message", [
    (b"", "shorter"),
    (b"hello world, not an event", "version"),
    (bytes([codec.VERSION, 0xEE]) + bytes(20), "unknown event code"),
    (bytes.fromhex(GOLDEN["vectors"][0]["hex"])[:-1], "MAC|truncated|unexpected"),
])
def test_garbage_gets_a_clear_error(payload, message):
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(payload, SIGNER)


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_codec_error(data):
    try:
        codec.decode(data)
    except codec.CodecError:
        pass


@given(st.sampled_from(sorted(CODES)), st.integers(0, 2), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.data())
def test_round_trip(code, action, boot, seq, t, data):
    fields = CODES[code][2]
    values = [data.draw(st.none() | st.integers(-10**6, 10**6).map(lambda n, d=d: n / 10**d if d else n))
              for _, d in fields]
    ev = codec.decode(codec.encode(SIGNER, code, action, boot, seq, t, values), SIGNER)
    assert (ev["boot"], ev["seq"], ev["t"]) == (boot, seq, t)
    assert [ev["values"][f] for f, _ in fields] == values


# ---- the one-pass reading against the field-by-field one ------------------------------

def reference_decode(buf, signer=None):
    """The decoder as it was before its one-pass reading of the values: every varint by
    edge.mqtt's get_varint, field by field. The new one must agree with it on every
    input: the same event, or a CodecError with the same message."""
    from edge.mqtt import get_varint

    def varint(i, end):
        got = get_varint(buf, i, end, 10)
        if got is None:
            raise codec.CodecError("truncated varint at byte %d" % i)
        return got

    def ident(i, end, name):
        got = varint(i, end)
        if got[0] >= codec.MAX_ID:
            raise codec.CodecError("%s %d out of range (below 2**32)" % (name, got[0]))
        return got
    try:
        n = len(buf)
        if n < codec.MIN_LEN:
            raise codec.CodecError("payload of %d bytes is shorter than the smallest event (%d)" % (n, codec.MIN_LEN))
        if buf[0] != codec.VERSION:
            raise codec.CodecError("unknown format version %d (this build reads %d%s)" % (buf[0], codec.VERSION, (
                "; version 1 was withdrawn: its MAC did not cover the device id, update the agent"
                if buf[0] == 1 else "")))
        code = buf[1]
        if code not in CODES:
            raise codec.CodecError("unknown event code 0x%02x" % code)
        flags = buf[2]
        action = flags & codec.FLAG_ACTION
        if action >= len(ACTIONS):
            raise codec.CodecError("bad action bits %d in flags" % action)
        end = n - codec.MAC_LEN
        boot, i = ident(3, end, "boot")
        seq, i = ident(i, end, "seq")
        if i + 4 > end:
            raise codec.CodecError("truncated time field")
        t = int.from_bytes(buf[i:i + 4], "big")
        i += 4
        present, i = varint(i, end)
        name, kind, fields = CODES[code]
        if present >> len(fields):
            raise codec.CodecError("presence bits name fields that %s does not have" % name)
        values = {}
        for k, (fname, dec) in enumerate(fields):
            if present & (1 << k):
                z, i = varint(i, end)
                if z >= codec.MAX_ZIGZAG:
                    raise codec.CodecError("%s does not fit 64 bits" % fname)
                v = (z >> 1) ^ -(z & 1)
                values[fname] = v / 10 ** dec if dec else v
            else:
                values[fname] = None
        if i != end:
            raise codec.CodecError("%d unexpected bytes before the MAC" % (end - i))
        if signer is not None and not signer.check(bytes(buf[:end]), bytes(buf[end:])):
            raise codec.CodecError("MAC does not match: wrong device key or altered payload")
    except ValueError as e:            # CodecError, and get_varint's too long
        raise codec.CodecError(str(e))
    return {"type": name, "kind": kind, "code": code, "action": ACTIONS[action], "boot": boot, "seq": seq,
            "t": t, "clock_set": not flags & codec.FLAG_CLOCK_UNSET, "values": values}


def test_presence_bits_past_the_code_s_fields_are_refused_however_many():
    # 2**32 once read as the layout of the next code with no field (found by the test below)
    body = bytes((codec.VERSION, 0x20, 1)) + _put(1) + _put(1) + bytes(4) + _put(2**32)
    with pytest.raises(codec.CodecError, match="presence bits name fields that elevator.entrapment does not have"):
        codec.decode_row(body + SIGNER.mac(body), SIGNER)


def outcome(fn, *args):
    try:
        return fn(*args)
    except codec.CodecError as e:
        return "refused: %s" % e


def _put(n):
    out = bytearray()
    put_varint(out, n)
    return bytes(out)


# a varint's bytes: small numbers, ones near the bounds, and too long ones
VARINT_BYTES = st.one_of(st.integers(0, 300), st.integers(2**32 - 2, 2**32 + 1), st.integers(2**56 - 1, 2**56),
                         st.integers(2**63 - 1, 2**64 + 1), st.just(2**70 - 1)).map(_put) | st.binary(
    min_size=1, max_size=11).map(lambda b: bytes(x | 0x80 for x in b[:-1]) + bytes((b[-1] & 0x7F,)))


@given(st.sampled_from(sorted(CODES)), st.integers(0, 3), st.sampled_from([1, 127, 128, 2**32 - 1, 2**32]),
       st.integers(0, 2**33), st.sampled_from(["resign", "resign", "keep", "flip", "cut", "grow"]), st.data())
def test_the_one_pass_reading_agrees_with_the_field_by_field_one(code, flags, boot, seq, how, data):
    # mostly presence bits of the code's fields and as many values, each of any length
    present = data.draw(st.integers(0, 2 ** len(CODES[code][2]) - 1) | st.integers(0, 2**70))
    count = bin(present).count("1") + data.draw(st.sampled_from([0, 0, 0, -1, 1]))
    values = data.draw(st.lists(VARINT_BYTES, min_size=max(count, 0), max_size=max(count, 0)))
    body = bytes((codec.VERSION, code, flags)) + _put(boot) + _put(seq) + bytes(4) + _put(present) + b"".join(values)
    buf = body + SIGNER.mac(body)
    if how == "flip":
        i = data.draw(st.integers(0, len(buf) - 1))
        buf = buf[:i] + bytes((buf[i] ^ data.draw(st.integers(1, 255)),)) + buf[i + 1:]
    elif how == "cut":
        buf = buf[:data.draw(st.integers(0, len(buf)))]
    elif how == "grow":
        i = data.draw(st.integers(0, len(buf)))
        buf = buf[:i] + data.draw(VARINT_BYTES) + buf[i:]
    elif how == "keep":
        buf = body + bytes(8)
    for signer in (None, SIGNER):
        want = outcome(reference_decode, buf, signer)
        assert outcome(codec.decode, buf, signer) == want
        row = outcome(codec.decode_row, buf, signer)
        if isinstance(want, str):
            assert row == want
        else:
            # the store's JSON of the values: json.dumps of decode's, byte for byte
            assert row == (want["boot"], want["seq"], want["code"], want["type"], want["kind"], want["action"],
                           want["t"], want["clock_set"], json.dumps(want["values"], separators=(",", ":")))

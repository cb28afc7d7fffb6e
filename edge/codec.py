# Event wire format v1: compact, signed, sans-I/O. Spec: docs/wire-format.md.
#
#   u8 version | u8 code | u8 flags | uvarint boot | uvarint seq | u32 time (BE)
#   | uvarint presence bitmap | zigzag varint per present field | 8-byte MAC
#
# The MAC is HMAC-SHA256 under the device's secret over every byte before it, cut
# to 8 bytes. Runs on MicroPython (no hmac module there) and CPython alike.
import hashlib
import struct

from edge.codes import CODES, ACTIONS

VERSION = 1
MAC_LEN = 8
FLAG_ACTION = 0x03
FLAG_CLOCK_UNSET = 0x04   # time counts seconds since boot: the wall clock was not yet set
MIN_LEN = 3 + 1 + 1 + 4 + 1 + MAC_LEN


class CodecError(ValueError):
    """A payload that is not a valid event; the message says which part is wrong."""


class Signer:
    """HMAC-SHA256 with the key pads computed once, since every event is signed."""

    def __init__(self, key):
        if isinstance(key, str):
            key = key.encode()
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key + bytes(64 - len(key))
        self._ipad = bytes(b ^ 0x36 for b in key)
        self._opad = bytes(b ^ 0x5C for b in key)

    def mac(self, msg):
        inner = hashlib.sha256(self._ipad)
        inner.update(msg)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]


def _put_uvarint(out, n):
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_uvarint(buf, i, end):
    n = 0
    shift = 0
    while True:
        if i >= end:
            raise CodecError("truncated varint at byte %d" % i)
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise CodecError("varint too long at byte %d" % i)


def encode(signer, code, action, boot, seq, t, values, clock_set=True):
    """values: a sequence aligned with CODES[code] fields, None where unknown."""
    fields = CODES[code][2]
    out = bytearray((VERSION, code, action | (0 if clock_set else FLAG_CLOCK_UNSET)))
    _put_uvarint(out, boot)
    _put_uvarint(out, seq)
    out.extend(struct.pack(">I", int(t) & 0xFFFFFFFF))
    present = 0
    for i in range(len(fields)):
        if i < len(values) and values[i] is not None:
            present |= 1 << i
    _put_uvarint(out, present)
    for i in range(len(fields)):
        if present & (1 << i):
            n = int(round(values[i] * 10 ** fields[i][1]))
            _put_uvarint(out, (n << 1) ^ (n >> 63) if n < 0 else n << 1)
    out.extend(signer.mac(out))
    return bytes(out)


def decode(buf, signer=None):
    """Parse one event. With a signer the MAC is checked too. Raises CodecError."""
    n = len(buf)
    if n < MIN_LEN:
        raise CodecError("payload of %d bytes is shorter than the smallest event (%d)" % (n, MIN_LEN))
    if buf[0] != VERSION:
        raise CodecError("unknown format version %d (this build reads %d)" % (buf[0], VERSION))
    code = buf[1]
    if code not in CODES:
        raise CodecError("unknown event code 0x%02x" % code)
    flags = buf[2]
    action = flags & FLAG_ACTION
    if action >= len(ACTIONS):
        raise CodecError("bad action bits %d in flags" % action)
    end = n - MAC_LEN
    boot, i = _get_uvarint(buf, 3, end)
    seq, i = _get_uvarint(buf, i, end)
    if i + 4 > end:
        raise CodecError("truncated time field")
    t = struct.unpack(">I", bytes(buf[i:i + 4]))[0]
    i += 4
    present, i = _get_uvarint(buf, i, end)
    name, kind, fields = CODES[code]
    if present >> len(fields):
        raise CodecError("presence bits name fields that %s does not have" % name)
    values = {}
    for k in range(len(fields)):
        fname, dec = fields[k]
        if present & (1 << k):
            z, i = _get_uvarint(buf, i, end)
            v = (z >> 1) ^ -(z & 1)
            values[fname] = v / 10 ** dec if dec else v
        else:
            values[fname] = None
    if i != end:
        raise CodecError("%d unexpected bytes before the MAC" % (end - i))
    if signer is not None and signer.mac(bytes(buf[:end])) != bytes(buf[end:]):
        raise CodecError("MAC does not match: wrong device key or altered payload")
    return {
        "type": name, "kind": kind, "code": code, "action": ACTIONS[action],
        "boot": boot, "seq": seq, "t": t, "clock_set": not flags & FLAG_CLOCK_UNSET,
        "values": values,
    }


def values_of(code, mapping):
    """The value sequence for a code from a dict of field values (missing: None)."""
    return [mapping.get(f[0]) for f in CODES[code][2]]

# The event encoder a board carries: one signed event in wire format v2. The format and
# its decoder are edge/codec.py (spec: docs/wire-format.md); this half is apart so a
# board does not spend RAM on decoding what only the gateway reads.
#
#   u8 version | u8 code | u8 flags | uvarint boot | uvarint seq | u32 time (BE)
#   | uvarint presence bitmap | zigzag varint per present field | 8-byte MAC
#
# The MAC is HMAC-SHA256 under the device's secret over the device id (a length byte,
# then the id) and every byte before it, cut to 8 bytes: an event signed for one device
# does not verify as another's, even under the same key. Runs on MicroPython (no hmac
# module there) and CPython alike.
import hashlib
import struct

from edge.codes import CODES
from edge.mqtt import put_varint   # the same 7-bit varint as MQTT's remaining length

VERSION = 2    # 1: the MAC did not cover the device id (withdrawn, docs/wire-format.md)
MAC_LEN = 8
FLAG_ACTION = 0x03
FLAG_CLOCK_UNSET = 0x04   # time counts seconds since boot: the wall clock was not yet set


class Signer:
    """HMAC-SHA256 bound to one device: the key pads computed once, since every event is
    signed, and the device id put before every message."""

    def __init__(self, key, device_id):
        if isinstance(key, str):
            key = key.encode()
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key + bytes(64 - len(key))
        device_id = device_id.encode()
        # the inner pad, then the device id's length and the id: hashed before every message
        self._ipad = bytearray(key + bytes((len(device_id),)) + device_id)
        self._opad = bytearray(key)
        for i in range(64):   # a loop, not a generator: that would be a function in RAM
            self._ipad[i] ^= 0x36
            self._opad[i] ^= 0x5C

    def mac(self, msg):
        inner = hashlib.sha256(self._ipad)
        inner.update(msg)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]

    def check(self, msg, mac):
        """True when mac is msg's. Every byte is compared, so how long it takes does not
        tell a forger how many leading bytes were right."""
        diff = len(mac) ^ MAC_LEN
        for a, b in zip(self.mac(msg), mac):
            diff |= a ^ b
        return not diff


def encode(signer, code, action, boot, seq, t, values, clock_set=True):
    """values: a sequence aligned with CODES[code] fields, None where unknown."""
    fields = CODES[code][2]
    out = bytearray((VERSION, code, action | (0 if clock_set else FLAG_CLOCK_UNSET)))
    put_varint(out, boot)
    put_varint(out, seq)
    out.extend(struct.pack(">I", int(t) & 0xFFFFFFFF))
    present = 0
    for i in range(len(fields)):
        if i < len(values) and values[i] is not None:
            present |= 1 << i
    put_varint(out, present)
    for i in range(len(fields)):
        if present & (1 << i):
            n = int(round(values[i] * 10 ** fields[i][1]))
            put_varint(out, (n << 1) ^ (n >> 63) if n < 0 else n << 1)
    out.extend(signer.mac(out))
    return bytes(out)

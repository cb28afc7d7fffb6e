# Event wire format v2, both directions: the encoder (edge/event.py, which shows the
# layout and is all a board needs) and the decoder the gateway and the tools use.
# Sans-I/O. Spec: docs/wire-format.md.
import struct

from edge.codes import CODES, ACTIONS
from edge.event import FLAG_ACTION, FLAG_CLOCK_UNSET, MAC_LEN, VERSION, Signer, encode  # noqa: F401 (the API)
from edge.mqtt import get_varint

MIN_LEN = 3 + 1 + 1 + 4 + 1 + MAC_LEN
# What a reader takes, so that every number it hands on fits a 64-bit integer column:
# boot and seq below 2**32 (a u32, a 1-5 byte varint), a value's zigzag varint below
# 2**64 (a signed 64-bit integer once unzigzagged, at most 10 bytes).
MAX_ID = 1 << 32
MAX_ZIGZAG = 1 << 64

# event type -> code, for the gateway and the tools (a board keeps no second table of the
# codes: board modules name a code by its number)
BY_NAME = {entry[0]: code for code, entry in CODES.items()}


class CodecError(ValueError):
    """A payload that is not a valid event; the message says which part is wrong."""


# The varints are edge.mqtt's, at most 10 bytes each; one that runs into the MAC is an
# error (get_varint's None, which for MQTT means "need more bytes").


def _truncated(i):
    raise CodecError("truncated varint at byte %d" % i)


def _id(buf, i, end, name):
    got = get_varint(buf, i, end, 10) or _truncated(i)
    if got[0] >= MAX_ID:
        raise CodecError("%s %d out of range (below 2**32)" % (name, got[0]))
    return got


def decode(buf, signer=None):
    """Parse one event. With a signer (edge.event.Signer, bound to the device the topic
    names) the MAC is checked too. Raises CodecError."""
    try:
        return _decode(buf, signer)
    except CodecError:
        raise
    except ValueError as e:             # get_varint: a varint longer than 10 bytes
        raise CodecError(str(e))


def _decode(buf, signer):
    n = len(buf)
    if n < MIN_LEN:
        raise CodecError("payload of %d bytes is shorter than the smallest event (%d)" % (n, MIN_LEN))
    if buf[0] != VERSION:
        raise CodecError("unknown format version %d (this build reads %d%s)" % (buf[0], VERSION, (
            "; version 1 was withdrawn: its MAC did not cover the device id, update the agent"
            if buf[0] == 1 else "")))
    code = buf[1]
    if code not in CODES:
        raise CodecError("unknown event code 0x%02x" % code)
    flags = buf[2]
    action = flags & FLAG_ACTION
    if action >= len(ACTIONS):
        raise CodecError("bad action bits %d in flags" % action)
    end = n - MAC_LEN
    boot, i = _id(buf, 3, end, "boot")
    seq, i = _id(buf, i, end, "seq")
    if i + 4 > end:
        raise CodecError("truncated time field")
    t = struct.unpack(">I", bytes(buf[i:i + 4]))[0]
    i += 4
    present, i = get_varint(buf, i, end, 10) or _truncated(i)
    name, kind, fields = CODES[code]
    if present >> len(fields):
        raise CodecError("presence bits name fields that %s does not have" % name)
    values = {}
    for k in range(len(fields)):
        fname, dec = fields[k]
        if present & (1 << k):
            z, i = get_varint(buf, i, end, 10) or _truncated(i)
            if z >= MAX_ZIGZAG:
                raise CodecError("%s does not fit 64 bits" % fname)
            v = (z >> 1) ^ -(z & 1)
            values[fname] = v / 10 ** dec if dec else v
        else:
            values[fname] = None
    if i != end:
        raise CodecError("%d unexpected bytes before the MAC" % (end - i))
    if signer is not None and not signer.check(bytes(buf[:end]), bytes(buf[end:])):
        raise CodecError("MAC does not match: wrong device key or altered payload")
    return {
        "type": name, "kind": kind, "code": code, "action": ACTIONS[action],
        "boot": boot, "seq": seq, "t": t, "clock_set": not flags & FLAG_CLOCK_UNSET,
        "values": values,
    }


def values_of(code, mapping):
    """The value sequence for a code from a dict of field values (missing: None)."""
    return [mapping.get(f[0]) for f in CODES[code][2]]

# Event wire format v1, both directions: the encoder (edge/event.py, which shows the
# layout and is all a board needs) and the decoder the gateway and the tools use.
# Sans-I/O. Spec: docs/wire-format.md.
import struct

from edge.codes import CODES, ACTIONS
from edge.event import FLAG_ACTION, FLAG_CLOCK_UNSET, MAC_LEN, VERSION, Signer, encode  # noqa: F401 (the API)
from edge.mqtt import get_varint

MIN_LEN = 3 + 1 + 1 + 4 + 1 + MAC_LEN

# event type -> code, for the gateway and the tools (a board keeps no second table of the
# codes: board modules name a code by its number)
BY_NAME = {entry[0]: code for code, entry in CODES.items()}


class CodecError(ValueError):
    """A payload that is not a valid event; the message says which part is wrong."""


# The varints are edge.mqtt's: at most 10 bytes (63 bits) here, and one that runs into
# the MAC is an error (get_varint's None, which for MQTT means "need more bytes").


def _truncated(i):
    raise CodecError("truncated varint at byte %d" % i)


def decode(buf, signer=None):
    """Parse one event. With a signer the MAC is checked too. Raises CodecError."""
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
        raise CodecError("unknown format version %d (this build reads %d)" % (buf[0], VERSION))
    code = buf[1]
    if code not in CODES:
        raise CodecError("unknown event code 0x%02x" % code)
    flags = buf[2]
    action = flags & FLAG_ACTION
    if action >= len(ACTIONS):
        raise CodecError("bad action bits %d in flags" % action)
    end = n - MAC_LEN
    boot, i = get_varint(buf, 3, end, 10) or _truncated(3)
    seq, i = get_varint(buf, i, end, 10) or _truncated(i)
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

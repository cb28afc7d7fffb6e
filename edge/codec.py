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


def decode(buf, signer=None):
    """Parse one event. With a signer (edge.event.Signer, bound to the device the topic
    names) the MAC is checked too. Raises CodecError."""
    code, flags, boot, seq, t, present, zs = _read(buf, signer)
    name, kind, fields = _ENTRIES[code]
    values = {}
    k = 1
    for j in range(len(fields)):
        fname, dec = fields[j]
        if present & (1 << j):
            z = zs[k]
            k += 1
            v = (z >> 1) ^ -(z & 1)
            values[fname] = v / 10 ** dec if dec else v
        else:
            values[fname] = None
    return {
        "type": name, "kind": kind, "code": code, "action": ACTIONS[flags & FLAG_ACTION],
        "boot": boot, "seq": seq, "t": t, "clock_set": not flags & FLAG_CLOCK_UNSET,
        "values": values,
    }


def decode_row(buf, signer=None):
    """decode, for the gateway's store: (boot, seq, code, type, kind, action, t,
    clock_set, the values as compact JSON text), gateway.store.EventRow's order after
    the device. The same checks and errors; no dict per event, and the JSON written from
    a template per code and presence bits: json.dumps of decode's values, byte for byte
    (an int's repr, a float's repr, null)."""
    code, flags, boot, seq, t, present, zs = _read(buf, signer)
    count, scaled, text = _LAYOUTS.get(code << 32 | present) or _layout(code, present)
    values = [(z >> 1) ^ -(z & 1) for z in zs]
    for k, div in scaled:
        values[k] /= div
    entry = _ENTRIES[code]
    return (boot, seq, code, entry[0], entry[1], ACTIONS[flags & FLAG_ACTION], t,
            not flags & FLAG_CLOCK_UNSET, text % tuple(values))


# per code, what decoding needs: a plain dict (CODES is made for a board's RAM and costs
# two Python calls a lookup)
_ENTRIES = {code: entry for code, entry in CODES.items()}
_LAYOUTS = {}      # code << 32 | presence bits -> _layout's, made on first sight


def _layout(code, present):
    """For an event of this code with these presence bits, valid ones: how many fields
    it carries, (place among _read's numbers, 10**decimals) of each with decimals, and
    the values' JSON text: %.0s for the presence bits (which it leaves out), then the
    fields in order, null where absent, %d or %r where present."""
    scaled, parts = [], []
    count = 0
    for j, (fname, dec) in enumerate(_ENTRIES[code][2]):
        if present & (1 << j):
            count += 1
            if dec:
                scaled.append((count, 10 ** dec))
            parts.append('"%s":%s' % (fname, "%r" if dec else "%d"))
        else:
            parts.append('"%s":null' % fname)
    layout = _LAYOUTS[code << 32 | present] = (count, tuple(scaled), "%.0s{" + ",".join(parts) + "}")
    return layout


def _read(buf, signer):
    """The event's numbers: (code, flags, boot, seq, t, presence bits, [presence bits,
    each present field's zigzag]). Raises CodecError."""
    n = len(buf)
    if n < MIN_LEN:
        raise CodecError("payload of %d bytes is shorter than the smallest event (%d)" % (n, MIN_LEN))
    if buf[0] != VERSION:
        raise CodecError("unknown format version %d (this build reads %d%s)" % (buf[0], VERSION, (
            "; version 1 was withdrawn: its MAC did not cover the device id, update the agent"
            if buf[0] == 1 else "")))
    code = buf[1]
    entry = _ENTRIES.get(code)
    if entry is None:
        raise CodecError("unknown event code 0x%02x" % code)
    flags = buf[2]
    action = flags & FLAG_ACTION
    if action >= len(ACTIONS):
        raise CodecError("bad action bits %d in flags" % action)
    end = n - MAC_LEN
    boot = buf[3]                       # most often one byte (below 128)
    if boot < 0x80:
        i = 4
    else:
        boot, i = _id(buf, 3, end, "boot")
    seq, i = _id(buf, i, end, "seq")
    if i + 4 > end:
        raise CodecError("truncated time field")
    t = struct.unpack_from(">I", buf, i)[0]
    i += 4
    # The presence bits and the values: every varint up to the MAC in one pass, as long
    # as each is at most 8 bytes (so below 2**56), the bits name fields the code has and
    # the values are as many; anything else is read field by field (_values), which
    # takes what is valid all the same and says what is not.
    zs = []
    z = shift = 0
    for b in buf[i:end]:
        if b < 0x80:
            zs.append(z | b << shift)
            z = shift = 0
        else:
            z |= (b & 0x7F) << shift
            shift += 7
            if shift > 49:
                break
    layout = None
    if zs and not shift and not zs[0] >> len(entry[2]):
        layout = _LAYOUTS.get(code << 32 | zs[0]) or _layout(code, zs[0])
    if layout is None or len(zs) != layout[0] + 1:
        zs = _values(buf, i, end, entry)
    if signer is not None and not signer.check(bytes(buf[:end]), bytes(buf[end:])):
        raise CodecError("MAC does not match: wrong device key or altered payload")
    return code, flags, boot, seq, t, zs[0], zs


def _values(buf, i, end, entry):
    """The presence bits and the values at buf[i:end], read one by one: [presence bits,
    each present field's zigzag]. Raises the CodecError of the first that is wrong."""
    present, i = _varint(buf, i, end)
    name, _, fields = entry
    if present >> len(fields):
        raise CodecError("presence bits name fields that %s does not have" % name)
    zs = [present]
    for k in range(len(fields)):
        if present & (1 << k):
            z, i = _varint(buf, i, end)
            if z >= MAX_ZIGZAG:
                raise CodecError("%s does not fit 64 bits" % fields[k][0])
            zs.append(z)
    if i != end:
        raise CodecError("%d unexpected bytes before the MAC" % (end - i))
    return zs


def _varint(buf, i, end):
    try:
        return get_varint(buf, i, end, 10) or _truncated(i)
    except ValueError as e:             # longer than 10 bytes
        raise CodecError(str(e))


def _id(buf, i, end, name):
    got = _varint(buf, i, end)
    if got[0] >= MAX_ID:
        raise CodecError("%s %d out of range (below 2**32)" % (name, got[0]))
    return got


def values_of(code, mapping):
    """The value sequence for a code from a dict of field values (missing: None)."""
    return [mapping.get(f[0]) for f in CODES[code][2]]

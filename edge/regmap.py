# Register maps -> readings: decode a block of 16-bit words read from the bus. Pure; a
# map is data (edge/maps, docs/register-maps.md), checked by edge/mapcheck.py and cut
# into the reads a poll makes by edge/reads.py. The inverse
# (a reading as words, for the simulator) is tools/testbench/slave.py, so a board does
# not carry it.
#
# A table is a sequence of (field, address, type, scale[, word order]): value = raw *
# scale, with type u16, i16, u32, i32 or f32. 32-bit types span two registers in the
# device's byte order, named by where the big-endian bytes A B C D of the value land on
# the wire: ABCD (high word first), CDAB (word swap), BADC (byte swap), DCBA
# (little-endian). A field listed twice is the sum of its parts (the TUF-2000M's total is
# a LONG integer part plus a REAL4 fraction). An f32 register holding NaN or an infinity
# (many meters' "no value") decodes as None: unknown, as a field that could not be read,
# never a number that poisons a detector.
import math
import struct

from edge.clock import const

# the one list of word orders (config, tools, simulator); the first, high word first, is the default
ORDERS = ("ABCD", "BADC", "CDAB", "DCBA")
WORDS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2}
PACK32 = {"u32": ">I", "i32": ">i", "f32": ">f"}
_F32_DIGITS = const(7)         # float32 carries ~7 significant decimal digits; more is noise

_decimals_cache = {}


def decimals(scale):
    """Decimal places a scale implies: 0.01 -> 2, 0.001 -> 3, 1 or 10 -> 0."""
    d = _decimals_cache.get(scale)
    if d is None:
        d = 0
        if scale != int(scale):
            s = repr(float(scale))
            exp = 0
            if "e" in s:
                s, e = s.split("e")
                exp = int(e)
            if "." in s:
                frac = s.split(".")[1].rstrip("0")
                d = len(frac)
            d = max(0, d - exp)
        _decimals_cache[scale] = d
    return d


def span(table):
    """(first address, register count) of the block that covers every field."""
    # a loop rather than min() and max() of generator expressions: on a board each of
    # those is one more function in RAM
    first = last = None
    for e in table:
        addr = e[1]
        end = addr + WORDS[e[2]]
        if first is None or addr < first:
            first = addr
        if last is None or end > last:
            last = end
    return first, last - first




def _round_sig(x, digits):
    if x == 0:
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def check_order(order):
    if order not in ORDERS:
        raise ValueError("byte order %r is not one of %s" % (order, ", ".join(ORDERS)))


def _to_abcd(w0, w1, order):
    wire = (w0 >> 8, w0 & 0xFF, w1 >> 8, w1 & 0xFF)
    out = bytearray(4)
    for i in range(4):
        out[ord(order[i]) - 65] = wire[i]
    return out


def decode(table, words, order="ABCD", first=None):
    """Reading dict from words read starting at `first` (default: the table's lowest
    address); None for an f32 that is not a finite number. A row's own word order (a
    fifth column) wins over `order`."""
    check_order(order)
    if first is None:
        first = span(table)[0]
    out = {}
    for e in table:
        field, addr, typ, scale = e[0], e[1], e[2], e[3]
        i = addr - first
        w = words[i]
        if typ == "u16":
            raw = w
        elif typ == "i16":
            raw = w - 0x10000 if w & 0x8000 else w
        else:
            raw = struct.unpack(PACK32[typ], _to_abcd(w, words[i + 1], e[4] if len(e) > 4 else order))[0]
        if typ == "f32":
            v = _round_sig(raw * scale if scale != 1 else raw, _F32_DIGITS) if math.isfinite(raw) else None
        else:
            d = decimals(scale)
            v = int(raw * scale) if d == 0 else round(raw * scale, d)
        if field in out:    # the second part of a field listed twice
            prev = out[field]
            v = None if prev is None or v is None else _round_sig(prev + v, 15)
        out[field] = v
    return out


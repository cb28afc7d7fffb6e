# The slave side of the bus, for the simulator, fault injection and round-trip tests: a
# reading as register words (the inverse of edge.regmap.decode) and the reply frames a
# slave sends. Pure, like the master side; the agent never imports it, so a board does
# not pay RAM for it.
import math
import struct

from edge.modbus import seal
from edge.regmap import ORDERS, PACK32, WORDS, check_order, span


def _from_abcd(b, order):
    wire = bytearray(4)
    for i in range(4):
        wire[i] = b[ord(order[i]) - 65]
    return (wire[0] << 8) | wire[1], (wire[2] << 8) | wire[3]


def encode(table, reading, order=ORDERS[0]):
    """Words for the table's block; fields missing or None are left as 0. A row's own
    word order (a fifth column) wins over `order`. A field listed twice (an integer
    part and a fraction, edge.regmap) puts the whole units in its integer row and the
    rest in the next."""
    check_order(order)
    first, count = span(table)
    words = [0] * count
    rest = {}
    for n, e in enumerate(table):
        field, addr, typ, scale = e[0], e[1], e[2], e[3]
        o = e[4] if len(e) > 4 else order
        v = rest.get(field, reading.get(field))
        if v is None:
            continue
        if typ != "f32" and any(later[0] == field for later in table[n + 1:]):
            v = math.floor(v / scale) * scale
            rest[field] = reading[field] - v
        i = addr - first
        if typ == "f32":
            b = struct.pack(">f", v / scale if scale != 1 else v)
            words[i], words[i + 1] = _from_abcd(b, o)
            continue
        raw = int(round(v / scale))
        if typ == "u16":
            ok = 0 <= raw <= 0xFFFF
        elif typ == "i16":
            ok = -0x8000 <= raw <= 0x7FFF
        elif typ == "u32":
            ok = 0 <= raw <= 0xFFFFFFFF
        else:
            ok = -0x80000000 <= raw <= 0x7FFFFFFF
        if not ok:
            raise ValueError("%s = %r does not fit %s at scale %r" % (field, v, typ, scale))
        if WORDS[typ] == 1:
            words[i] = raw & 0xFFFF
        else:
            words[i], words[i + 1] = _from_abcd(struct.pack(PACK32[typ], raw), o)
    return words


def read_response(slave, fc, values):
    body = bytearray((slave, fc, 2 * len(values)))
    for v in values:
        body.append((v >> 8) & 0xFF)
        body.append(v & 0xFF)
    return seal(body)


def write_response(request):
    """The echo a slave sends for FC 06 or 16: the first six bytes of the request."""
    return seal(bytearray(request[:6]))


def exception_response(slave, fc, code):
    return seal(bytearray((slave, fc | 0x80, code)))

# CJ/T 188 (2004 and 2018) household meter framing, sans-I/O: build the read requests,
# check a reply against its request, decode the 901F metering data of a water (or gas)
# meter. Bytes in, values or a distinct error out; the bus transport (edge/cjt188_bus.py)
# does the waiting. The facts and their sources: docs/cjt188.md. What a board never
# sends (valve commands, the read-address scan) is edge/cjt188_tools.py. A board keeps
# every name here for good (docs/heap.md): module-private constants are const().
#
#   FE..FE | 68 | T | A0..A6 | C | L | DI(2) SER DATA | CS | 16
# the kinds of failure every framing shares (edge/bus.py), under this module's names
from edge.bus import BusError, CrcError, FrameError, Timeout  # noqa: F401  (re-exported)
from edge.clock import const

READ_DATA = 0x01        # control code of a request; a reply sets D7 (0x80), an error reply D6 too
DI_METER = 0x901F       # read metering data
COLD_WATER = 0x10       # meter type T; 0xAA: any type (with the wildcard address)
ANY_TYPE = 0xAA
WILDCARD = "AAAAAAAAAAAAAA"   # the address every meter answers (one meter on the bus)
ORDERS = (2004, 2018)   # DI byte order on the wire: 2004 high byte first (90 1F), 2018 low first (1F 90)
PREAMBLE = 4            # FE wake-up bytes sent before a request: the most any source sends
HEAD = 11               # 68 T A0..A6 C L: what tells a frame's length
_START = const(0x68)
_END = const(0x16)
_WAKE = const(0xFE)
_REPLY = const(0x80)
_ERROR = const(0x40)
_M3 = const(0x2C)       # unit code of m3; 0x29 L .. 0x2E m3 x 100 are 10**(code - 0x2C) m3
_METER_LEN = const(19)  # 901F data after DI and SER, water and gas meters (a heat meter's is 43)


# Any failed exchange; .kind as edge.bus.KINDS (1 no reply, 2 bad checksum, 3 error
# reply, 4 malformed). The classes of the kinds every framing shares are edge.bus's, not
# classes of their own: on a board a class is a couple of hundred bytes of heap for good
Cjt188Error = BusError
ChecksumError = CrcError


class ErrorReply(Cjt188Error):
    """The meter answered with D6 set: it heard us and said no. code: its status bytes,
    ST1 | ST2 << 8."""
    kind = 3

    def __init__(self, code):
        super().__init__("error reply, status %04x" % code)
        self.code = code



def address_bytes(address):
    """The 7 address bytes on the wire, A0 (the two least significant digits) first,
    from its 14 digits as printed, most significant first (maker A6 A5, then the meter
    number): "78330011223344" -> 44 33 22 11 00 33 78. The wildcard is all A."""
    raw = address.encode() if isinstance(address, str) else b""
    if len(raw) != 14 or not (raw.isdigit() or address == WILDCARD):
        raise ValueError("a CJ/T 188 address is 14 digits (or %s), not %r" % (WILDCARD, address))
    return bytes(reversed(bytes.fromhex(address)))


def bcd(data, at, n):
    """The number in n BCD bytes from data[at], low byte first. A nibble above 9 is no
    digit: FrameError, not a number."""
    v = 0
    for i in range(at + n - 1, at - 1, -1):
        b = data[i]
        if b & 0x0F > 9 or b >> 4 > 9:
            raise FrameError("not BCD: %02x at byte %d" % (b, i))
        v = v * 100 + (b >> 4) * 10 + (b & 0x0F)
    return v


def request(meter_type, address, control, di, data=b"", ser=0, order=2004, preamble=PREAMBLE):
    """A request frame: preamble FE bytes, then the frame with its checksum."""
    if not 0 <= meter_type <= 0xFF or not 0 <= ser <= 0xFF or order not in ORDERS:
        raise ValueError("meter type, SER 0..255, DI order one of 2004, 2018")
    di = bytes((di >> 8, di & 0xFF)) if order == 2004 else bytes((di & 0xFF, di >> 8))
    body = bytearray((_START, meter_type))
    body += address_bytes(address)
    body += bytes((control, len(data) + 3))
    body += di
    body.append(ser)
    body += data
    body.append(sum(body) & 0xFF)
    body.append(_END)
    return b"\xfe" * preamble + bytes(body)


def read_request(meter_type, address, order=2004, ser=0, preamble=PREAMBLE):
    """Read metering data: C 01, DI 901F."""
    return request(meter_type, address, READ_DATA, DI_METER, b"", ser, order, preamble)


def start(frame):
    """Where a frame starts (its 68) after any number of FE wake-up bytes."""
    i = 0
    while i < len(frame) and frame[i] == _WAKE:
        i += 1
    return i


def need(frame):
    """Bytes still missing before `frame` (as received so far) holds a whole frame: 0
    when it does (or is no frame at all: parse says what is wrong)."""
    i = start(frame)
    n = len(frame) - i
    if n and frame[i] != _START:
        return 0
    if n < HEAD:
        return HEAD - n
    return max(0, HEAD + frame[i + 10] + 2 - n)


def parse(frame):
    """(T, address bytes, C, DI SER DATA) of a whole frame, preamble skipped, checked:
    the start byte, its length, checksum (the sum mod 256 from 68 to the last data
    byte) and end byte. An empty frame is a Timeout."""
    if not frame:
        raise Timeout("no reply")
    i = start(frame)
    frame = memoryview(frame)[i:]
    n = len(frame)
    if n and frame[0] != _START:
        raise FrameError("no start byte 68: %02x" % frame[0])
    if n < HEAD + 2 or n < HEAD + frame[10] + 2:
        raise FrameError("short frame: %d bytes" % n)
    end = HEAD + frame[10]
    if n != end + 2:
        raise FrameError("frame of %d bytes, its length says %d" % (n, end + 2))
    if sum(frame[:end]) & 0xFF != frame[end]:
        raise ChecksumError("bad checksum in %d-byte frame" % n)
    if frame[end + 1] != _END:
        raise FrameError("no end byte 16: %02x" % frame[end + 1])
    return frame[1], bytes(frame[2:9]), frame[9], bytes(frame[HEAD:end])


def parse_reply(req, frame):
    """The DATA of a reply (after DI and SER), checked against the request that caused
    it: meter type (unless asked of any), address (unless the wildcard), control code,
    DI in either byte order, SER. An error reply raises ErrorReply."""
    t, addr, c, body = parse(req)
    rt, raddr, rc, rbody = parse(frame)
    if t != ANY_TYPE and rt != t:
        raise FrameError("reply from meter type %02x, asked %02x" % (rt, t))
    if addr != b"\xaa" * 7 and raddr != addr:
        raise FrameError("reply from another address")
    if rc == c | _REPLY | _ERROR and len(rbody) >= 3:
        raise ErrorReply(rbody[-2] | rbody[-1] << 8)     # SER ST1 ST2 (some meters put DI first)
    if rc != c | _REPLY:
        raise FrameError("reply control %02x, asked %02x" % (rc, c))
    if len(rbody) < 3:
        raise FrameError("reply of %d data bytes" % len(rbody))
    if not (rbody[0] == body[0] and rbody[1] == body[1] or rbody[0] == body[1] and rbody[1] == body[0]):
        raise FrameError("reply DI %02x%02x, asked %02x%02x" % (rbody[0], rbody[1], body[0], body[1]))
    if rbody[2] != body[2]:
        raise FrameError("reply SER %d, asked %d" % (rbody[2], body[2]))
    return rbody[3:]


def volume(data, at):
    """m3 of a 4-byte BCD volume with 2 decimals and its unit code after it; a unit that
    is no volume (0x29 L .. 0x2E m3 x 100) is a FrameError."""
    e = data[at + 4] - _M3
    if not -3 <= e <= 2:
        raise FrameError("unit code %02x is not a volume" % data[at + 4])
    return bcd(data, at, 4) / 10 ** (2 - e)     # a division: 55667700 / 100 is 556677.0 exactly


def meter_data(data):
    """A water or gas meter's 901F DATA: (total m3, settlement-date total m3, its clock
    as (year, month, day, hour, minute, second), ST1, ST2). ST1: D1 D0 the valve (0
    open, 1 closed, 3 abnormal), D2 battery low; ST2 is the maker's own."""
    if len(data) != _METER_LEN:
        raise FrameError("901F data of %d bytes, not a water meter's %d" % (len(data), _METER_LEN))
    clock = [bcd(data, 15, 2)]      # ss mm hh DD MM YY YY, low first: the year's hundreds last
    for i in range(14, 9, -1):
        clock.append(bcd(data, i, 1))
    return volume(data, 0), volume(data, 5), tuple(clock), data[17], data[18]


def check(bus, profile):
    """A device config's bus section for a CJ/T 188 meter (edge/config.py asks): its
    defaults filled in, or ValueError("bus.FIELD: ...") naming what is wrong. Here, not
    in the config's schema, so a Modbus board never interns these names."""
    if profile != "water_meter":
        raise ValueError("bus.protocol: cjt188 reads household water meters, not the %s profile" % profile)
    if "address" not in bus:
        raise ValueError("bus.address: required with bus.protocol cjt188: the meter's 14 digits, as on its"
                         " label (maker, then meter number)")
    try:
        address_bytes(bus["address"])
    except ValueError as e:
        raise ValueError("bus.address: %s" % e)
    bus.setdefault("meter_type", COLD_WATER)
    if bus.setdefault("di_order", ORDERS[0]) not in ORDERS:
        raise ValueError("bus.di_order: %r is not one of 2004 (DI high byte first), 2018" % bus["di_order"])

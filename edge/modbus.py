# Modbus RTU framing, sans-I/O: build requests, size and check responses, CRC-16/MODBUS.
# Bytes in, values or a distinct error out; the bus transport (edge/bus.py) does the waiting.
# The write requests, which a board never sends, are edge/modbus_write.py.
from array import array

# the failures' kinds, their classes and the inter-frame silence are every protocol's on
# the bus (edge/bus.py): here under this module's names
from edge.bus import KINDS, BusError, CrcError, FrameError, Timeout, silence_s  # noqa: F401  (re-exported)

# Function codes this stack speaks (Application Protocol V1.1b).
READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10

MAX_READ = 125          # 0x7D registers per read
EXCEPTION_LEN = 5       # slave, fc|0x80, code, CRC lo, CRC hi: the shortest valid reply
MAX_ADU = 256           # 1 address + 253 PDU + 2 CRC

# Exception codes 1..11 (07 is libmodbus' legacy negative acknowledge; 09 is none): one
# string, cut when an exception is raised, not a dict of ten strings kept for good (on a
# board about 400 bytes of heap less)
_EXCEPTION_NAMES = ("illegal function|illegal data address|illegal data value|server device failure|"
                    "acknowledge|server device busy|negative acknowledge|memory parity error||"
                    "gateway path unavailable|gateway target failed to respond")


def exception_name(code):
    """The Modbus name of an exception code, or "unknown"."""
    names = _EXCEPTION_NAMES.split("|")
    return names[code - 1] if 1 <= code <= len(names) and names[code - 1] else "unknown"


# Any failed exchange; .kind is the number written into device.comm_fault (edge.bus.KINDS).
# The one base of every protocol's errors, not a class of its own: on a board a class is
# a couple of hundred bytes of heap for good
ModbusError = BusError
ModbusTimeout = Timeout


class ModbusException(ModbusError):
    """The slave answered with an exception response: it heard us and said no."""
    kind = 3

    def __init__(self, code, function=0):
        name = exception_name(code)
        super().__init__("exception %d (%s) on function %d" % (code, name, function))
        self.code = code
        self.function = function
        self.name = name



def _nibble_table():
    # the CRC of each 4-bit value: 32 bytes as array('H'), where a table per byte is 512
    # (a list of ints would cost several times that on a board). Two lookups per byte
    # instead of one cost under a microsecond a frame on the unix port.
    t = array("H", bytes(32))
    for i in range(16):
        c = i
        for _ in range(4):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        t[i] = c
    return t


_TABLE = _nibble_table()
del _nibble_table   # run once at import: its bytecode need not stay in RAM


def crc16(data, crc=0xFFFF):
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); pass crc to continue a run."""
    t = _TABLE
    for b in data:
        crc ^= b
        crc = (crc >> 4) ^ t[crc & 0x0F]     # the low nibble, then the high one
        crc = (crc >> 4) ^ t[crc & 0x0F]
    return crc


def seal(body):
    """The frame: body with its CRC appended, low byte first unlike every other field."""
    if not isinstance(body, bytearray):
        body = bytearray(body)
    c = crc16(body)
    body.append(c & 0xFF)
    body.append(c >> 8)
    return bytes(body)


def _check_u16(name, v):
    if not 0 <= v <= 0xFFFF:
        raise ValueError("%s %d out of range 0..65535" % (name, v))


def _check(slave, addr, count, limit, broadcast):
    # slave 0 is broadcast (writes only), 248..255 are reserved
    if not (0 if broadcast else 1) <= slave <= 247:
        raise ValueError("slave id %d out of range" % slave)
    if not 1 <= count <= limit:
        raise ValueError("register count %d out of range 1..%d" % (count, limit))
    _check_u16("address", addr)
    if addr + count > 0x10000:
        raise ValueError("registers past address 65535")


def read_request(slave, fc, addr, count):
    """FC 03 (holding) or 04 (input), count 1..125."""
    if fc not in (READ_HOLDING, READ_INPUT):
        raise ValueError("read function must be 3 or 4, not %d" % fc)
    _check(slave, addr, count, MAX_READ, False)
    return seal(bytearray((slave, fc, addr >> 8, addr & 0xFF, count >> 8, count & 0xFF)))


def expected_length(request_or_fc, count=1):
    """Bytes of a normal reply: to a request frame, or to (fc, register count).

    An exception reply is shorter (EXCEPTION_LEN), so read that many first and the
    rest only if byte 1 has no 0x80 bit. A broadcast request expects 0 bytes.
    """
    if isinstance(request_or_fc, int):
        fc = request_or_fc
    else:
        if request_or_fc[0] == 0:
            return 0
        fc = request_or_fc[1]
        count = (request_or_fc[4] << 8) | request_or_fc[5]
    if fc in (READ_HOLDING, READ_INPUT):
        return 5 + 2 * count
    if fc in (WRITE_SINGLE, WRITE_MULTIPLE):
        return 8
    raise ValueError("unsupported function %d" % fc)


def parse_response(request, frame):
    """Check a reply against the request that caused it.

    Returns the register values (list of int) for FC 03/04, the echoed
    (address, value) for FC 06 and (address, count) for FC 16. Raises CrcError,
    ModbusException or FrameError; an empty frame is a ModbusTimeout.
    """
    n = len(frame)
    if n == 0:
        raise ModbusTimeout("no reply")
    if n < EXCEPTION_LEN:
        raise FrameError("short frame: %d bytes" % n)
    slave, fc = request[0], request[1]
    want = expected_length(request)
    # A reply cut off mid-frame is short, not noisy: the slave started and stopped.
    if n < want and not (n == EXCEPTION_LEN and frame[1] == fc | 0x80):
        raise FrameError("short frame: %d of %d bytes" % (n, want))
    # CRC first: a noisy frame can look like anything, so trust no field before it.
    if crc16(memoryview(frame)[:n - 2]) != frame[n - 2] | (frame[n - 1] << 8):
        raise CrcError("bad CRC in %d-byte frame" % n)
    if frame[0] != slave:
        raise FrameError("reply from slave %d, asked %d" % (frame[0], slave))
    if frame[1] == fc | 0x80:
        if n != EXCEPTION_LEN:
            raise FrameError("exception reply of %d bytes" % n)
        raise ModbusException(frame[2], fc)
    if frame[1] != fc:
        raise FrameError("reply function %d, asked %d" % (frame[1], fc))
    if n != want:
        raise FrameError("reply of %d bytes, expected %d" % (n, want))
    if fc in (READ_HOLDING, READ_INPUT):
        if frame[2] != n - 5:
            raise FrameError("byte count %d in a %d-byte frame" % (frame[2], n))
        words = []
        for i in range(3, n - 2, 2):   # a loop, not a comprehension: one function less in RAM
            words.append((frame[i] << 8) | frame[i + 1])
        return words
    # Writes echo address and value/count: anything else means the slave did not do it.
    if frame[2:6] != request[2:6]:
        raise FrameError("write echo differs from request")
    return ((frame[2] << 8) | frame[3], (frame[4] << 8) | frame[5])

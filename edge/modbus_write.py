# Modbus write requests (FC 06, FC 16), which a board never sends: the agent only reads.
# Builds on edge/modbus.py (the checks, the CRC) and, like it, does no I/O; the reply is
# checked by edge.modbus.parse_response, and edge.bus.Master.transact sends a request,
# once check_write has found it within the device map's writable ranges. Not sent to
# boards: there Master.transact cannot import check_write, and no write goes out.
from edge.modbus import WRITE_MULTIPLE, WRITE_SINGLE, _check, _check_u16, seal

MAX_WRITE = 123         # 0x7B registers per write multiple


def check_write(writable, request):
    """Raise ValueError unless every register the write request touches lies in one
    (slave, first, end) range of `writable` (edge.mapcheck.writable: the map's "writable",
    none by default). Registers only (a map has no coils); a broadcast never passes."""
    fc, addr = request[1], request[2] << 8 | request[3]
    end = addr + (request[4] << 8 | request[5] if fc == WRITE_MULTIPLE else 1)
    for slave, first, last in writable:
        if fc in (WRITE_SINGLE, WRITE_MULTIPLE) and request[0] == slave and first <= addr and end <= last:
            return
    raise ValueError("slave %d registers %d..%d: not writable in this device's map" % (request[0], addr, end - 1))


def write_single_request(slave, addr, value):
    """FC 06; slave 0 broadcasts (no reply)."""
    _check(slave, addr, 1, 1, True)
    _check_u16("value", value)
    return seal(bytearray((slave, WRITE_SINGLE, addr >> 8, addr & 0xFF, value >> 8, value & 0xFF)))


def write_multiple_request(slave, addr, values):
    """FC 16, 1..123 registers; slave 0 broadcasts (no reply)."""
    n = len(values)
    _check(slave, addr, n, MAX_WRITE, True)
    body = bytearray((slave, WRITE_MULTIPLE, addr >> 8, addr & 0xFF, 0, n, 2 * n))
    for v in values:
        _check_u16("value", v)
        body.append(v >> 8)
        body.append(v & 0xFF)
    return seal(body)

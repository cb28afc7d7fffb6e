# CJ/T 188 frames only the installer's tools send, never a board (tools/common/runtime.py
# NOT_ON_BOARDS; the agent only reads its meter): valve commands (write data, C 04, DI
# A017: 55 open, 99 close), only for a meter whose device config allows them
# (bus.valve_control, off by default), and the read-address request `edgectl scan`
# broadcasts. Sources: docs/cjt188.md.
from edge import cjt188

WRITE_DATA = 0x04
READ_ADDRESS = 0x03
DI_VALVE = 0xA017
DI_ADDRESS = 0x810A
OPEN = 0x55
CLOSE = 0x99


def valve_request(bus, open_valve, ser=0):
    """The frame that opens (True) or closes (False) the valve of the meter a device
    config's bus section names; ValueError unless its bus.valve_control is true."""
    if bus.get("protocol") != "cjt188" or not bus.get("valve_control"):
        raise ValueError("valve commands are off for this meter: set bus.valve_control true in its device config")
    return cjt188.request(bus.get("meter_type", cjt188.COLD_WATER), bus["address"], WRITE_DATA, DI_VALVE,
                          bytes((OPEN if open_valve else CLOSE,)), ser, bus.get("di_order", cjt188.ORDERS[0]))


def address_request(order=2004, preamble=cjt188.PREAMBLE):
    """Read address (C 03, DI 810A) of any meter type at the wildcard address: the one
    meter on a bus answers with its own (several at once garble each other)."""
    return cjt188.request(cjt188.ANY_TYPE, cjt188.WILDCARD, READ_ADDRESS, DI_ADDRESS, b"", 0, order, preamble)


def address_text(raw):
    """The 14 digits of 7 address bytes from the wire, most significant first;
    edge.cjt188.FrameError if one is not BCD."""
    if bytes(raw) == b"\xaa" * 7:
        return cjt188.WILDCARD
    return "%014d" % cjt188.bcd(raw, 0, 7)

# The serial line's framing, one home for the config schema (its defaults and choices),
# the three HALs and the tools' buses, so the agent and `edgectl read` open a line alike.
# Boot-time only on a board: a HAL imports it while opening the UART and edge.boot
# unloads it once the bus is open, so the running agent does not carry it.
#
# Modbus over Serial Line V1.02 §2.5.1: a character is 11 bits, 1 start, 8 data, 1
# parity and 1 stop; without parity a second stop bit keeps it at 11. Even parity is
# the spec's default.
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
BAUD = 9600             # what the profiles' sensors ship with (the spec's own default is 19200)
PROTOCOLS = ("modbus", "cjt188")    # the device config's bus.protocol; the first is the default
PARITIES = ("E", "O", "N")
PARITY = "E"
DATA_BITS = 8


def stop_bits(parity, stop=None):
    """`stop` when given, else the spec's: 2 without parity, 1 with."""
    return stop or (2 if parity == "N" else 1)


def char_bits(parity, stop=None):
    """Bits on the wire per character: start, data, parity, stop."""
    return 1 + DATA_BITS + (parity != "N") + stop_bits(parity, stop)


def baud(protocol=None):
    """The default baud rate of a bus protocol (PROTOCOLS; None: the default). CJ/T 188
    household meters: 2400 baud 8E1 (1200 the alternative), per the vendor manuals
    (docs/cjt188.md); the parity and stop bits are the Modbus defaults above."""
    return 2400 if protocol == PROTOCOLS[1] else BAUD


def settings(bus):
    """(baud, parity, stop) of a bus config, or part of one, with the defaults filled in."""
    parity = bus.get("parity") or PARITY
    return bus.get("baud") or baud(bus.get("protocol")), parity, stop_bits(parity, bus.get("stop"))

# The master side of one RS-485 bus: a deadline on every wait, retries, and a count of
# every kind of failure, whatever the protocol, and the Modbus RTU master (frames from
# edge.modbus). The CJ/T 188 master (edge/cjt188_bus.py) is the same with its own
# framing. Neither framing is imported here at load: a board loads only its bus's.
from edge.clock import const, sleep_ms, ticks_diff, ticks_ms

# kind -> the name counted by a master and shown to technicians; the number is written
# into device.comm_fault (edge/codes.py), the same for every protocol
KINDS = {1: "timeout", 2: "crc", 3: "exception", 4: "frame"}
_ANSWER = const(3)      # an answer (a Modbus exception, a CJ/T 188 error reply): raised at once, not retried
_CHUNK = const(256)     # bytes a drain reads at a time (a Modbus ADU's most; a CJ/T 188 frame is shorter)


def silence_s(baud, bits=11):
    """t3.5, the inter-frame silence; fixed at 1.75 ms above 19200 baud (Modbus over
    Serial Line V1.02 §2.5.1.1). CJ/T 188 names none: its master keeps the same."""
    if baud > 19200:
        return 0.00175
    return 3.5 * bits / baud


class BusError(Exception):
    """Any failed exchange, whichever protocol's framing raised it (edge.modbus,
    edge.cjt188). kind: KINDS' number; code: the device's own word for an answer (the
    Modbus exception code, the CJ/T 188 status), 0 otherwise. The kinds every framing
    shares are the classes below; an answer (kind 3) is each framing's own. One class
    a kind for both protocols: on a board each class is a couple of hundred bytes."""
    kind = 0
    code = 0


class Timeout(BusError):
    """No reply at all."""
    kind = 1


class CrcError(BusError):
    """The frame's check failed: a Modbus CRC, a CJ/T 188 checksum."""
    kind = 2


class FrameError(BusError):
    """Malformed, short, or the answer of another device or to another request."""
    kind = 4


class Master:
    """One master, one bus, one exchange at a time: the Modbus RTU master, and what
    every master does (a deadline on every wait, retries, counts by kind of failure):
    edge/cjt188_bus.py's is this one with CJ/T 188 framing (read and _receive of its
    own, transact given its parser). One class, not a base and two: on a board each
    class and function is heap for good (docs/heap.md).

    uart: a HAL UART (write, read(n, timeout_ms), flush_input). timeout_ms is how long
    a device may take to start answering; the reply's own transmit time is added.
    retries: further attempts after a timeout, checksum or frame error; an answer (a
    Modbus exception, a CJ/T 188 error reply) is raised at once. Errors raised are the
    framing's classes (edge.modbus, edge.cjt188), all BusError's.
    writable: (slave, first, end) register ranges a write may touch (edge.mapcheck.writable:
    those the device's map lists; none by default). Some registers reset a device to
    factory settings or change its address: a write elsewhere raises ValueError unsent
    (edge.modbus_write.check_write; a board has no such module, so no write leaves it).
    """

    def __init__(self, uart, baud, timeout_ms=300, retries=2, bits=11, writable=()):
        self.uart = uart
        self.writable = writable
        self.timeout_ms = timeout_ms
        self.retries = retries
        # whole milliseconds, rounded up: 4.01 ms at 9600 baud waits 5
        self._silence_ms = int(silence_s(baud, bits) * 1000) + 1
        self._char_us = bits * 1000000 // baud
        # a quiet line for this long means a bad reply has finished arriving
        self._quiet_ms = self._silence_ms + 20
        self._idle_since = ticks_ms()
        # each failed attempt is counted, also those a retry later recovered
        self.counts = {"ok": 0, "timeout": 0, "crc": 0, "exception": 0, "frame": 0}
        self.last_error = None

    def read(self, slave, fc, first, count, table=None, agent=None):
        """Register values (list of int) from FC 03 (holding) or 04 (input); with a
        table, one of the agent's reads (edge/reads.py), decoded into its fields."""
        from edge import modbus
        words = self.transact(modbus.read_request(slave, fc, first, count))
        if table is None:
            return words
        from edge import regmap
        return regmap.decode(table, words, "ABCD", first)

    read_registers = read

    def transact(self, request, parse_response=None):
        """Send a request frame, return the parsed reply: parse_response(request, reply),
        the framing's check of a reply against its request (default: Modbus, None for
        a broadcast). A board only reads; a Modbus write request comes from
        edge/modbus_write.py, and goes out only within the ranges `writable` lists."""
        if parse_response is None:
            from edge import modbus
            if request[1] in (0x05, 0x06, 0x0F, 0x10):     # write coil(s), register(s)
                from edge.modbus_write import check_write
                check_write(self.writable, request)
            if modbus.expected_length(request) == 0:       # a broadcast: nobody answers
                self._send(request)
                return None
            parse_response = modbus.parse_response
        err = None
        for _ in range(self.retries + 1):
            self._send(request)
            try:
                result = parse_response(request, self._receive(request))
            except BusError as e:
                self.counts[KINDS[e.kind]] += 1
                self.last_error = e
                if e.kind == _ANSWER:
                    self._idle_since = ticks_ms()
                    raise
                self._drain()
                err = e
                continue
            self._idle_since = ticks_ms()
            self.counts["ok"] += 1
            return result
        raise err

    def _send(self, request):
        # a silence since the last frame on the line, or the device glues frames
        idle = ticks_diff(ticks_ms(), self._idle_since)
        if 0 <= idle < self._silence_ms:
            sleep_ms(self._silence_ms - idle)
        # whatever is waiting is a late reply to someone else's request, or noise
        self.uart.flush_input()
        self.uart.write(request)
        self._idle_since = ticks_ms()

    def _receive(self, request):
        # read the exception length first: a short exception reply must not wait out
        # the deadline for bytes that will never come
        from edge import modbus
        want = modbus.expected_length(request)
        start = ticks_ms()
        budget = self.timeout_ms + (want * self._char_us) // 1000 + 1
        head = self.uart.read(modbus.EXCEPTION_LEN, budget)
        if len(head) < modbus.EXCEPTION_LEN or head[1] == request[1] | 0x80 or want == len(head):
            return head
        left = budget - ticks_diff(ticks_ms(), start)
        return head + self.uart.read(want - len(head), left if left > 0 else 0)

    def _drain(self):
        # after a bad reply, let the rest of it arrive and drop it, with a deadline:
        # a babbling device must not hold the master forever
        start = ticks_ms()
        while ticks_diff(ticks_ms(), start) < self.timeout_ms:
            if not self.uart.read(_CHUNK, self._quiet_ms):
                break
        self._idle_since = ticks_ms()

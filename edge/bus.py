# Modbus RTU master on one RS-485 bus: frames from edge.modbus, bytes through a HAL UART
# (edge/hal), a deadline on every wait, retries, and a count of every kind of failure.
from edge import modbus
from edge.clock import sleep_ms, ticks_diff, ticks_ms


class Master:
    """One master, one bus, one exchange at a time.

    uart: a HAL UART (write, read(n, timeout_ms), flush_input). timeout_ms is how long
    a slave may take to start answering; the reply's own transmit time is added.
    retries: further attempts after a timeout, CRC or frame error. A Modbus exception
    is an answer, so it is raised at once. Errors raised are edge.modbus classes.
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
        self._silence_ms = int(modbus.silence_s(baud, bits) * 1000) + 1
        self._char_us = bits * 1000000 // baud
        # a quiet line for this long means a bad reply has finished arriving
        self._quiet_ms = self._silence_ms + 20
        self._idle_since = ticks_ms()
        # each failed attempt is counted, also those a retry later recovered
        self.counts = {"ok": 0, "timeout": 0, "crc": 0, "exception": 0, "frame": 0}
        self.last_error = None

    def read_registers(self, slave, fc, addr, count):
        """Register values (list of int) from FC 03 (holding) or 04 (input)."""
        return self.transact(modbus.read_request(slave, fc, addr, count))

    def transact(self, request):
        """Send a request frame, return the parsed reply (None for a broadcast). A board
        only reads; a write request comes from edge/modbus_write.py, and goes out only
        within the ranges `writable` lists."""
        if request[1] in (0x05, 0x06, 0x0F, 0x10):     # write coil(s), register(s)
            from edge.modbus_write import check_write
            check_write(self.writable, request)
        want = modbus.expected_length(request)
        err = None
        for _ in range(self.retries + 1):
            self._send(request)
            if want == 0:
                return None
            try:
                result = modbus.parse_response(request, self._receive(request[1], want))
            except modbus.ModbusError as e:
                self.counts[modbus.KINDS[e.kind]] += 1
                self.last_error = e
                if isinstance(e, modbus.ModbusException):
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
        # t3.5 of silence since the last frame on the line, or the slave glues frames
        idle = ticks_diff(ticks_ms(), self._idle_since)
        if 0 <= idle < self._silence_ms:
            sleep_ms(self._silence_ms - idle)
        # whatever is waiting is a late reply to someone else's request, or noise
        self.uart.flush_input()
        self.uart.write(request)
        self._idle_since = ticks_ms()

    def _receive(self, fc, want):
        # read the exception length first: a short exception reply must not wait out
        # the deadline for bytes that will never come
        start = ticks_ms()
        budget = self.timeout_ms + (want * self._char_us) // 1000 + 1
        head = self.uart.read(modbus.EXCEPTION_LEN, budget)
        if len(head) < modbus.EXCEPTION_LEN or head[1] == fc | 0x80 or want == len(head):
            return head
        left = budget - ticks_diff(ticks_ms(), start)
        return head + self.uart.read(want - len(head), left if left > 0 else 0)

    def _drain(self):
        # after a bad reply, let the rest of it arrive and drop it, with a deadline:
        # a babbling slave must not hold the master forever
        start = ticks_ms()
        while ticks_diff(ticks_ms(), start) < self.timeout_ms:
            if not self.uart.read(modbus.MAX_ADU, self._quiet_ms):
                break
        self._idle_since = ticks_ms()

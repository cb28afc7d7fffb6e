# The CJ/T 188 master on one RS-485 / M-Bus line (edge.bus.Master's deadlines, retries,
# counts, and its quiet line of 3.5 characters before a request, as CJ/T 188 names none;
# frames from edge.cjt188), and a water meter's reading from its 901F reply:
# the total, a flow derived from it, and the status bits as device-health reports.
# The agent loads it instead of edge.bus.Master when its bus.protocol is cjt188, so a
# board runs one protocol's code only. Why each choice: docs/cjt188.md.
from edge import cjt188
from edge.bus import Master as Bus   # the Modbus master's read and _receive are overridden
from edge.clock import const, ticks_diff, ticks_ms
from edge.codes import REPORT

_REPLY_MAX = const(47)    # bytes of a 901F reply at most: 4 FE, 13 of frame, 22 of data, and slack
_VALVE = const(3)         # ST1 D1 D0: 0 open, 1 closed, 3 abnormal
_LOW = const(4)           # ST1 D2: battery low
_HEALTH = const(0x15)     # device.sensor_health: kind 6 battery low, 7 valve closed, 8 valve abnormal
_BATTERY = const(2)       # the battery field's index in telemetry.water_meter (edge/codes.py)


class Master(Bus):
    """A water meter at one address: edge.bus.Master's deadlines, retries and counts
    with CJ/T 188 framing. bus: the device config's bus section (address, meter_type,
    di_order, timeout_ms, retries, baud); bits: bits per character. Errors raised are
    edge.cjt188 classes (edge.bus.BusError's)."""

    def __init__(self, uart, bus, bits):
        super().__init__(uart, bus["baud"], bus["timeout_ms"], bus["retries"], bits)
        self.request = cjt188.read_request(bus["meter_type"], bus["address"], bus["di_order"])
        self.last = None      # (time, total) of the last poll with a total
        self.status = 0       # the ST1 bits already reported

    def read_meter(self):
        """(total m3, settlement-date total, clock, ST1, ST2): edge.cjt188.meter_data."""
        return cjt188.meter_data(self.transact(self.request, cjt188.parse_reply))

    def _receive(self, request):
        # FE wake-up bytes come first, as many as the meter likes: read until the
        # frame's own length is known, then the rest, within one deadline
        budget = self.timeout_ms + (_REPLY_MAX * self._char_us) // 1000 + 1
        start = ticks_ms()
        frame = b""
        while True:
            n = cjt188.need(frame)
            left = budget - ticks_diff(ticks_ms(), start)
            if not n or left <= 0:
                return frame
            got = self.uart.read(n, left)
            if not got:
                return frame
            frame += got

    def read(self, slave, fc, first, count, table, agent):
        """The agent's poll (its one block, edge/reads.py): total, and flow in m3/h from the
        change of total since the last poll; battery is not read (the meter tells only
        a low voltage, reported as device.sensor_health). A field that is not known is
        left out: the agent sends it as unknown without counting a fault."""
        total, _, _, st1, _ = self.read_meter()
        t = agent.now()
        r = {"total": total}
        last = self.last
        # the first poll after a boot has no flow; a total that went back is the
        # detector's glitch to judge, never a negative flow
        if last is not None and t > last[0] and total >= last[1]:
            r["flow"] = (total - last[1]) * 3600 / (t - last[0])
        self.last = (t, total)
        self._status(agent, t, st1)
        return r

    def _status(self, agent, t, st1):
        # a report when a fact begins (battery low, valve closed or abnormal), one an
        # episode: the bits already reported are remembered until they clear
        valve = st1 & _VALVE
        now = (st1 & _LOW) | valve
        if now & _LOW and not self.status & _LOW:
            agent.emit(t, _HEALTH, REPORT, (6, _BATTERY, 0))
        if valve and valve != self.status & _VALVE:
            agent.emit(t, _HEALTH, REPORT, (7 if valve == 1 else 8, 0, 0))   # D1 D0 10 is no state: abnormal
        self.status = now

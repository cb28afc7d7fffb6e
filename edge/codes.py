# Event codes: the one table of what an event can say, shared by the agent, the
# gateway, the tools and the tests. Append only: a code, once shipped, keeps its meaning.
#
# CODES[code] = (name, kind, fields); fields are (name, decimals) and fix the order in
# which values are written on the wire (see docs/wire-format.md). kind is "telemetry",
# "alarm" (raised and cleared) or "report" (a one-off fact, e.g. a maintenance session).

# One string a code: "code name kind field:decimals ...", rather than a dict of tuples:
# on a board every tuple is an object in RAM (the table as tuples took 13.7 KB of the
# agent's 96 KB heap), and an agent only ever looks up the few codes its profile emits,
# each parsed once. Short strings, not one text: no large block to find in a heap.
_TABLE = (
    # telemetry samples, one per profile
    "01 telemetry.elevator telemetry mode:0 dir:0 speed:2 floor:0 door:0 zone:0 occupied:0 fault:0",
    "02 telemetry.water_meter telemetry total:3 flow:3 battery:2",
    "03 telemetry.water_quality telemetry ph:2 do:2 nh3n:3 tp:3 temp:2 turb:1",
    "04 telemetry.noise telemetry laeq:1",
    "05 telemetry.structure telemetry tilt_x:4 tilt_y:4 crack:3 settle:2 vib:2",
    # device health, every profile
    "10 device.comm_loss alarm silent_s:0",
    # kind: 1 timeout, 2 bad CRC, 3 Modbus exception, 4 malformed frame; detail: exception code
    # (CJ/T 188, docs/cjt188.md: 2 a bad checksum, 3 an error reply, detail its ST1 + 256 * ST2)
    "11 device.comm_fault report kind:0 detail:0 count:0",
    "12 device.boot report version:0",
    "13 device.outbox_drop report telemetry:0 alarms:0",
    # since the last report (at most one a minute): values read as NaN or infinity and
    # values too large for their field (both sent as unknown), polls that raised an error
    "14 device.poll_fault report not_a_number:0 out_of_range:0 errors:0",
    # one maintenance report per episode, never an alarm. kind: 1 frozen register,
    # 2 stuck sensor, 3 calibration, 4 out of water, 5 knocked or moved; a CJ/T 188 water
    # meter's status bits (docs/cjt188.md): 6 battery low, 7 valve closed, 8 valve abnormal
    "15 device.sensor_health report kind:0 field:0 duration_s:0",
    # elevator
    "20 elevator.entrapment alarm floor:0 duration_s:0",
    "21 elevator.door_open_moving alarm floor:0 speed:2",
    "22 elevator.overspeed alarm speed:2 rated:2",
    "23 elevator.stop_outside_zone alarm floor:0 duration_s:0",
    "24 elevator.maintenance report start:0 end:0 duration_s:0 door_cycles:0 floors_served:0",
    # an e-bike in the car (the camera module's detection): one report a stop, when the car
    # leaves or the camera has seen none for a while; held_s from the first to the last
    # poll it was seen at that stop
    "25 elevator.ebike report floor:0 held_s:0",
    # water meter
    "30 water.inactivity alarm idle_s:0 usual_s:0",
    "31 water.continuous_flow alarm duration_s:0 flow:3",
    "32 water.leak alarm duration_s:0 flow:3",
    # kind: 1 total went backwards and stayed (a reset or replaced meter). (2, a total
    # frozen while flow is reported, is now device.sensor_health kind 1: no alarm)
    "33 water.meter_glitch alarm kind:0 total:3",
    # water quality: param 0 ph, 1 do, 2 nh3n, 3 tp (the profile's field order); the
    # median over the confirmation window, the class limit it broke, the class (1..5)
    "40 wq.pollution alarm param:0 value:3 limit:3 class:0",
    # noise: the night's level and how long it has been over the limit
    "50 noise.night_construction alarm laeq:1 limit:0 duration_s:0",
    # structure: field 0 tilt, 1 settlement; movement over the last 24 h (deg or mm)
    "60 structure.tilt_trend alarm field:0 moved:4 limit:4",
    "61 structure.vibration alarm vib:2 limit:2 count:0",
)


class _Codes:
    """CODES[code] -> (name, kind, ((field, decimals), ...)); `in`, iteration (in code
    order), items() and get() as for a dict."""

    def __init__(self):
        self._seen = {}

    def _line(self, code):
        key = "%02x " % code
        for line in _TABLE:
            if line.startswith(key):
                return line
        return None

    def get(self, code, default=None):
        entry = self._seen.get(code)
        if entry is None:
            line = self._line(code)
            if line is None:
                return default
            words = line.split()
            fields = []
            for f in words[3:]:
                name, dec = f.split(":")
                fields.append((name, int(dec)))
            entry = self._seen[code] = (words[1], words[2], tuple(fields))
        return entry

    def __getitem__(self, code):
        entry = self.get(code)
        if entry is None:
            raise KeyError(code)
        return entry

    def __contains__(self, code):
        return isinstance(code, int) and self.get(code) is not None

    def __iter__(self):
        for line in _TABLE:
            yield int(line[:2], 16)

    def __len__(self):
        n = 0
        for _ in self:
            n += 1
        return n

    def items(self):
        for code in self:
            yield code, self[code]


CODES = _Codes()

# A field carries value * 10**decimals as an integer below FIELD_MAX in magnitude: exact
# in a double, so in every JSON reader downstream. The agent sends a value beyond it as
# unknown (and counts it in device.poll_fault) rather than an event nobody can read.
FIELD_MAX = 1 << 53

# action, written in the low two bits of the flags byte
REPORT = 0
RAISE = 1
CLEAR = 2
ACTIONS = ("report", "raise", "clear")


def code_of(name):
    """The code of an event type, for the tools and the tests. A scan rather than a second
    table (the gateway's is edge.codec.BY_NAME); board modules name a code by its number
    with the name in a comment, as the profiles do, so its name is in RAM once."""
    for code in CODES:
        if CODES[code][0] == name:
            return code
    raise KeyError(name)

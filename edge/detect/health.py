# Device-health episodes a detector reports, never raises: one device.sensor_health
# report per episode (edge/codes.py 0x15). Here: a register that stopped changing.
from edge.codes import REPORT

FROZEN = 1      # device.sensor_health kind: frozen register


class Frozen:
    """A value (a number, or a list of fields) that has not changed for frozen_s: no
    live sensor repeats itself that long. step() is 0 while it changes, 1 while frozen,
    2 on the poll the episode is found (and reported, with how long it has lasted).
    None is "not judged now" (e.g. a parked lift repeats itself): the watch restarts."""

    def __init__(self, field, frozen_s):
        self.field = field          # the profile field's index; 255: the whole reading
        self.frozen_s = frozen_s
        self.last = None
        self.since = None
        self.on = False

    def step(self, t, v, out):
        if v is None or v != self.last or self.since is None:
            self.last = v
            self.since = t
            self.on = False
            return 0
        if t - self.since < self.frozen_s:
            return 0
        if self.on:
            return 1
        self.on = True
        out.append((t, 0x15, REPORT, (FROZEN, self.field, int(t - self.since))))   # device.sensor_health
        return 2

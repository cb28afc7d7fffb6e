# Detectors every device has, whatever its profile: losing contact with the sensor.
# Why the numbers are what they are: docs/detectors-water.md, "Comm loss".
from edge.alarm import Alarm

# name: default,  # why (one line; a comment, so no RAM on a board)
PARAMS = {
    "comm_loss_s": 240,  # certain silence; dev artifacts end by 180 s
}


class CommLoss:
    """Raised when the silence that began at the first failed poll is certain to last
    comm_loss_s: a poll that failed at t cannot be answered before t + period, so the
    silence is already at least t - first_bad + period. On a structure sensor polled
    every 600 s one failed poll is enough; on an elevator polled every second it takes
    comm_loss_s of failures. Cleared by the next answered poll. The period is learned
    as the shortest interval between polls (missing lines only make intervals longer)."""

    def __init__(self, params):
        self.comm_loss_s = params["comm_loss_s"]
        self.alarm = Alarm(0x10)   # edge.codes: device.comm_loss
        self.first_bad = None
        self.prev_t = None
        self.period = None

    def step(self, t, r, out):
        if self.prev_t is not None and t > self.prev_t:
            dt = t - self.prev_t
            if self.period is None or dt < self.period:
                self.period = dt
        self.prev_t = t
        if r is not None:
            if self.first_bad is not None:
                self.alarm.update(t, False, out, (int(t - self.first_bad),))
            self.first_bad = None
            return
        if self.first_bad is None:
            self.first_bad = t
        silent = t - self.first_bad + (self.period or 0)
        if silent >= self.comm_loss_s:
            self.alarm.update(t, True, out, (int(silent),))

# Detectors every device has, whatever its profile: losing contact with the sensor.
from edge.alarm import Alarm
from edge.codes import code_of

# name: (default, why)
PARAMS = {
    "comm_loss_s": (300, "silence of five minutes is an outage; shorter gaps are bus noise to ride through"),
}


class CommLoss:
    """Raised when no poll has succeeded for comm_loss_s; cleared by the next good read."""

    def __init__(self, params):
        self.after = params["comm_loss_s"]
        self.alarm = Alarm(code_of("device.comm_loss"))
        self.last_good = None
        self.first_bad = None

    def step(self, t, r, out):
        if r is not None:
            self.last_good = t
            self.first_bad = None
            self.alarm.update(t, False, out, (0,))
            return
        if self.first_bad is None:
            self.first_bad = t
        silent = t - self.first_bad
        if silent >= self.after:
            self.alarm.update(t, True, out, (int(silent),))

# Alarm lifecycle: raise once, clear once. Detectors decide *whether* a condition
# holds; this decides *when that becomes news*, so no detector can flap or repeat.
from edge.codes import RAISE, CLEAR


class Alarm:
    """One alarm type of one device. update() appends (t, code, action, values) to out
    on a state change only. hold_s keeps a raised alarm up until its condition has been
    false for that long, so a flickering condition clears once, not many times."""

    def __init__(self, code, hold_s=0):
        self.code = code
        self.hold_s = hold_s
        self.active = False
        self.since = None        # when the current raise happened
        self.false_since = None  # when the condition last went false while active

    def update(self, t, on, out, values=()):
        if on:
            self.false_since = None
            if not self.active:
                self.active = True
                self.since = t
                out.append((t, self.code, RAISE, values))
                return True
            return False
        if self.active:
            if self.false_since is None:
                self.false_since = t
            if t - self.false_since >= self.hold_s:
                self.active = False
                self.since = None
                self.false_since = None
                out.append((t, self.code, CLEAR, values))
                return True
        return False

    def clear(self, t, out, values=()):
        """Clear now, whatever the hold (e.g. a maintenance session takes over)."""
        if self.active:
            self.active = False
            self.since = None
            self.false_since = None
            out.append((t, self.code, CLEAR, values))

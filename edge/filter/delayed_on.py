# Debounce in time: true only once the input has held true for s seconds (filter
# "delayed_on"; contract, registry and chains: edge/filters.py).


class Delayed:
    """State shared by delayed_on and delayed_off: the delay, since when the input has
    been in the pending state, and the current output."""

    def __init__(self, s):
        self.s = s
        self.reset()

    def reset(self):
        self.since = None
        self.out = None


class DelayedOn(Delayed):
    """delayed_on(s): True only once the input has been true for s seconds without a
    known false in between; false passes at once. None neither interrupts nor completes
    a pending change: it returns the current state (None before any known input)."""

    def step(self, t, v):
        if v is None:
            return self.out
        if v:
            if self.since is None:
                self.since = t
            if t - self.since >= self.s:
                self.out = True
            elif self.out is None:
                self.out = False
        else:
            self.since = None
            self.out = False
        return self.out

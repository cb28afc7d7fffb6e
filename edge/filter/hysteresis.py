# Two thresholds, so a value hovering at one does not toggle (filter "hysteresis";
# contract, registry and chains: edge/filters.py).


class Hysteresis:
    """hysteresis(lo, hi): True above hi, False below lo, unchanged in between, so a
    value hovering at one threshold does not toggle. None holds the state."""

    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi
        self.out = None

    def reset(self):
        self.out = None

    def step(self, t, v):
        if v is None:
            return self.out
        if v > self.hi:
            self.out = True
        elif v < self.lo:
            self.out = False
        elif self.out is None:
            self.out = False
        return self.out

# A value outside [lo, hi] is physically impossible: it becomes unknown (filter "range";
# contract, registry and chains: edge/filters.py).


class Range:
    """range(lo, hi): a value outside [lo, hi] is physically impossible -> None
    (ESPHome: clamp with ignore_out_of_range). None passes as None."""

    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    def reset(self):
        pass   # no state

    def step(self, t, v):
        if v is None or v < self.lo or v > self.hi:
            return None
        return v

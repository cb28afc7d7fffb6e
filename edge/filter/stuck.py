# A value frozen for too long comes from a dead sensor: it becomes unknown (filter
# "stuck"; contract, registry and chains: edge/filters.py).


class Stuck:
    """stuck(s, eps): a value that has not moved by more than eps for s seconds comes
    from a frozen register or a dead sensor -> None until it moves again. Use only where
    a constant value is implausible for that long. None passes and keeps the timer."""

    def __init__(self, s, eps=0):
        self.s = s
        self.eps = eps
        self.reset()

    def reset(self):
        self.ref = None
        self.since = None

    def step(self, t, v):
        if v is None:
            return None
        if self.ref is None or abs(v - self.ref) > self.eps:
            self.ref = v
            self.since = t
            return v
        return None if t - self.since >= self.s else v

# A jump faster than the physics allows becomes unknown (filter "rate_limit"; contract,
# registry and chains: edge/filters.py).


class RateLimit:
    """rate_limit(max_per_s): a value further from the last accepted one than
    max_per_s * elapsed seconds cannot be physical -> None. The reference stays the last
    accepted value, so the allowance grows with time and a real step is accepted once it
    is plausible. None -> None (does not move the reference)."""

    def __init__(self, max_per_s):
        self.rate = max_per_s
        self.reset()

    def reset(self):
        self.last = None
        self.last_t = None

    def step(self, t, v):
        if v is None:
            return None
        if self.last is not None and abs(v - self.last) > self.rate * (t - self.last_t):
            return None
        self.last = v
        self.last_t = t
        return v

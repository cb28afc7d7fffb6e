# Filters between a decoded reading and a detector: reject impossible values, smooth,
# debounce and rate-limit, so that one glitch, one bounce or one failed read never
# becomes an alarm. Names follow ESPHome's sensor filters where ESPHome has one.
#
# Every filter is an object with step(t, v) -> v': t is unix seconds, v a number or a
# bool, or None for "unknown" (the read failed or an earlier filter rejected it). A
# failed read is unknown, never zero. How each filter treats None is in its docstring;
# docs/filters.md has the whole table. A detector declares its chains as data,
#     FILTERS = {"speed": (("range", 0, "speed_max"), ("median", 3))}
# and build_chain() turns each spec into objects; a string argument names a parameter.
# MicroPython subset: no typing, no dataclasses; runs the same on CPython.

SKIP = "skip"  # returned by throttle/heartbeat: nothing to send this time (not unknown)


class Range:
    """range(lo, hi): a value outside [lo, hi] is physically impossible -> None
    (ESPHome: clamp with ignore_out_of_range). None passes as None."""
    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    def step(self, t, v):
        if v is None or v < self.lo or v > self.hi:
            return None
        return v


class FilterOut:
    """filter_out(x): the value x is a known "no data" marker (e.g. floor 0) -> None."""
    __slots__ = ("x",)

    def __init__(self, x):
        self.x = x

    def step(self, t, v):
        return None if v == self.x else v


class Clamp:
    """clamp(lo, hi): limit to [lo, hi] (a reading that may overshoot its scale). None -> None."""
    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    def step(self, t, v):
        if v is None:
            return None
        return self.lo if v < self.lo else self.hi if v > self.hi else v


class RateLimit:
    """rate_limit(max_per_s): a value further from the last accepted one than
    max_per_s * elapsed seconds cannot be physical -> None. The reference stays the last
    accepted value, so the allowance grows with time and a real step is accepted once it
    is plausible. None -> None (does not move the reference)."""
    __slots__ = ("rate", "last", "last_t")

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


class Median:
    """median(n): median of the last n known values (fewer at the start). A None input
    gives None and does not enter the window."""
    __slots__ = ("n", "win")

    def __init__(self, n):
        self.n = n
        self.win = []

    def reset(self):
        self.win = []

    def step(self, t, v):
        if v is None:
            return None
        win = self.win
        win.append(v)
        if len(win) > self.n:
            win.pop(0)
        s = sorted(win)
        k = len(s)
        return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2


class _Delayed:
    """State shared by delayed_on and delayed_off: the delay, since when the input has
    been in the pending state, and the current output."""
    __slots__ = ("s", "since", "out")

    def __init__(self, s):
        self.s = s
        self.reset()

    def reset(self):
        self.since = None
        self.out = None


class DelayedOn(_Delayed):
    """delayed_on(s): True only once the input has been true for s seconds without a
    known false in between; false passes at once. None neither interrupts nor completes
    a pending change: it returns the current state (None before any known input)."""
    __slots__ = ()

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


class DelayedOff(_Delayed):
    """delayed_off(s): False only once the input has been false for s seconds; true
    passes at once. None holds, as for delayed_on."""
    __slots__ = ()

    def step(self, t, v):
        if v is None:
            return self.out
        if v:
            self.since = None
            self.out = True
        else:
            if self.since is None:
                self.since = t
            if t - self.since >= self.s or self.out is None:
                self.out = False
        return self.out


class Hysteresis:
    """hysteresis(lo, hi): True above hi, False below lo, unchanged in between, so a
    value hovering at one threshold does not toggle. None holds the state."""
    __slots__ = ("lo", "hi", "out")

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


class NofM:
    """n_of_m(n, m): True when at least n of the last m known inputs were true
    (n_of_m(2, 2): two polls in a row). None is skipped: it neither counts nor breaks
    a run, and returns the current state."""
    __slots__ = ("n", "m", "bits", "out")

    def __init__(self, n, m):
        if not 0 < n <= m <= 30:
            raise ValueError("n_of_m: need 0 < n <= m <= 30, got %r, %r" % (n, m))
        self.n = n
        self.m = m
        self.reset()

    def reset(self):
        self.bits = 0      # the last m inputs, newest in bit 0
        self.out = None

    def step(self, t, v):
        if v is None:
            return self.out
        self.bits = ((self.bits << 1) | (1 if v else 0)) & ((1 << self.m) - 1)
        b = self.bits
        k = 0
        while b:
            k += b & 1
            b >>= 1
        self.out = k >= self.n
        return self.out


class Stuck:
    """stuck(s, eps): a value that has not moved by more than eps for s seconds comes
    from a frozen register or a dead sensor -> None until it moves again. Use only where
    a constant value is implausible for that long. None passes and keeps the timer."""
    __slots__ = ("s", "eps", "ref", "since")

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


class Timeout:
    """timeout(s): None is replaced by the last known value while it is younger than s
    seconds, then stays None (stale): a short dropout is ridden through, a long one
    becomes unknown. A known value passes."""
    __slots__ = ("s", "last", "last_t")

    def __init__(self, s):
        self.s = s
        self.reset()

    def reset(self):
        self.last = None
        self.last_t = None

    def step(self, t, v):
        if v is not None:
            self.last = v
            self.last_t = t
            return v
        if self.last_t is not None and t - self.last_t < self.s:
            return self.last
        return None


class Throttle:
    """throttle(s): pass at most one value every s seconds, SKIP the others. None is a
    value here (an unknown worth reporting) and is throttled like any other."""
    __slots__ = ("s", "last_t")

    def __init__(self, s):
        self.s = s
        self.last_t = None

    def reset(self):
        self.last_t = None

    def step(self, t, v):
        if self.last_t is not None and t - self.last_t < self.s:
            return SKIP
        self.last_t = t
        return v


class Heartbeat:
    """heartbeat(s, delta): pass a value when it moved more than delta from the last one
    passed, when it became or stopped being None, or when s seconds have passed without
    one; SKIP otherwise. Telemetry: changes at once, silence never longer than s."""
    __slots__ = ("s", "delta", "last", "last_t")

    def __init__(self, s, delta=0):
        self.s = s
        self.delta = delta
        self.reset()

    def reset(self):
        self.last = None
        self.last_t = None

    def step(self, t, v):
        last = self.last
        if self.last_t is not None and t - self.last_t < self.s:
            if (v is None) == (last is None) and (v is None or abs(v - last) <= self.delta):
                return SKIP
        self.last = v
        self.last_t = t
        return v


REGISTRY = {
    "range": Range,
    "filter_out": FilterOut,
    "clamp": Clamp,
    "rate_limit": RateLimit,
    "median": Median,
    "delayed_on": DelayedOn,
    "delayed_off": DelayedOff,
    "hysteresis": Hysteresis,
    "n_of_m": NofM,
    "stuck": Stuck,
    "timeout": Timeout,
    "throttle": Throttle,
    "heartbeat": Heartbeat,
}


class Chain:
    """Filters applied in order; a SKIP ends the chain (nothing to pass on)."""
    __slots__ = ("filters",)

    def __init__(self, filters):
        self.filters = filters

    def step(self, t, v):
        for f in self.filters:
            v = f.step(t, v)
            if v is SKIP:
                return SKIP
        return v

    def reset(self):
        for f in self.filters:
            if hasattr(f, "reset"):
                f.reset()


def build_chain(spec, params=None):
    """(("range", 0, "speed_max"), ("median", 3)) -> Chain. A string argument is the name
    of a parameter in params; unknown filters and parameters are errors that name them."""
    filters = []
    for item in spec:
        name = item[0]
        cls = REGISTRY.get(name)
        if cls is None:
            raise ValueError("filter %r: unknown; known: %s" % (name, ", ".join(sorted(REGISTRY))))
        args = []
        for a in item[1:]:
            if isinstance(a, str):
                if params is None or a not in params:
                    raise ValueError("filter %s: parameter %r is not set" % (name, a))
                a = params[a]
            args.append(a)
        filters.append(cls(*args))
    return Chain(filters)

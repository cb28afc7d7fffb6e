# Filters between a decoded reading and a detector: reject impossible values, smooth,
# debounce and rate-limit, so that one glitch, one bounce or one failed read never
# becomes an alarm. Names follow ESPHome's sensor filters where ESPHome has one.
#
# Every filter is an object with step(t, v) -> v' and reset(): t is unix seconds, v a
# number or a bool, or None for "unknown" (the read failed or an earlier filter rejected
# it). A failed read is unknown, never zero. How each filter treats None is in its docstring;
# docs/filters.md has the whole table. A detector declares its chains as data,
#     FILTERS = {"speed": (("range", 0, "speed_max"), ("median", 3))}
# and build_chain() turns each spec into objects; a string argument names a parameter.
# MicroPython subset: no typing, no dataclasses; runs the same on CPython.

SKIP = "skip"  # returned by throttle/heartbeat: nothing to send this time (not unknown)


# The filters by name: edge/filter/<name>.py holds the class, named in CamelCase
# (n_of_m: NOfM). A module is imported the first time a chain names it, so a board
# pays RAM only for the filters its detectors use.
REGISTRY = ("range", "filter_out", "clamp", "rate_limit", "median", "delayed_on", "delayed_off",
            "hysteresis", "n_of_m", "stuck", "timeout", "throttle", "heartbeat")


def load(name):
    """The class of the filter called name."""
    mod = __import__("edge.filter." + name, None, None, ("x",))
    cls = ""
    for w in name.split("_"):   # a loop, not a comprehension: one function less in RAM
        cls += w[0].upper() + w[1:]
    return getattr(mod, cls)


class Chain:
    """Filters applied in order; a SKIP ends the chain (nothing to pass on)."""

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
            f.reset()


def build_chain(spec, params=None):
    """(("range", 0, "speed_max"), ("median", 3)) -> a Chain, or the filter itself when
    there is one (the same steps for a few hundred bytes less on a board). A string
    argument is the name of a parameter in params; unknown filters and parameters are
    errors that name them."""
    filters = []
    for item in spec:
        name = item[0]
        if name not in REGISTRY:
            raise ValueError("filter %r: unknown; known: %s" % (name, ", ".join(sorted(REGISTRY))))
        cls = load(name)
        args = []
        for a in item[1:]:
            if isinstance(a, str):
                if params is None or a not in params:
                    raise ValueError("filter %s: parameter %r is not set" % (name, a))
                a = params[a]
            args.append(a)
        filters.append(cls(*args))
    return filters[0] if len(filters) == 1 else Chain(tuple(filters))   # a tuple: one allocation

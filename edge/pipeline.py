# One reading's path on the device after the bus: detectors, alarm lifecycle and the
# telemetry policy. Bytes and transport are elsewhere; time comes in with each reading,
# so a replayed trace and a live bus drive exactly the same code.
from edge.codes import REPORT


def load_module(name):
    """Import edge.<dotted name> and return the leaf module, or None if it does not exist.
    Importing lazily means a board only pays RAM for the profile it runs."""
    try:
        mod = __import__(name)
    except ImportError as e:
        # only "this module does not exist" is an answer; a broken module must be loud.
        # Both runtimes quote the full name of the missing module: 'edge.detect.water'
        # is not found in "no module named 'edge.detect.water_helpers'".
        if "'%s'" % name not in str(e):
            raise
        return None
    for part in name.split(".")[1:]:
        mod = getattr(mod, part)
    return mod


def merge_params(tables, overrides):
    """Defaults from PARAMS tables ({name: default}), overridden by the device config. An
    unknown override is an error that names it."""
    params = {}
    for table in tables:
        params.update(table)
    for k in overrides or {}:
        if k not in params:
            raise ValueError("params.%s: unknown parameter; known: %s" % (k, ", ".join(sorted(params))))
        v = overrides[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ValueError("params.%s: must be a number, got %r" % (k, v))
        params[k] = v
    return params


class Telemetry:
    """Send a sample when a watched field changes beyond its deadband, at most every
    min_s, and at least every heartbeat_s: a tenth of the bytes of sending every poll."""

    def __init__(self, code, fields, watch, min_s, heartbeat_s):
        self.code = code
        self.fields = fields        # field names in wire order
        self.watch = watch          # {field: deadband}
        self.min_s = min_s
        self.heartbeat_s = heartbeat_s
        self.last_t = None
        self.last = None

    def step(self, t, r, out):
        if r is None:
            return
        if self.last_t is not None:
            age = t - self.last_t
            if age < self.min_s:
                return
            if age < self.heartbeat_s and not self._changed(r):
                return
        self.last_t = t
        self.last = r
        values = []
        for f in self.fields:   # loops, not comprehensions: on a board each is a function in RAM
            values.append(r.get(f))
        out.append((t, self.code, REPORT, values))

    def _changed(self, r):
        last = self.last
        for f in self.watch:
            a = r.get(f)
            b = last.get(f)
            if a is None or b is None:
                if a is not b:
                    return True
            elif abs(a - b) > self.watch[f]:
                return True
        return False


class Pipeline:
    """step(t, reading) -> list of (t, code, action, values). reading is the decoded dict
    (a field that failed to read is None) or None when the whole poll failed."""

    def __init__(self, profile, site=None, overrides=None, store=None, telemetry=True):
        from edge.detect import common
        from edge.codes import CODES
        site = site or {}
        det = load_module("edge.detect." + profile)
        tables = [common.PARAMS]
        if det is not None:
            tables.append(det.PARAMS)
        params = merge_params(tables, overrides)
        self.comm = common.CommLoss(params)
        self.detector = det.Detector(site, params, store) if det is not None else None
        self.telemetry = None
        prof = load_module("edge.profiles." + profile) if telemetry else None
        if prof is not None:
            code = prof.TELEMETRY
            fields = []
            for f in CODES[code][2]:
                fields.append(f[0])
            self.telemetry = Telemetry(code, fields, prof.TELEMETRY_WATCH,
                                       prof.TELEMETRY_MIN_S, prof.TELEMETRY_HEARTBEAT_S)

    def step(self, t, r):
        out = []
        self.comm.step(t, r, out)
        if self.detector is not None:
            self.detector.step(t, r, out)
        if self.telemetry is not None:
            self.telemetry.step(t, r, out)
        return out

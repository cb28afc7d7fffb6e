# River water quality: wq.pollution when a pollutant goes beyond the station's
# GB 3838-2002 class limit and stays there, and one device.sensor_health report per
# maintenance episode. The probes lie in known ways, none of them pollution: a
# calibration visit puts pH in buffer solutions and DO in a zero-oxygen one, a probe
# out of the water reads turbidity ~0 and nonsense elsewhere, a bubble is a one-poll
# spike, an analyser's flush a short excursion, an ageing electrode a slow drift, a
# stopped register or sensor a flat line. Why each rule and number: docs/water-quality.md.
from edge.alarm import Alarm
from edge.codes import REPORT

# name: default,  # why (one line); the full reasoning is in docs/water-quality.md.
# Reasons are comments so they cost no RAM on a board.
PARAMS = {
    "confirm_s": 900,  # beyond the limit this long: flushes and bubbles are shorter
    "bridge_s": 300,  # a dip back within the limit shorter than this does not restart
    "clear_s": 1800,  # within the limit this long before the alarm clears
    "base_s": 10800,  # baseline time constant: drift is slower, a spill faster
    "base_min_s": 3600,  # baseline trusted after an hour of readings
    "dev_pct": 15,  # a spill moves NH3-N, TP or DO 15 % of the limit
    "dev_ph": 0.3,  # pH units a spill moves the river off its baseline
    "step_ph": 0.5,  # pH units in one poll: a probe put in a buffer
    "step_do": 2.0,  # mg/L in one poll: a probe put in zero-oxygen solution
    "do_zero": 0.5,  # mg/L; a zero-oxygen solution reads below this
    "dry_turb": 0.5,  # NTU; a turbidity probe in air reads about 0
    "dry_ref": 2.0,  # NTU; only a river at least this turbid can look dry
    "flat_s": 1800,  # a live pH or DO probe never reads the same for 30 min
    "visit_s": 1800,  # health episodes this close together are one visit
}

# GB 3838-2002 Table 1, basic items for rivers (docs/water-quality.md gives the source
# and the lake/reservoir TP column). Per class: pH min, pH max, DO min, NH3-N max,
# TP max (mg/L; TP as P). A station's config may override any of them.
LIMITS = {
    "I": (6.0, 9.0, 7.5, 0.15, 0.02),
    "II": (6.0, 9.0, 6.0, 0.5, 0.1),
    "III": (6.0, 9.0, 5.0, 1.0, 0.2),
    "IV": (6.0, 9.0, 3.0, 1.5, 0.3),
    "V": (6.0, 9.0, 2.0, 2.0, 0.4),
}
CLASSES = ("I", "II", "III", "IV", "V")
# the config's names for the LIMITS columns (corpus headers and device configs)
KEYS = ("ph_min", "ph_max", "do_min", "nh3n_max", "tp_max")
# pH calibration buffers over 5-35 C: NIST 4.01 (4.00-4.03), 6.86 (6.84-6.95), 9.18
# (9.10-9.39) and the technical 4.00, 7.00 (6.98-7.04), 10.01 (9.93-10.25)
BUFFERS = ((3.95, 4.12), (6.82, 7.06), (9.08, 9.42), (9.90, 10.28))
# judged fields, in telemetry.water_quality order (their device.sensor_health index)
FIELDS = ("ph", "do", "nh3n", "tp")
TURB = 5        # turbidity's index in telemetry.water_quality
# device.sensor_health kinds
FROZEN, STUCK, CALIBRATION, DRY = 1, 2, 3, 4


def _median(win):
    s = sorted(win)
    return s[len(s) // 2]


class _Field:
    """One judged reading: its last five accepted values (their median rides over a
    bubble), a slow baseline, and the episodes in which it does not count."""

    def __init__(self, idx):
        self.idx = idx
        self.win = []
        self.last = None        # the last value read, and since when it has not changed
        self.same_t = None
        self.read_t = None      # (polls that failed do not make a reading flat)
        self.flat = False       # a flat episode reported
        self.cal = None         # in a buffer or zero solution since
        self.cal_x = None       # its first reading, whether later ones differed, reported
        self.cal_var = False
        self.cal_rep = False
        self.base = None        # baseline and the seconds of readings behind it
        self.base_n = 0
        self.dt = 0

    def read(self, t, x):
        if x != self.last or t - self.read_t > 600:
            self.last = x
            self.same_t = t
            self.flat = False
        self.read_t = t

    def reset(self):
        self.win = []


class _Check:
    """One limit of one field (pH has two): beyond since when, last seen beyond."""

    def __init__(self, field, sign, col):
        self.field = field
        self.sign = sign        # +1: a maximum, -1: a minimum
        self.col = col          # column of LIMITS
        self.since = None
        self.last = None


class Detector:
    def __init__(self, site, params, store):
        # the parameters as attributes (self.confirm_s): see edge/detect/water_meter.py
        for name in PARAMS:
            setattr(self, name, params[name])
        cls = site.get("class") or "III"
        if not isinstance(cls, str):
            cls = CLASSES[cls - 1]
        self.cls = CLASSES.index(cls) + 1
        own = (site.get("limits") or {}).get(cls) or {}
        self.limits = []
        for i in range(len(KEYS)):
            v = own.get(KEYS[i])
            self.limits.append(LIMITS[cls][i] if v is None else v)
        self.fields = []
        for i in range(len(FIELDS)):
            self.fields.append(_Field(i))
        ph, do, nh3n, tp = self.fields
        self.checks = (_Check(ph, -1, 0), _Check(ph, 1, 1), _Check(do, -1, 2),
                       _Check(nh3n, 1, 3), _Check(tp, 1, 4))
        self.alarm = Alarm(0x40, self.clear_s)    # wq.pollution
        self.prev_t = None
        self.turb_base = None
        self.dry_t = None           # out of the water since
        self.live_t = None          # the pH or DO probe's reading last changed
        self.frozen = False         # every register stopped: reported
        self.visit_t = None         # the last calibration reading, for one report a visit

    def step(self, t, r, out):
        if r is None:
            return      # a failed poll is unknown: nothing is judged on it
        dt = 0 if self.prev_t is None else min(t - self.prev_t, 600)
        self.prev_t = t
        self._dry(t, r.get("turb"), out)
        for f in self.fields:
            x = r.get(FIELDS[f.idx])
            if x is not None:
                f.read(t, x)
        self._frozen(t, out)
        for f in self.fields:
            x = r.get(FIELDS[f.idx])
            if x is not None and not self.frozen:
                self._field(t, f, x, dt, out)
        self._judge(t, out)

    def _frozen(self, t, out):
        """The registers stopped updating: a live pH or DO probe changes its reading
        every few minutes, so when neither has for flat_s the device's registers are
        frozen (one report, field 255) and nothing is judged on them."""
        live = None
        for f in self.fields[:2]:
            if f.same_t is not None and (live is None or f.same_t > live):
                live = f.same_t
        self.live_t = live
        if live is None or t - live < self.flat_s:
            self.frozen = False
            return
        if not self.frozen:
            self.frozen = True
            self._report(t, FROZEN, 255, live, out)
            for f in self.fields:
                f.flat = True
                f.cal_rep = True
                f.reset()

    def _report(self, t, kind, field, since, out):
        out.append((t, 0x15, REPORT, (kind, field, int(t - since))))   # device.sensor_health

    def _dry(self, t, turb, out):
        """Out of the water: turbidity drops to about 0 from a river that was turbid.
        Nothing is judged until the probe is back in the water."""
        if turb is None:
            return
        if self.dry_t is None:
            if turb <= self.dry_turb and self.turb_base is not None and self.turb_base >= self.dry_ref:
                self.dry_t = t
                self._report(t, DRY, TURB, t, out)
                for f in self.fields:
                    f.reset()
                return
            # a median-like baseline: one step a poll towards the reading, so a spike moves it little
            b = self.turb_base
            self.turb_base = turb if b is None else b + (0.02 * b + 0.01) * (1 if turb > b else -1)
        elif turb > 2 * self.dry_turb:
            self.dry_t = None
            for f in self.fields:
                f.reset()       # the probes settle from here

    def _field(self, t, f, x, dt, out):
        if f.idx < 2 and t - f.same_t >= self.flat_s:
            # a probe stuck on one value while the other lives (an analyser holds its
            # result, and near its detection limit repeats it: not judged stuck)
            other = self.fields[1 - f.idx].same_t
            if not f.flat and other is not None and t - other < 600:
                f.flat = True
                self._report(t, STUCK, f.idx, f.same_t, out)
                f.cal_rep = True    # a stuck value that came as a step is no calibration
            f.reset()
            return
        if self._calibrating(t, f, x, out) or self.dry_t is not None:
            return
        f.win.append(x)
        if len(f.win) > 5:
            f.win.pop(0)
        f.dt = dt

    def _calibrating(self, t, f, x, out):
        """A step (from the median: a bubble is no step) into a pH buffer or a zero-oxygen
        solution: a calibration visit. Its readings do not count until the probe is back
        in the river. Reported once it has lasted two minutes with readings that move (a
        sensor stuck on one value is reported as stuck instead), once a visit; within a
        visit a reading in a buffer or zero solution is one without a step."""
        m = _median(f.win) if f.win else None
        if f.idx == 0:
            at = False
            for lo, hi in BUFFERS:
                if lo <= x <= hi:
                    at = True
            jump = m is not None and abs(x - m) >= self.step_ph
        elif f.idx == 1:
            at = x < self.do_zero
            jump = m is not None and m - x >= self.step_do
        else:
            return False
        if f.cal is None:
            # within a visit, the next buffer needs no step: the probe comes from a rinse
            if not (at and (jump or (self.visit_t is not None and t - self.visit_t <= self.visit_s))):
                return False
            f.cal = t
            f.cal_x = x
            f.cal_var = False
            f.cal_rep = False
            return True
        if not at:
            if f.cal_rep:
                f.reset()       # a real visit: the probe settles from here
            f.cal = None
            return False
        f.cal_var = f.cal_var or x != f.cal_x
        if not f.cal_rep and f.cal_var and t - f.cal >= 120:
            f.cal_rep = True
            if self.visit_t is None or t - self.visit_t > self.visit_s:
                self._report(t, CALIBRATION, f.idx, f.cal, out)
        if f.cal_rep:
            self.visit_t = t
        return True

    def _judge(self, t, out):
        """Beyond the limit on the median, away from the baseline by what a spill moves,
        for confirm_s (dips shorter than bridge_s do not restart it)."""
        lim = self.limits
        fire = None
        beyond = False
        for c in self.checks:
            f = c.field
            if len(f.win) < 3 or f.cal is not None or self.dry_t is not None or self.frozen:
                if c.since is not None and t - c.last > self.bridge_s:
                    c.since = None      # not judged for longer than a dip: start again
                continue
            m = _median(f.win)
            over = (m - lim[c.col]) * c.sign > 0
            beyond = beyond or over
            if over and self._moved(c, f, m):
                if c.since is None or t - c.last > self.bridge_s:
                    c.since = t
                c.last = t
                # the readings must have lived meanwhile: a probe's own, or for an
                # analyser that holds its result, the probes' (a stuck value never confirms)
                live = f.same_t if f.idx < 2 else self.live_t
                if (t - c.since >= self.confirm_s and (live is None or live > c.since)
                        and fire is None):
                    fire = (c.col, m)
            elif c.since is not None and t - c.last > self.bridge_s:
                c.since = None
        for f in self.fields:
            self._baseline(f)
        if fire is not None:
            col, m = fire
            self.alarm.update(t, True, out, ((0, 0, 1, 2, 3)[col], m, lim[col], self.cls))
        elif not beyond:
            self.alarm.update(t, False, out, (0, 0, 0, self.cls))

    def _baseline(self, f):
        """The baseline follows the river, a drift included, but not a spill: it stands
        still while a check of its field is pending or raised."""
        if len(f.win) < 3 or f.cal is not None or self.dry_t is not None or self.frozen:
            return
        for c in self.checks:
            if c.field is f and c.since is not None:
                return
        m = _median(f.win)
        if f.base is None:
            f.base = m
        else:
            f.base += (m - f.base) * min(f.dt / self.base_s, 1)
        f.base_n += f.dt
        f.dt = 0

    def _moved(self, c, f, m):
        """Away from the slow baseline by what a spill moves: a drift never is."""
        if f.base is None or f.base_n < self.base_min_s:
            return True
        if f.idx == 0:
            need = self.dev_ph
        else:
            need = self.limits[c.col] * self.dev_pct / 100
        return (m - f.base) * c.sign >= need

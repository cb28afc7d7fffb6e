# Protected-building structure: tilt or settlement moving steadily, and repeated
# vibration above the configured limit. A building breathes with the sun (tilt, cracks
# and level gauges swing every day), so movement is measured on the mean of the last
# 24 hours, where a daily swing of any size cancels, against the same mean a day
# before, and must hold for hours. A sensor that is knocked moves in one step and then
# stays flat: that is a device-health report, and the detector re-bases on the new
# level instead of calling it movement. One poll's spike in any field is ridden through
# (a median of three); one vibration poll over the limit is a passing truck, two within
# twenty minutes are repeated vibration.
# Why each rule and number: docs/structure.md.
from array import array

from edge.alarm import Alarm
from edge.codes import REPORT
from edge.detect.health import Frozen

# name: default,  # why (one line); the full reasoning per entry is in docs/structure.md.
# Reasons are comments so they cost no RAM on a board.
PARAMS = {
    "vib_window_s": 1200,  # second hit within two polls: raised inside 1800 s
    "vib_quiet_s": 3600,  # an hour without a hit ends the episode
    "trend_pct": 25,  # % of the limit the daily mean moved in a day; dev still: 12
    "trend_hours": 3,  # hourly checks in a row: the daily mean is smooth already
    "day_hours": 18,  # hour pairs of 24 known a day apart: outages leave holes
    "knock_pct": 20,  # % of the limit in one poll; thermal moves 1 % a poll
    "knock_confirm_s": 3600,  # a knocked sensor stays at its new level
    "frozen_s": 21600,  # six hours without any change in four fields
}

# the alarm values of the dev sites, when the installer gave none (docs/structure.md)
LIMITS = {"vib_limit_mm_s": 5.0, "tilt_limit_deg": 0.05, "settle_limit_mm": 3.0}
# channels judged for movement: tilt_x and tilt_y (one tilt vector), settle;
# their index in telemetry.structure's fields (edge/codes.py), for device.sensor_health
FIELDS = ("tilt_x", "tilt_y", "settle")
FIELD_INDEX = (0, 1, 3)
STATIC = ("tilt_x", "tilt_y", "crack", "settle")
NAN = float("nan")


class _Channel:
    """One field: the last three raw values (their median is the level), the levels of
    the last three polls, the offset knocks added, and the sum of corrected levels
    within the current hour."""

    def __init__(self):
        self.raw = [None, None, None]
        self.levels = [None, None, None]
        self.offset = 0.0
        self.knock_t = None
        self.knock_ref = 0.0
        self.sum = 0.0
        self.n = 0
        self.hours = array("f", [NAN] * 48)      # hourly means of the last two days

    def feed(self, v, knock):
        """Add this poll's corrected level to the hour; returns a knock's step or None.
        A knock is a change of `knock` within three polls (30 minutes): the sun and a
        real trend move the level a few % of that, so a step that takes two polls is
        caught as well as one that takes one."""
        raw = self.raw
        raw[0] = raw[1]
        raw[1] = raw[2]
        raw[2] = v
        if None in raw:
            return None
        a, b, c = raw
        m = max(min(a, b), min(max(a, b), c))    # median of three
        lv = self.levels
        ref = lv[0] if lv[0] is not None else lv[1] if lv[1] is not None else lv[2]
        step = None
        if ref is not None and abs(m - ref) >= knock:
            step = m - ref
            self.offset += step
            lv[0] = lv[1] = m
        else:
            lv[0] = lv[1]
            lv[1] = lv[2]
        lv[2] = m
        self.sum += m - self.offset
        self.n += 1
        return step


class Detector:
    def __init__(self, site, params, store):
        for name in PARAMS:
            setattr(self, name, params[name])
        self.vib_limit = site.get("vib_limit_mm_s") or LIMITS["vib_limit_mm_s"]
        tilt = site.get("tilt_limit_deg") or LIMITS["tilt_limit_deg"]
        settle = site.get("settle_limit_mm") or LIMITS["settle_limit_mm"]
        self.limits = (tilt, tilt, settle)
        self.vib = Alarm(0x61, self.vib_quiet_s)     # structure.vibration
        self.trend = Alarm(0x60, 86400)              # structure.tilt_trend: a still day clears it
        self.hit_t = None
        self.hits = 0
        self.ch = (_Channel(), _Channel(), _Channel())
        self.hour = None
        self.stamps = [None] * 48    # which hour each slot of the channels' hours holds
        self.runs = [0, 0]           # hours in a row moving: tilt, settlement
        self.moved = [0.0, 0.0]
        self.frozen = Frozen(255, self.frozen_s)    # field 255: the whole reading

    def step(self, t, r, out):
        if r is None:
            return       # a failed poll is unknown: nothing is judged on it
        self._vibration(t, r.get("vib"), out)
        # every static field unchanged for frozen_s: the logger repeats a stale reading,
        # which judges nothing (vibration is left out: a quiet building repeats 0.0x)
        now = []
        for f in STATIC:
            now.append(r.get(f))
        if now != [None] * 4 and self.frozen.step(t, now, out):
            return
        hour = int(t) // 3600
        if self.hour is not None and hour != self.hour:
            self._hourly(t, out)
        self.hour = hour
        for i in range(3):
            c = self.ch[i]
            knock = self.limits[i] * self.knock_pct / 100
            step = c.feed(r.get(FIELDS[i]), knock)
            if step is not None and c.knock_t is None:
                c.knock_t = t
                c.knock_ref = c.offset - step
            if c.knock_t is not None and t - c.knock_t >= self.knock_confirm_s:
                # still at the new level an hour later: knocked or moved, report it
                if abs(c.offset - c.knock_ref) >= knock:
                    out.append((t, 0x15, REPORT, (5, FIELD_INDEX[i], int(t - c.knock_t))))   # device.sensor_health
                c.knock_t = None

    def _vibration(self, t, v, out):
        """Two polls over the limit within vib_window_s raise; while raised, every hit
        keeps it up, and it clears after vib_quiet_s without one."""
        if v is None:
            return
        if v < self.vib_limit:
            self.vib.update(t, False, out, (v, self.vib_limit, self.hits))
            return
        repeated = self.vib.active or (self.hit_t is not None and t - self.hit_t <= self.vib_window_s)
        self.hits = self.hits + 1 if repeated else 1
        self.hit_t = t
        if repeated:
            self.vib.update(t, True, out, (v, self.vib_limit, self.hits))

    def _hourly(self, t, out):
        """The hour that just ended: each of the last 24 hourly means against the same
        hour a day before, averaged. That is the change of the daily mean, in which a
        daily swing of any size cancels, and a missing hour drops out of both days."""
        hour = self.hour
        stamps = self.stamps
        stamps[hour % 48] = hour
        for c in self.ch:
            c.hours[hour % 48] = c.sum / c.n if c.n else NAN
            c.sum = 0.0
            c.n = 0
        d = [0.0, 0.0, 0.0]
        n = [0, 0, 0]
        for h in range(hour - 23, hour + 1):
            if stamps[h % 48] != h or stamps[(h - 24) % 48] != h - 24:
                continue
            for i in range(3):
                hours = self.ch[i].hours
                v = hours[h % 48] - hours[(h - 24) % 48]
                if v == v:      # not NaN: both hours known
                    d[i] += v
                    n[i] += 1
        for i in range(3):
            d[i] = d[i] / n[i] if n[i] >= self.day_hours else NAN
        self._judge(0, (d[0] * d[0] + d[1] * d[1]) ** 0.5)
        self._judge(1, abs(d[2]))
        on = False
        for k in range(2):
            if self.runs[k] >= self.trend_hours:
                on = True
                self.trend.update(t, True, out, (k, self.moved[k], self.limits[2 * k]))
        if not on:
            self.trend.update(t, False, out, (0, 0, 0))

    def _judge(self, k, moved):
        """One hour of group k (0 tilt, 1 settlement): moving, still, or unknown."""
        if moved != moved:
            return      # NaN: no daily mean now or a day ago (the first days, an outage)
        self.moved[k] = moved
        if moved * 100 >= self.limits[2 * k] * self.trend_pct:
            self.runs[k] += 1
        else:
            self.runs[k] = 0

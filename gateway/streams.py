# Named upload streams: which event kinds travel together, in which order of priority,
# in what batches, at what rate, and what may be dropped when the disk quota is hit.
# One table (DEFAULT_STREAMS), read by the store (a row's rank), the uplink (one lane
# per stream) and the quota (which rows may go). docs/delivery.md explains the policy.
#
#   --stream telemetry:rate=500,batch_max=1000     (override fields of a named stream)
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

KINDS = ("alarm", "report", "telemetry")          # edge.codes kinds
KEEP = "keep"                                     # never dropped: over quota, keep accepting and warn
DROP_OLDEST = "drop_oldest"                       # over quota, the oldest pending rows go first
FULL_POLICIES = (KEEP, DROP_OLDEST)


class StreamError(ValueError):
    """A stream option that makes no sense; the message names the stream and field."""


@dataclass(frozen=True)
class Stream:
    name: str
    kinds: frozenset[str]
    batch_max: int = 500                # events per upload request
    batch_age: float = 1.0              # seconds the oldest event may wait for a fuller batch; 0: at once
    rate: float = 0.0                   # upload at most this many events/s (a backlog drains at it); 0: no limit
    on_full: str = KEEP                 # what the disk quota may do to this stream's pending rows
    retry_max: float = 30.0             # longest wait between attempts while the platform fails

    def check(self) -> "Stream":
        where = "stream %r" % self.name
        if not self.name.isidentifier():
            raise StreamError("%s: the name must be a word (letters, digits, _)" % where)
        unknown = self.kinds - set(KINDS)
        if not self.kinds or unknown:
            raise StreamError("%s: kinds must be some of %s, got %s"
                              % (where, ", ".join(KINDS), ", ".join(sorted(self.kinds)) or "none"))
        if not 1 <= self.batch_max <= 5000:
            raise StreamError("%s: batch_max must be 1 to 5000 (the platform takes 5000 per request)" % where)
        if self.batch_age < 0 or self.rate < 0 or self.retry_max <= 0:
            raise StreamError("%s: batch_age and rate must be >= 0, retry_max > 0" % where)
        if self.on_full not in FULL_POLICIES:
            raise StreamError("%s: on_full must be one of %s" % (where, ", ".join(FULL_POLICIES)))
        return self


# Order is priority: a lower index is uploaded first and is the last to lose anything.
# Alarms and reports go at once in their own lane, so a telemetry backlog never delays
# them; while the platform fails their lane retries at least every 5 s, so the first
# alarm after an outage is not held by a 30 s backoff. Telemetry drains at a bounded
# rate after an outage so the platform (and the alarm lane beside it) is not flooded.
DEFAULT_STREAMS: tuple[Stream, ...] = (
    Stream("alarms", frozenset({"alarm", "report"}), batch_max=100, batch_age=0.0, rate=0.0,
           on_full=KEEP, retry_max=5.0),
    Stream("telemetry", frozenset({"telemetry"}), batch_max=500, batch_age=1.0, rate=2000.0,
           on_full=DROP_OLDEST, retry_max=30.0),
)


def check_streams(streams: Sequence[Stream]) -> tuple[Stream, ...]:
    """Every kind in exactly one stream, names unique. Raises StreamError."""
    seen: dict[str, str] = {}
    names = set()
    for s in streams:
        s.check()
        if s.name in names:
            raise StreamError("stream %r is defined twice" % s.name)
        names.add(s.name)
        for k in s.kinds:
            if k in seen:
                raise StreamError("kind %r is in both stream %r and stream %r" % (k, seen[k], s.name))
            seen[k] = s.name
    missing = set(KINDS) - set(seen)
    if missing:
        raise StreamError("no stream takes kind %s" % ", ".join(sorted(missing)))
    return tuple(streams)


def rank_of_kind(streams: Sequence[Stream]) -> dict[str, int]:
    """kind -> the stream's rank (its index): what the store writes in each row."""
    return {k: rank for rank, s in enumerate(streams) for k in s.kinds}


KEYS = ("batch_max", "batch_age", "rate", "retry_max", "on_full", "kinds")


def _value(opt: str, key: str, value: str) -> object:
    if key not in KEYS:
        raise StreamError("--stream %r: unknown key %r; keys: %s" % (opt, key, ", ".join(KEYS)))
    if key == "kinds":
        return frozenset(value.split("+"))
    if key == "on_full":
        return value
    try:
        return int(value) if key == "batch_max" else float(value)
    except ValueError:
        raise StreamError("--stream %r: %s=%r is not a number" % (opt, key, value)) from None


def apply_options(streams: Sequence[Stream], options: Iterable[str]) -> tuple[Stream, ...]:
    """Apply '--stream NAME:key=value,...' options to the named streams.

    Keys: batch_max, batch_age, rate, retry_max, on_full, kinds (joined with '+').
    """
    by_name = {s.name: s for s in streams}
    for opt in options:
        name, sep, rest = opt.partition(":")
        if name not in by_name:
            raise StreamError("--stream %r: unknown stream %r; streams: %s"
                              % (opt, name, ", ".join(by_name)))
        if not sep or not rest:
            raise StreamError("--stream %r: expected NAME:key=value[,key=value...]" % opt)
        changes: dict[str, object] = {}
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq:
                raise StreamError("--stream %r: %r has no '=value'" % (opt, key))
            changes[key] = _value(opt, key, value)
        by_name[name] = replace(by_name[name], **changes)  # type: ignore[arg-type]
    return check_streams([by_name[s.name] for s in streams])

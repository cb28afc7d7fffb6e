# Uplink: drain the store's upload queues to the district platform over HTTPS.
#
# POST {platform}/v1/events  {"gateway": id, "events": [...]}  (docs/platform-api.yaml)
#
# Each request is signed with the gateway's credentials (gateway/auth.py), and each event
# carries the device's signed bytes, so the platform checks both who uploads and what
# each device said. Plain http:// only to this machine, or with --insecure-plain-http:
# anyone in the path of a plain link could answer 400 (events rejected for good) or 200
# (events marked uploaded, never stored).
#
# One lane per stream (gateway/streams.py), each with its own request loop on a shared
# connection pool: an alarm never waits behind a telemetry batch on the wire, and a
# telemetry backlog after an outage drains at the stream's rate limit while alarms go
# at once. A lane sends when its batch is full (batch_max) or its oldest event is
# batch_age old (0 for alarms: at once); it reads each pending row from the store once,
# when its batch is due, and sends the stored JSON as it is. Every event has a stable id
# (<device>:<boot>:<seq>) and the platform stores by id, so a retry after a lost
# response cannot create a duplicate; the Idempotency-Key header (a hash of the gateway
# id and the body) lets a platform or a proxy recognise a repeated request as a whole.
from __future__ import annotations

import asyncio
import binascii
import gzip
import json
import logging
import random
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gateway.auth import Credentials, idempotency_key, sign
from gateway.http import HttpClient, HttpError, check_transport
from gateway.metrics import Metrics
from gateway.sqlite import DbThread
from gateway.store import CommitResult, PendingEvent, Store
from gateway.streams import DEFAULT_STREAMS, Stream

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
REVIEW_PATH = "/v1/review"       # the platform's devices worst first, by dispatch's outcomes
USER_AGENT = "citynet-edge-gateway/0.1"
# 408 and 429 say "later", not "never".
RETRY_STATUSES = {408, 429}
# These say the gateway is misconfigured (wrong URL, credentials), not that the events
# are bad: rejecting would throw away every event in turn, so retry and log it loudly.
# So does any 3xx: redirects are not followed (a POST must not turn into a GET).
CONFIG_STATUSES = {401, 403, 404, 405} | set(range(300, 400))


class ReviewError(Exception):
    """The platform's review could not be had; the message says why."""


@dataclass
class UplinkConfig:
    platform_url: str
    gateway_id: str
    streams: tuple[Stream, ...] = DEFAULT_STREAMS
    timeout: float = 10.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    gzip_min: int = 8192             # compress bodies from this size on
    credentials: Credentials | None = None   # None: unsigned, which a platform refuses (401, retried)
    ca_file: str | None = None       # https://: the CA the platform's certificate must chain to; None: the system's
    insecure_plain_http: bool = False   # allow http:// to a host other than loopback


class Outcome(Enum):
    DONE = "done"                    # uploaded, or rejected for good
    RETRY = "retry"                  # platform unreachable or failing: back off


# a JSON string literal, escaped as json.dumps does
_string = json.encoder.encode_basestring_ascii
# One event as the platform API carries it: the values go in as the store holds them
# (JSON already), never decoded and encoded again. The id is <device>:<boot>:<seq>, so
# its literal is the device's without the closing quote, then ":%d:%d".
EVENT_JSON = ('{"id":%s:%d:%d","device":%s,"boot":%d,"seq":%d,"type":%s,"action":%s,"t":%d,"clock_set":%s,'
              '"values":%s,"payload":"%s"}')


class _Literals(dict[str, str]):
    """str -> its JSON literal, each worked out once: a batch names few devices, types
    and actions, many times each."""

    def __missing__(self, s: str) -> str:
        lit = self[s] = _string(s)
        return lit


def upload_body(gateway_id: str, batch: list[PendingEvent]) -> bytes:
    """POST /v1/events: {"gateway": id, "events": [...]}."""
    lit = _Literals()
    b64 = binascii.b2a_base64
    events = ",".join([EVENT_JSON % (
        lit[p.device][:-1], p.boot, p.seq, lit[p.device], p.boot, p.seq, lit[p.type], lit[p.action], p.t,
        "true" if p.clock_set else "false", p.values_json, b64(p.payload or b"", newline=False).decode())
        for p in batch])
    return ('{"gateway":%s,"events":[%s]}' % (_string(gateway_id), events)).encode()


class Lane:
    """The upload loop of one stream.

    It reads each pending row of its stream once: the rows it has read wait in
    `buffer` (at most batch_max, oldest first), and `cursor` is the last rowid it was
    handed, so the next read starts after it. Commits only tell it how many rows came
    and when (note()); it reads them when a batch is due: batch_max known, or the
    oldest batch_age old, or at once for a stream with batch_age 0 (alarms). So a
    telemetry batch costs one read, not one per commit while it fills.
    """

    def __init__(self, uplink: "Uplink", rank: int, stream: Stream) -> None:
        self.uplink = uplink
        self.rank = rank
        self.stream = stream
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()          # set while no request of this lane is on the wire
        self.idle.set()
        self.buffer: list[PendingEvent] = []
        self.cursor = 0                      # rowid of the last row read
        self.unread = 0                      # rows committed since the last read (duplicates too: an upper bound)
        self.unread_at = 0.0                 # unix time of the first of them
        self.stale = True                    # the store may hold rows past cursor we were not told of
        self._gen = 0                        # bumped by forget(): a read begun before it is discarded

    def note(self, n: int, at: float) -> None:
        """n rows of this stream were committed at unix time `at` (ingest, via Uplink.notify)."""
        if not self.unread:
            self.unread_at = at
        self.unread += n
        # wake only when it changes what the lane waits for: a first row starts the
        # batch_age clock, a full batch goes now, a stream with batch_age 0 goes at once
        if (self.unread == n or self.stream.batch_age <= 0
                or len(self.buffer) + self.unread >= self.stream.batch_max):
            self.wake.set()

    def forget(self) -> None:
        """Rows were deleted (quota, retention): what was read may be gone, and SQLite may
        hand a deleted rowid to a new row. Start again from the oldest pending row."""
        self._gen += 1
        self.buffer, self.cursor, self.stale = [], 0, True
        self.wake.set()

    async def run(self, http: HttpClient) -> None:
        up, s = self.uplink, self.stream
        loop = asyncio.get_running_loop()
        backoff = up.cfg.backoff_min
        next_at = 0.0                        # rate limit: loop time before which no batch goes
        while True:
            # cleared before deciding: a note() that lands after it wakes the wait below
            self.wake.clear()
            due = self._due_in()
            if due is None:
                await self.wake.wait()
                continue
            if due > 0:
                await _wait(self.wake, due)
                continue
            if (self.stale or self.unread) and len(self.buffer) < s.batch_max:
                await self._read()
                continue                     # decide again with what the read brought
            if not self.buffer:
                continue
            if next_at > loop.time():
                # paced: sleep, then send what is buffered by then
                await asyncio.sleep(next_at - loop.time())
                continue
            batch, self.buffer = self.buffer, []
            self.idle.clear()
            started = loop.time()
            try:
                outcome = await up.deliver(http, batch, s.name)
            finally:
                self.idle.set()
            if outcome is Outcome.RETRY:
                # read the batch again after the wait: the quota may drop rows meanwhile
                self.forget()
                # jitter: gateways that lost the platform together do not return in step
                delay = backoff * random.uniform(0.8, 1.2)
                backoff = min(backoff * 2, up.cfg.backoff_max, s.retry_max)
                if s.batch_age > 0:
                    await asyncio.sleep(delay)
                else:
                    # a stream sent at once (alarms) also tries at once when a new event
                    # comes, so the first alarm after an outage does not sit out the
                    # backoff; never sooner than backoff_min after the last attempt
                    await asyncio.sleep(min(delay, up.cfg.backoff_min))
                    self.wake.clear()
                    await _wait(self.wake, delay - up.cfg.backoff_min)
                continue
            backoff = up.cfg.backoff_min
            if s.rate:
                # from the send, not the answer: the request's own time counts against the pace
                next_at = max(next_at, started) + len(batch) / s.rate

    def _due_in(self) -> float | None:
        """Seconds until the lane should read or send; None while nothing is pending."""
        s = self.stream
        known = len(self.buffer) + self.unread
        if self.stale or known >= s.batch_max or (known and s.batch_age <= 0):
            return 0.0
        if not known:
            return None
        oldest = self.buffer[0].received_at if self.buffer else self.unread_at
        return oldest + s.batch_age - time.time()

    async def _read(self) -> None:
        """Top the buffer up with rows past the cursor."""
        up, gen = self.uplink, self._gen
        limit = self.stream.batch_max - len(self.buffer)
        # counted from here: a commit noted during the read may be in it or not (an
        # upper bound again, at worst one read that finds nothing)
        self.unread = 0
        rows = await up.db.call(up.store.next_batch, self.rank, limit, self.cursor)
        if gen != self._gen:
            return                           # forgotten meanwhile: stale, read again
        self.buffer += rows
        if rows:
            self.cursor = rows[-1].rowid
        self.stale = len(rows) == limit      # a full read: there may be more


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass   # the batch is due


class Uplink:
    def __init__(self, cfg: UplinkConfig, store: Store, db: DbThread, metrics: Metrics) -> None:
        self.cfg = cfg
        self.url = cfg.platform_url.rstrip("/") + EVENTS_PATH
        # ValueError here, at the start, for a URL that is not http[s]://host[:port][/path]
        # or plain HTTP off loopback; OSError or ssl.SSLError for a CA file that will not load
        check_transport(cfg.platform_url, cfg.insecure_plain_http)
        self.http = HttpClient(cfg.platform_url, cfg.timeout, {"User-Agent": USER_AGENT}, cfg.ca_file)
        if cfg.credentials is None:
            log.warning("no platform credentials: the platform will refuse every upload (401) until the"
                        " gateway has them (edge-gateway run --platform-credentials FILE)")
        self.store = store
        self.db = db
        self.metrics = metrics
        self.lanes = [Lane(self, rank, s) for rank, s in enumerate(cfg.streams)]
        self._failing_since: float | None = None
        self._failures = 0
        self.metrics.set_state("platform_ok", 1)

    def notify(self, result: CommitResult | None = None) -> None:
        """New events are in the store (ingest calls this after each commit); without a
        result, the lanes look in the store at once."""
        for lane in self.lanes:
            if result is None:
                lane.stale = True
                lane.wake.set()
            elif lane.rank < len(result.by_rank) and result.by_rank[lane.rank]:
                lane.note(result.by_rank[lane.rank], result.at or time.time())

    def forget(self) -> None:
        """Rows were deleted from the store: every lane reads again from the oldest pending."""
        for lane in self.lanes:
            lane.forget()

    async def run(self) -> None:
        try:
            await asyncio.gather(*(lane.run(self.http) for lane in self.lanes))
        finally:
            self.http.close()

    async def finish_request(self, timeout: float) -> None:
        """Before a stop: let requests on the wire get their answer, so what the platform
        took is marked uploaded and not sent again after the restart."""
        try:
            await asyncio.wait_for(asyncio.gather(*(lane.idle.wait() for lane in self.lanes)), timeout)
        except asyncio.TimeoutError:
            log.info("stopping during an upload; its events will be sent again after the restart")

    async def deliver(self, http: HttpClient, batch: list[PendingEvent],
                      stream: str) -> Outcome:
        """POST a batch; on a content error split it to isolate the bad events."""
        status, text = await self._post(http, batch)
        if status is not None and 200 <= status < 300:
            await self.db.call(self.store.mark_batch_uploaded, batch)
            self.metrics.inc("uplink.events", len(batch))
            self.metrics.inc("uplink.events." + stream, len(batch))
            self.metrics.inc("uplink.batches")
            self._reachable()
            return Outcome.DONE
        if status is None or status >= 500 or status in RETRY_STATUSES:
            self._unreachable(text if status is None else "HTTP %d %s" % (status, text[:200]))
            return Outcome.RETRY
        if status in CONFIG_STATUSES:
            self._unreachable("HTTP %d %s: check --platform and the platform's access for"
                              " gateway %s" % (status, text[:200], self.cfg.gateway_id))
            return Outcome.RETRY
        # Any other 4xx: something in this batch is unacceptable. A single bad event must
        # not sink the other 499, so halve until the bad ones are alone, then reject those.
        self._reachable()
        if len(batch) > 1:
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):
                if await self.deliver(http, part, stream) is Outcome.RETRY:
                    return Outcome.RETRY
            return Outcome.DONE
        reason = "HTTP %d %s" % (status, text[:300])
        await self.db.call(self.store.mark_rejected, batch[:1], reason)
        self.metrics.inc("uplink.rejected")
        log.error("platform rejected event %s: %s; kept in the store as rejected, not retried",
                  batch[0].id, reason)
        return Outcome.DONE

    async def _post(self, http: HttpClient,
                    batch: list[PendingEvent]) -> tuple[int | None, str]:
        """(HTTP status, body text), or (None, what went wrong) when there was no answer."""
        body = upload_body(self.cfg.gateway_id, batch)
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": idempotency_key(self.cfg.gateway_id, body)}
        if len(body) >= self.cfg.gzip_min:
            body = gzip.compress(body, 6)
            headers["Content-Encoding"] = "gzip"
        if self.cfg.credentials is not None:
            # signed over the bytes on the wire, with a fresh nonce for every attempt
            headers.update(sign(self.cfg.credentials, "POST", http.prefix + EVENTS_PATH, body))
        self.metrics.inc("uplink.requests")
        try:
            status, answer = await http.post(EVENTS_PATH, body, headers)
        except asyncio.TimeoutError:
            return None, "no answer within %.0f s" % self.cfg.timeout
        except (HttpError, OSError) as e:
            return None, "%s: %s" % (type(e).__name__, e)
        return status, answer.decode("utf-8", "replace")

    async def review(self) -> dict[str, Any]:
        """The platform's review of the devices, worst first, over its window: {"days",
        "devices"} (GET /v1/review, signed like an upload). Raises ReviewError saying why
        it could not be had."""
        if self.cfg.credentials is None:
            raise ReviewError("no platform credentials (edge-gateway run --platform-credentials FILE)")
        path = REVIEW_PATH
        headers = sign(self.cfg.credentials, "GET", self.http.prefix + path)
        try:
            status, answer = await self.http.get(path, headers)
        except asyncio.TimeoutError:
            raise ReviewError("no answer within %.0f s" % self.cfg.timeout) from None
        except (HttpError, OSError) as e:
            raise ReviewError("%s: %s" % (type(e).__name__, e)) from None
        if status != 200:
            raise ReviewError("HTTP %d %s" % (status, answer.decode("utf-8", "replace")[:200]))
        try:
            got = json.loads(answer)
            return {"days": int(got["days"]), "devices": list(got["devices"])}
        except (ValueError, KeyError, TypeError):
            raise ReviewError("the platform's answer is not a review") from None

    def state(self) -> dict[str, object]:
        """The platform link for the status page: its URL, whether the last attempt
        worked, and since when and how often it has failed."""
        failing = self._failing_since
        return {"platform": self.url, "ok": failing is None, "failures": self._failures,
                "failing_for_s": None if failing is None else round(time.monotonic() - failing, 1)}

    def _unreachable(self, why: str) -> None:
        self.metrics.inc("uplink.failures")
        self._failures += 1
        if self._failing_since is None:
            # one line when the state changes, not one per retry
            self._failing_since = time.monotonic()
            self.metrics.set_state("platform_ok", 0)
            log.warning("platform %s unavailable (%s); events stay in the store, retrying with"
                        " backoff up to %.0f s", self.url, why, self.cfg.backoff_max)

    def _reachable(self) -> None:
        if self._failing_since is not None:
            log.info("platform %s reachable again after %.1f s and %d failed attempts",
                     self.url, time.monotonic() - self._failing_since, self._failures)
            self._failing_since = None
            self._failures = 0
            self.metrics.set_state("platform_ok", 1)

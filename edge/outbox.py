# The outbox: every event is on flash before it counts as emitted, and stays there until
# the gateway has acknowledged committing it (edge/ack.py; the broker's PUBACK only frees
# the link), so an outage, a broker crash or a power cut loses nothing. Design and
# guarantees: docs/outbox.md.
#
# Two logs, alarms (alarms and reports) and telemetry; alarms are sent first. A log is a
# run of numbered segment files (a.17, t.4) that are only appended to, then deleted once
# acknowledged: flash is never rewritten in place. A record is
#     u8 length | payload | u32 CRC-32 (little-endian) of length and payload
# so a write torn by a power cut (short, or garbage after the last good record) fails
# its check and ends its segment: it is skipped, never sent. What was acknowledged is a
# cursor per log, "segment offset" in a small file replaced atomically every
# COMMIT_EVERY acks and whenever a segment is deleted; after a power cut at most that
# many events go out twice, and the gateway drops those by (device, boot, seq).
# Up to WINDOW events of each log are out at once, from its first segment; each stays
# until the gateway has acknowledged it, and rewind() sends them again (after a
# reconnect, or when the acknowledgement is late). A window, not one at a time: the
# gateway commits telemetry in groups (up to 250 ms apart), and one event per commit
# would cap a device's backlog drain at a few events a second.
# Bounded: when the segments would pass max_bytes, the oldest telemetry segment goes
# first, alarms only when no telemetry is left; `dropped` counts what went.
import os

from edge.mqtt import get_varint
from edge.state import FileStore, sync

try:
    from binascii import crc32
except ImportError:   # a port built without it
    def crc32(data, crc=0):
        crc ^= 0xFFFFFFFF
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
        return crc ^ 0xFFFFFFFF

COMMIT_EVERY = 16   # acks between cursor writes: flash wear against resends after a cut
WINDOW = 8          # events of a log out at once, waiting for the gateway
MAX_PAYLOAD = 255


def frame(payload):
    n = len(payload)
    if not 0 < n <= MAX_PAYLOAD:
        raise ValueError("outbox: a record holds 1..%d bytes, not %d" % (MAX_PAYLOAD, n))
    rec = bytearray((n,))
    rec.extend(payload)
    c = crc32(rec) & 0xFFFFFFFF
    rec.extend(bytes((c & 0xFF, c >> 8 & 0xFF, c >> 16 & 0xFF, c >> 24)))
    return rec


def read_record(f):
    """The next record's payload from an open segment, or None at its end or at a torn
    or corrupt record (nothing after one is trusted)."""
    head = f.read(1)
    if not head or not head[0]:
        return None
    n = head[0]
    rest = f.read(n + 4)
    if len(rest) != n + 4:
        return None
    c = rest[n] | rest[n + 1] << 8 | rest[n + 2] << 16 | rest[n + 3] << 24
    if crc32(rest[:n], crc32(head)) & 0xFFFFFFFF != c:
        return None
    return rest[:n]


class Log:
    """One append-only log. segs holds [number, valid end, unacknowledged records] per
    segment file still on flash, oldest first; off is the cursor in the first one."""

    def __init__(self, store, name, seg_bytes):
        self.store = store
        self.name = name + ".ack"
        self.path = store.root + "/" + name + "."
        self.seg_bytes = seg_bytes
        self.head = None        # the next payload to send, read once
        self.out = []           # [boot, seq, record bytes, acknowledged] of each sent, oldest first
        self.next_off = 0       # where the next record to send starts in the first segment
        self.acks = 0           # acks since the cursor was last saved
        self.lost = 0           # records found corrupt when their turn came
        cur, off = self._cursor()
        nums = []
        for f in os.listdir(store.root):
            if f.startswith(name + ".") and f[len(name) + 1:].isdigit():
                nums.append(int(f[len(name) + 1:]))
        nums.sort()
        self.new_seg = max(nums + [cur]) + 1   # the number the next segment gets
        self.segs = []
        for num in nums:
            if num < cur:
                self._remove(num)   # acknowledged; the cut came before its delete
                continue
            start = off if num == cur else 0
            end, n = self._scan(num, start)
            self.segs.append([num, end, n])
        self.off = self.next_off = off if self.segs and self.segs[0][0] == cur else 0
        # a segment torn at its tail takes no more appends: the next record goes to a new
        # one, so garbage never sits between good records
        self.open = bool(self.segs) and self.segs[-1][1] == self._size(self.segs[-1][0])
        # records from the cursor that may have reached the broker before: a window's
        # worth may have been out at the cut
        self.maybe_sent = min(self.count, WINDOW)

    @property
    def dup(self):
        """The next record to send may have reached the broker before: a resend."""
        return len(self.out) < self.maybe_sent

    def failed(self):
        """Sending the next record failed: it may have reached the broker all the same."""
        self.maybe_sent = max(self.maybe_sent, len(self.out) + 1)

    def rewind(self):
        """Send again, from the oldest, what is out."""
        self.maybe_sent = max(self.maybe_sent, len(self.out))
        self.out = []
        self.next_off = self.off
        self.head = None

    @property
    def count(self):
        # loops, not sum() of comprehensions: on a board each of those is a function in RAM
        n = 0
        for s in self.segs:
            n += s[2]
        return n

    def bytes(self):
        n = 0
        for s in self.segs:
            n += s[1]
        return n

    def _cursor(self):
        try:
            num, off = self.store.load(self.name).split()
            return int(num), int(off)
        except (AttributeError, ValueError):
            return 0, 0   # none yet, or unreadable: resend everything rather than lose it

    def save(self):
        num, off = (self.segs[0][0], self.off) if self.segs else (self.new_seg, 0)
        self.store.save(self.name, b"%d %d" % (num, off))
        self.acks = 0

    def _size(self, num):
        try:
            return os.stat(self.path + str(num))[6]
        except OSError:
            return 0

    def _remove(self, num):
        try:
            os.remove(self.path + str(num))
        except OSError:
            pass

    def _scan(self, num, off):
        """(valid end, records from off) of a segment file."""
        n = 0
        end = off
        try:
            with open(self.path + str(num), "rb") as f:
                f.seek(off)
                while True:
                    p = read_record(f)
                    if p is None:
                        break
                    n += 1
                    end += len(p) + 5
        except OSError:
            pass
        return end, n

    def append(self, payload):
        rec = frame(payload)
        if not self.open or self.segs[-1][1] + len(rec) > self.seg_bytes:
            self.segs.append([self.new_seg, 0, 0])
            self.new_seg += 1
            self.open = True
        seg = self.segs[-1]
        try:
            with open(self.path + str(seg[0]), "ab") as f:
                f.write(rec)
                sync(f)
        except OSError:
            self.open = False   # part of it may be written: the next record starts a segment
            raise
        seg[1] += len(rec)
        seg[2] += 1
        self._trim()

    def peek(self):
        """The next payload to send, or None while the window is full or nothing of the
        first segment is left to send. A record that no longer reads back (flash
        corrupted after it was written) ends its segment: counted in .lost."""
        self._trim()
        out = self.out
        if self.head is None and self.segs and self.segs[0][2] > len(out) and len(out) < WINDOW:
            seg = self.segs[0]
            try:
                with open(self.path + str(seg[0]), "rb") as f:
                    f.seek(self.next_off)
                    self.head = read_record(f)
            except OSError:
                pass        # the file is gone: as lost as a corrupt record
            if self.head is None:
                if out:
                    return None   # first the gateway acknowledges what is out before it
                self.lost += seg[2]
                seg[2] = 0
                self.maybe_sent = 0
                self.off = self.next_off = seg[1]
                self.open = self.open and len(self.segs) > 1
                return self.peek()
        return self.head

    def sent(self, payload):
        """The head (payload, from Outbox.next) has reached the broker: it waits for the
        gateway, and the next record becomes the head."""
        boot, i = get_varint(payload, 3, len(payload), 10)
        self.out.append([boot, get_varint(payload, i, len(payload), 10)[0], len(payload) + 5, False])
        self.next_off += len(payload) + 5
        self.head = None

    def acked(self, ranges):
        """Mark what these (boot, first seq, count) cover; the oldest records go once
        acknowledged. Returns how many went."""
        for o in self.out:
            for b, first, n in ranges:
                if b == o[0] and first <= o[1] < first + n:
                    o[3] = True
        moved = 0
        while self.out and self.out[0][3]:
            self.ack()
            moved += 1
        return moved

    def ack(self):
        """The oldest record is acknowledged (sent or not)."""
        if self.out:
            self.off += self.out.pop(0)[2]
        else:
            self.off += len(self.head) + 5
            self.next_off = self.off
            self.head = None
        if self.maybe_sent:
            self.maybe_sent -= 1
        self.segs[0][2] -= 1
        self.acks += 1
        if self.acks >= COMMIT_EVERY:
            self.save()
        self._trim()

    def _trim(self):
        # delete leading segments that are fully acknowledged, cursor first: a cut between
        # the two leaves a file the next boot removes, never a cursor into a lost file
        while len(self.segs) > 1 and not self.segs[0][2]:
            num = self.segs.pop(0)[0]
            self.off = self.next_off = 0
            self.head = None
            self.save()
            self._remove(num)

    def drop_oldest(self):
        """Delete the oldest segment to make room; returns the unacknowledged records
        it held."""
        num, _, lost = self.segs.pop(0)
        self.off = self.next_off = 0
        self.head = None
        self.out = []
        self.maybe_sent = 0
        if not self.segs:
            self.open = False
        self.save()
        self._remove(num)
        return lost


class Outbox:
    """The alarm log and the telemetry log under one byte budget.

    append(alarm, payload) stores one event; dropped = [telemetry, alarms] lost to make
    room (or to corruption, or to a failing filesystem) since the caller last reset it.
    next() -> (log, payload) to send next, alarms first, or None; log.sent(payload) once
    the broker has it; acked(ranges) when the gateway has committed; rewind() to send
    again what is unacknowledged. log.dup: that payload may have reached the broker
    before (a resend)."""

    def __init__(self, root, max_bytes=65536, seg_bytes=4096):
        store = FileStore(root)
        for f in os.listdir(root):
            if f.endswith(".tmp"):
                os.remove(root + "/" + f)   # a cursor write the power cut interrupted
        self.max_bytes = max_bytes
        self.alarms = Log(store, "a", seg_bytes)
        self.telemetry = Log(store, "t", seg_bytes)
        self.dropped = [0, 0]

    @property
    def count(self):
        return self.alarms.count + self.telemetry.count

    def append(self, alarm, payload):
        need = len(payload) + 5
        while self.alarms.bytes() + self.telemetry.bytes() + need > self.max_bytes:
            victim = self.telemetry if self.telemetry.segs else self.alarms
            if not victim.segs:
                break   # a budget below one record: store it anyway
            self.dropped[victim is self.alarms] += victim.drop_oldest()
        try:
            (self.alarms if alarm else self.telemetry).append(payload)
        except OSError:
            self.dropped[bool(alarm)] += 1   # the filesystem itself failed: lost, and said so

    @property
    def inflight(self):
        """How many events are out, waiting for the gateway's acknowledgement."""
        return len(self.alarms.out) + len(self.telemetry.out)

    def acked(self, ranges):
        """The gateway has committed these (boot, first seq, count): each log moves past
        its oldest records they cover. Returns how many events left the outbox."""
        return self.alarms.acked(ranges) + self.telemetry.acked(ranges)

    def rewind(self):
        """Send the events that are out again, marked as possible duplicates."""
        self.alarms.rewind()
        self.telemetry.rewind()

    def next(self):
        for log in (self.alarms, self.telemetry):
            p = log.peek()
            if log.lost:
                self.dropped[log is self.alarms] += log.lost
                log.lost = 0
            if p is not None:
                return log, p
        return None

    def commit(self):
        """Save the cursors of both logs now (a clean shutdown)."""
        for log in (self.alarms, self.telemetry):
            if log.acks:
                log.save()

"""edge.outbox: events on flash survive reboots and torn writes, acknowledged ones are not
sent again, and a full outbox drops telemetry before alarms and says so. The same
scenarios run under the MicroPython unix port at the end."""
from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from edge import outbox
from edge.outbox import COMMIT_EVERY, Outbox
from tools.common import runtime


def ev(i: int, size: int = 24) -> bytes:
    """A distinct payload standing in for a signed event."""
    return (b"%06d" % i).ljust(size, b".")


def drain(ob: Outbox, limit: int = 10_000) -> list[bytes]:
    out = []
    while len(out) < limit:
        head = ob.next()
        if head is None:
            break
        out.append(head[1])
        ob.alarms.ack() if head[0] is ob.alarms else ob.telemetry.ack()
    return out


def sent_and_committed(root, n: int, sent: int) -> Outbox:
    """An outbox holding n alarms, the first `sent` of them acknowledged and committed."""
    ob = Outbox(str(root))
    for i in range(n):
        ob.append(True, ev(i))
    drain(ob, limit=sent)
    ob.commit()
    return ob


def files(root) -> list[str]:
    return sorted(os.listdir(root))


def test_alarms_go_first_and_order_holds_within_each_log(tmp_path):
    ob = Outbox(str(tmp_path))
    for i in range(5):
        ob.append(i % 2 == 0, ev(i))
    assert ob.count == 5
    assert drain(ob) == [ev(0), ev(2), ev(4), ev(1), ev(3)]
    assert ob.count == 0 and ob.next() is None


def test_reboot_keeps_what_was_not_acknowledged(tmp_path):
    ob = Outbox(str(tmp_path))
    for i in range(40):
        ob.append(False, ev(i))
    sent = drain(ob, limit=2 * COMMIT_EVERY)
    assert sent == [ev(i) for i in range(2 * COMMIT_EVERY)]
    # power cut: nothing is closed or committed; the cursor was saved every COMMIT_EVERY acks
    again = Outbox(str(tmp_path))
    assert drain(again) == [ev(i) for i in range(2 * COMMIT_EVERY, 40)]


def test_acks_since_the_last_cursor_are_resent_at_most_commit_every(tmp_path):
    ob = Outbox(str(tmp_path))
    for i in range(30):
        ob.append(True, ev(i))
    drain(ob, limit=COMMIT_EVERY + 5)
    again = Outbox(str(tmp_path))
    first = drain(again)
    assert first == [ev(i) for i in range(COMMIT_EVERY, 30)]   # 5 resent, none lost
    assert again.alarms.dup is False


def test_commit_saves_the_cursor_on_a_clean_stop(tmp_path):
    sent_and_committed(tmp_path, 5, 3)
    assert drain(Outbox(str(tmp_path))) == [ev(3), ev(4)]


def test_the_first_record_after_a_reboot_is_marked_as_a_possible_resend(tmp_path):
    ob = Outbox(str(tmp_path))
    ob.append(True, ev(1))
    assert ob.alarms.dup is False
    again = Outbox(str(tmp_path))
    log, payload = again.next()
    assert log.dup and payload == ev(1)
    log.ack()
    assert not log.dup


def _segment(root, log="t") -> str:
    segs = sorted((f for f in os.listdir(root) if f.startswith(log + ".") and f[2:].isdigit()),
                  key=lambda f: int(f[2:]))
    return os.path.join(root, segs[-1])


def test_a_torn_last_record_is_skipped_at_every_byte_offset(tmp_path):
    root = tmp_path / "proto"
    ob = Outbox(str(root))
    for i in range(6):
        ob.append(False, ev(i, 20 + i))
    path = _segment(str(root))
    data = open(path, "rb").read()
    last = len(ev(5, 25)) + 5
    for cut in range(len(data) - last, len(data)):
        case = tmp_path / ("cut%d" % cut)
        case.mkdir()
        with open(os.path.join(case, os.path.basename(path)), "wb") as fh:
            fh.write(data[:cut])
        again = Outbox(str(case))
        assert again.count == 5, cut
        # new events after the reboot go to a fresh segment, never after the torn bytes
        again.append(False, ev(99))
        assert drain(again) == [ev(i, 20 + i) for i in range(5)] + [ev(99)], cut


@pytest.mark.parametrize("tail", [b"\xff" * 40, b"\x00" * 40, b"\x17garbage-after-a-cut", b"\x05abc"])
def test_garbage_after_the_last_good_record_is_never_sent(tmp_path, tail):
    ob = Outbox(str(tmp_path))
    for i in range(3):
        ob.append(True, ev(i))
    with open(_segment(str(tmp_path), "a"), "ab") as fh:
        fh.write(tail)
    again = Outbox(str(tmp_path))
    assert drain(again) == [ev(0), ev(1), ev(2)]


def test_a_flipped_bit_in_the_middle_ends_that_segment_and_is_counted(tmp_path):
    ob = Outbox(str(tmp_path), seg_bytes=200)
    for i in range(20):
        ob.append(False, ev(i))
    first = os.path.join(str(tmp_path), "t.1")
    data = bytearray(open(first, "rb").read())
    per = len(ev(0)) + 5
    assert len(data) // per == 6
    data[2 * per + 7] ^= 0x10
    open(first, "wb").write(bytes(data))
    again = Outbox(str(tmp_path), seg_bytes=200)
    # found at boot: the segment ends at the bad record, later segments are intact
    assert drain(again) == [ev(i) for i in range(20) if not 2 <= i < 6]


def test_acknowledged_segments_are_deleted(tmp_path):
    ob = Outbox(str(tmp_path), seg_bytes=100)
    for i in range(30):
        ob.append(False, ev(i))
    assert len([f for f in files(tmp_path) if f.startswith("t.") and f[2:].isdigit()]) == 10
    drain(ob)
    assert [f for f in files(tmp_path) if f.startswith("t.") and f[2:].isdigit()] == ["t.10"]
    # acks since the last cursor write come back after a cut (fewer than COMMIT_EVERY);
    # after a clean stop nothing does
    assert Outbox(str(tmp_path), seg_bytes=100).count < COMMIT_EVERY
    ob.commit()
    assert Outbox(str(tmp_path), seg_bytes=100).count == 0


def test_a_cut_between_cursor_and_delete_leaves_nothing_to_resend(tmp_path):
    ob = Outbox(str(tmp_path), seg_bytes=100)
    for i in range(6):
        ob.append(False, ev(i))
    kept = open(os.path.join(str(tmp_path), "t.1"), "rb").read()
    drain(ob, limit=4)   # t.1 (3 records) is acknowledged and deleted
    assert not os.path.exists(os.path.join(str(tmp_path), "t.1"))
    open(os.path.join(str(tmp_path), "t.1"), "wb").write(kept)   # as if the delete never ran
    again = Outbox(str(tmp_path), seg_bytes=100)
    assert not os.path.exists(os.path.join(str(tmp_path), "t.1"))
    assert drain(again) == [ev(3), ev(4), ev(5)]   # ev(3) was acked but not yet committed


def test_a_lost_cursor_means_resending_not_losing(tmp_path):
    sent_and_committed(tmp_path, 4, 2)
    open(os.path.join(str(tmp_path), "a.ack"), "w").write("not a cursor")
    open(os.path.join(str(tmp_path), "a.ack.tmp"), "w").write("half")
    again = Outbox(str(tmp_path))
    assert drain(again) == [ev(i) for i in range(4)]
    assert "a.ack.tmp" not in files(tmp_path)


def test_full_outbox_drops_oldest_telemetry_first_then_alarms(tmp_path):
    per = len(ev(0)) + 5
    ob = Outbox(str(tmp_path), max_bytes=10 * per, seg_bytes=2 * per)
    ob.append(True, ev(1000))
    for i in range(9):
        ob.append(False, ev(i))
    assert ob.dropped == [0, 0]
    ob.append(True, ev(1001))                  # full: the oldest telemetry segment goes
    assert ob.dropped == [2, 0]
    ob.dropped = [0, 0]
    for i in range(4):
        ob.append(True, ev(1002 + i))
    assert ob.dropped[1] == 0, "an alarm went while telemetry was left"
    assert ob.dropped[0] == 4
    ob.dropped = [0, 0]
    for i in range(6):                          # now only alarms remain: the oldest go
        ob.append(True, ev(2000 + i))
    assert ob.dropped[1] > 0 and ob.alarms.bytes() + ob.telemetry.bytes() <= 10 * per
    sent = drain(ob)
    assert ev(2005) in sent and ev(1000) not in sent
    alarms = [p for p in sent if int(p[:6]) >= 1000]
    assert alarms == sorted(alarms)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60), st.integers(0, 3)), min_size=1, max_size=60),
       st.integers(150, 600), st.integers(40, 200))
def test_nothing_is_lost_silently(tmp_path_factory, ops, budget, seg):
    """Whatever the budget: every appended event is sent once or counted as dropped,
    including across reboots in between."""
    root = str(tmp_path_factory.mktemp("ob"))
    ob = Outbox(root, max_bytes=budget, seg_bytes=seg)
    sent: list[bytes] = []
    for i, (alarm, size, sends) in enumerate(ops):
        ob.append(alarm, ev(i, size))
        sent += drain(ob, limit=sends)
        if i % 7 == 6:
            ob.commit()
            dropped = ob.dropped
            ob = Outbox(root, max_bytes=budget, seg_bytes=seg)
            ob.dropped = dropped
    sent += drain(ob)
    assert len(sent) == len(set(sent)), "an event was sent twice without a reboot in between"
    assert len(sent) + sum(ob.dropped) == len(ops)
    assert ob.alarms.bytes() + ob.telemetry.bytes() <= max(budget, 65)


def test_a_record_must_fit_its_length_byte(tmp_path):
    ob = Outbox(str(tmp_path))
    with pytest.raises(ValueError, match="1..255"):
        ob.append(True, b"x" * 256)
    with pytest.raises(ValueError):
        ob.append(True, b"")


def test_own_crc32_matches_binascii(monkeypatch):
    import binascii
    monkeypatch.setitem(sys.modules, "binascii", type(sys)("binascii"))   # no crc32 in it
    own = importlib.reload(outbox).crc32
    monkeypatch.undo()
    importlib.reload(outbox)
    for data in (b"", b"a", b"123456789", bytes(range(256))):
        assert own(data) == binascii.crc32(data)
        assert own(data[3:], own(data[:3])) == binascii.crc32(data)


MP_SCRIPT = """
import os, sys
from edge.outbox import Outbox
root = sys.argv[1]
def ev(i): return (b"%06d" % i) + b"." * 18
def drain(ob, limit=1000):
    out = []
    while len(out) < limit:
        h = ob.next()
        if h is None: break
        out.append(h[1]); h[0].ack()
    return out
step = sys.argv[2]
if step == "write":
    ob = Outbox(root, max_bytes=2000, seg_bytes=300)
    for i in range(60):
        ob.append(i % 10 == 0, ev(i))
    print(ob.dropped, drain(ob, 20))
else:
    ob = Outbox(root, max_bytes=2000, seg_bytes=300)
    print(ob.alarms.dup, ob.telemetry.dup, [int(p[:6]) for p in drain(ob)])
"""


def test_same_behaviour_under_micropython(tmp_path):
    outs = {}
    for rt in ("micropython", "cpython"):
        root = str(tmp_path / rt)
        script = tmp_path / "ob_script.py"
        script.write_text(MP_SCRIPT)
        argv = [runtime.micropython()] if rt == "micropython" else [sys.executable]
        steps = []
        for step in ("write", "reload"):
            if step == "reload":
                # a torn write at the tail of the newest telemetry segment
                seg = _segment(root)
                data = open(seg, "rb").read()
                open(seg, "wb").write(data[:-3])
            p = subprocess.run(argv + [str(script), root, step], env=runtime.micropython_env(),
                               capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
            assert p.returncode == 0, p.stderr
            steps.append(p.stdout.replace("bytearray(b", "b").strip())
        outs[rt] = steps
    assert outs["micropython"] == outs["cpython"]
    dup_a, dup_t, rest = outs["cpython"][1].split(" ", 2)
    resent = ast.literal_eval(rest)
    assert (dup_a, dup_t) == ("True", "True")
    assert 59 not in resent and 58 in resent, "the torn record came back, or one before it was lost"
    assert resent[:6] == [0, 10, 20, 30, 40, 50]   # alarms first, each log in order


class FlakyFlash:
    """open() for the outbox whose appends fail while .full is set: half the record is
    written, then ENOSPC, as a filesystem that fills up mid-write does."""

    def __init__(self) -> None:
        self.full = False

    def __call__(self, path, mode="r", *a, **kw):
        f = open(path, mode, *a, **kw)
        if self.full and "a" in mode:
            write = f.write

            def half_then_fail(data):
                write(bytes(data[: len(data) // 2]))
                raise OSError(28, "No space left on device")
            f.write = half_then_fail
        return f


def test_a_failing_filesystem_loses_the_event_says_so_and_corrupts_nothing(tmp_path, monkeypatch):
    flash = FlakyFlash()
    monkeypatch.setattr(outbox, "open", flash, raising=False)
    ob = Outbox(str(tmp_path))
    ob.append(False, ev(1))
    flash.full = True
    ob.append(False, ev(2))
    ob.append(True, ev(3))
    assert ob.dropped == [1, 1]
    flash.full = False
    ob.append(False, ev(4))
    assert drain(ob) == [ev(1), ev(4)]
    # after a reboot: the half-written record never comes back; ev(4) does, acknowledged
    # but not yet committed (ev(1)'s segment was deleted, cursor first)
    assert drain(Outbox(str(tmp_path))) == [ev(4)]


# ---- one out at a time, until the gateway acknowledges it (edge/ack.py) -----------------

def signed(seq: int, boot: int = 1) -> bytes:
    from edge import event
    return event.encode(event.Signer(b"k" * 16, "dev-1"), 0x12, 0, boot, seq, 1_780_000_000, (seq,))


def send(ob: Outbox) -> list[tuple[bool, bytes]]:
    """What the agent would publish now, (marked as a resend, payload), until next() stops."""
    out = []
    while True:
        head = ob.next()
        if head is None:
            return out
        out.append((head[0].dup, head[1]))
        head[0].sent(head[1])


def test_an_event_leaves_flash_only_when_the_gateway_acknowledges_it(tmp_path):
    ob = Outbox(str(tmp_path))
    for seq in range(1, 4):
        ob.append(False, signed(seq))
    ob.append(True, signed(4))
    # alarms first, then the telemetry; the broker's PUBACK freed nothing
    assert send(ob) == [(False, signed(4))] + [(False, signed(s)) for s in (1, 2, 3)]
    assert ob.count == 4 and ob.inflight == 4
    assert ob.acked([(2, 1, 9)]) == 0 and ob.count == 4     # another boot's
    # 2 and 3 are committed but 1 is not (yet): nothing leaves before 1
    assert ob.acked([(1, 2, 2)]) == 0 and ob.count == 4
    assert ob.acked([(1, 1, 1)]) == 3 and ob.count == 1 and ob.inflight == 1
    assert ob.acked([(1, 4, 1)]) == 1 and ob.count == 0 and ob.inflight == 0
    assert send(ob) == []


def test_at_most_a_window_of_each_log_is_out(tmp_path):
    ob = Outbox(str(tmp_path))
    for seq in range(1, 2 * outbox.WINDOW + 2):
        ob.append(False, signed(seq))
    assert send(ob) == [(False, signed(s)) for s in range(1, outbox.WINDOW + 1)]
    assert ob.acked([(1, 1, 3)]) == 3
    assert send(ob) == [(False, signed(s)) for s in range(outbox.WINDOW + 1, outbox.WINDOW + 4)]


def test_a_window_does_not_reach_past_its_segment(tmp_path):
    ob = Outbox(str(tmp_path), seg_bytes=3 * (len(signed(1)) + 5))
    for seq in range(1, 7):
        ob.append(False, signed(seq))
    assert send(ob) == [(False, signed(s)) for s in (1, 2, 3)]
    assert ob.acked([(1, 1, 3)]) == 3
    assert send(ob) == [(False, signed(s)) for s in (4, 5, 6)]


def test_rewind_sends_the_unacknowledged_again_as_a_resend(tmp_path):
    ob = Outbox(str(tmp_path))
    for seq in range(1, 4):
        ob.append(False, signed(seq))
    send(ob)
    assert ob.acked([(1, 1, 1)]) == 1
    ob.rewind()
    assert send(ob) == [(True, signed(2)), (True, signed(3))]
    ob.acked([(1, 2, 1)])
    ob.append(False, signed(4))
    assert send(ob) == [(False, signed(4))]


def test_a_power_cut_with_an_event_out_sends_it_again(tmp_path):
    ob = Outbox(str(tmp_path))
    for seq in range(1, 4):
        ob.append(True, signed(seq))
    send(ob)
    again = Outbox(str(tmp_path))
    assert again.count == 3 and send(again) == [(True, signed(s)) for s in (1, 2, 3)]


def test_dropping_the_segment_of_the_event_out_goes_on_with_the_next(tmp_path):
    ob = Outbox(str(tmp_path), max_bytes=250, seg_bytes=75)
    for seq in range(1, 4):
        ob.append(False, signed(seq))
    send(ob)
    for seq in range(4, 12):                # no room: the oldest telemetry segments go
        ob.append(False, signed(seq))
    assert ob.dropped[0] > 0 and ob.inflight == 0
    assert ob.acked([(1, 1, 3)]) == 0       # a late acknowledgement of what was dropped
    (dup, first), *_ = send(ob)
    assert not dup and first != signed(1)
